# Smart: the two commands of the README, and a few for developers.
#   make run    install dependencies, build Release, start smartd on 127.0.0.1:8080 (SQLite under ./data)
#   make test   install dependencies, build Debug with ASan+UBSan, run every test (PostgreSQL included)
#   make bench  build Release and run the benchmarks with their peers
SHELL := /bin/bash
JOBS ?= $(shell nproc)
ARGS ?=

.PHONY: deps release debug run test bench format clean

deps:
	@scripts/install-deps

release: deps
	@cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DSMART_BUILD_TESTS=OFF -DSMART_BUILD_BENCH=ON >/dev/null
	@cmake --build build/release -j $(JOBS)

debug: deps
	@cmake -S . -B build/debug -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSMART_SANITIZE=ON -DSMART_BUILD_BENCH=OFF >/dev/null
	@cmake --build build/debug -j $(JOBS)

run: release
	build/release/apps/smartd/smartd --data-dir ./data $(ARGS)

test: debug
	cd build/debug && ctest --output-on-failure -j $(JOBS)

bench: release
	bench/run

format:
	@git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

clean:
	rm -rf build
