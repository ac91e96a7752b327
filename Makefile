# Smart: the two commands of the README, and a few for developers.
#   make run    install dependencies, build Release, start smartd in development mode on 127.0.0.1:8080
#               (SQLite under ./data; demo accounts on first run; ARGS=--with-node adds a local node)
#   make test   install dependencies, build Debug with ASan+UBSan, run every test (PostgreSQL included)
#   make bench  build Release and run the benchmarks with their peers
#   make fuzz   build the fuzz targets with clang + libFuzzer and run each for FUZZ_SECONDS
#   make tsan   the concurrent parts and the integration tests under ThreadSanitizer
SHELL := /bin/bash
JOBS ?= $(shell nproc)
ARGS ?=

.PHONY: deps release debug run test bench fuzz tsan format clean

deps:
	@scripts/install-deps

release: deps
	@cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DSMART_BUILD_TESTS=OFF -DSMART_BUILD_BENCH=ON >/dev/null
	@cmake --build build/release -j $(JOBS)

debug: deps
	@cmake -S . -B build/debug -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSMART_SANITIZE=ON -DSMART_BUILD_BENCH=OFF >/dev/null
	@cmake --build build/debug -j $(JOBS)

run: release
	build/release/apps/smartd/smartd --dev --data-dir ./data $(ARGS)

# Every test, then the README's Quickstart run verbatim (tests/e2e/quickstart: it uses `make run`).
test: debug
	cd build/debug && ctest --output-on-failure -j $(JOBS)
	tests/e2e/quickstart

bench: release
	bench/run

# libFuzzer with clang: each target runs FUZZ_SECONDS on a copy of its corpus.
FUZZ_SECONDS ?= 60
fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSMART_FUZZ=ON \
	  -DSMART_BUILD_TESTS=OFF -DSMART_BUILD_BENCH=OFF >/dev/null
	@cmake --build build/fuzz -j $(JOBS) --target jwt_fuzz text_fuzz router_fuzz config_fuzz ledger_fuzz
	@for t in jwt text router config ledger; do \
	  mkdir -p build/fuzz/corpus/$$t && cp -n fuzz/corpus/$$t/* build/fuzz/corpus/$$t/ ; \
	  build/fuzz/fuzz/$${t}_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz/corpus/$$t || exit 1; \
	done

# ThreadSanitizer over the concurrent parts and the integration tests.
tsan: deps
	@cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="-fsanitize=thread -O1" \
	  -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DSMART_BUILD_BENCH=OFF >/dev/null
	@cmake --build build/tsan -j $(JOBS)
	cd build/tsan && ctest --output-on-failure -j $(JOBS) -R 'kv_test|metrics_test|store|auth|ledger|tasks|events|http_server_test|smartd|chaos'

format:
	@git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

clean:
	rm -rf build
