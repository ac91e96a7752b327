# Helpers shared by the load benchmarks (sourced).
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
SMARTD=${SMARTD:-build/release/apps/smartd/smartd}

bench_init() {
  [ -x "$SMARTD" ] || { echo "bench: $SMARTD not built (run make bench)" >&2; exit 1; }
  command -v wrk >/dev/null || { echo "bench: needs wrk (scripts/install-deps)" >&2; exit 1; }
  work=$(mktemp -d /tmp/smart-bench.XXXXXX)
  chmod 755 "$work"
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( (RANDOM % 30000) + 20000 ))
    if ! ss -ltnH "sport = :$p" 2>/dev/null | grep -q .; then echo "$p"; return; fi
  done
  echo "bench: no free port" >&2; exit 1
}

# start_smartd LOG [VAR=VALUE...]: starts smartd on a free port; echoes the port.
start_smartd() {
  local log=$1; shift
  env "$@" SMART_LOG_LEVEL=info "$SMARTD" --port 0 --data-dir "$work/data" >"$log" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do
    if grep -q '"msg":"listening"' "$log" 2>/dev/null; then
      grep -o '"port":[0-9]*' "$log" | head -1 | cut -d: -f2
      return
    fi
    sleep 0.1
  done
  echo "bench: smartd did not start" >&2; cat "$log" >&2; exit 1
}

to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else print v }'
}

# measure URL [wrk args...]: prints "req_per_s p50_ms p99_ms"; fails on non-2xx answers.
measure() {
  local url=$1 out rps p50 p99; shift
  wrk -t"$THREADS" -c"$CONNECTIONS" -d1s "$@" "$url" >/dev/null 2>&1 || true   # warm-up
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
  if grep -q "Non-2xx" <<<"$out"; then echo "bench: non-2xx answers from $url" >&2; echo "$out" >&2; exit 1; fi
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
