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
  # Servers started inside $(...) record their pids in a file (a subshell cannot extend the array).
  [ -f "$work/pids" ] && while read -r p; do pids+=("$p"); done <"$work/pids"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Not all are children of this shell: wait for each to exit (graceful shutdown) before removing their files.
  for p in "${pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}

free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( (RANDOM % 16000) + 16000 ))  # below the ephemeral range, where clients' own ports live
    if ! ss -ltnH "sport = :$p" 2>/dev/null | grep -q .; then echo "$p"; return; fi
  done
  echo "bench: no free port" >&2; exit 1
}

# start_redis NAME: a throwaway redis-server (no persistence) on the unix
# socket $work/NAME/sock; sets redis_pid.
start_redis() {
  mkdir -p "$work/$1"
  redis-server --port 0 --unixsocket "$work/$1/sock" --save '' --appendonly no --dir "$work/$1" >"$work/$1.log" 2>&1 &
  redis_pid=$!
  echo "$redis_pid" >>"$work/pids"
  for _ in $(seq 1 50); do [ -S "$work/$1/sock" ] && return; sleep 0.1; done
  echo "bench: redis-server did not start" >&2; cat "$work/$1.log" >&2; exit 1
}

# start_smartd LOG [VAR=VALUE...]: starts smartd (its own data directory) on a free port; echoes the port.
start_smartd() {
  local log=$1; shift
  env "$@" SMART_LOG_LEVEL=info "$SMARTD" --port 0 --data-dir "$log.data" >"$log" 2>/dev/null &
  echo $! >>"$work/pids"
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

ROUNDS=${ROUNDS:-3}

# median_of "a b c": the median of whitespace-separated numbers.
median_of() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# measure_rounds NAME URL [wrk args...]: appends one measurement to the arrays
# rps_NAME, p50_NAME, p99_NAME. Call it in interleaved rounds so that a noisy
# moment of the machine hits every configuration alike, then report_median.
measure_round() {
  local name=$1 rps p50 p99; shift
  read -r rps p50 p99 < <(measure "$@")
  eval "rps_$name+=\" $rps\"; p50_$name+=\" $p50\"; p99_$name+=\" $p99\""
}

# median NAME: prints "req_per_s p50_ms p99_ms", each the median over the rounds.
median() {
  local name=$1
  eval "echo \"\$(median_of \"\$rps_$name\") \$(median_of \"\$p50_$name\") \$(median_of \"\$p99_$name\")\""
}

# The ledger and task benchmarks' accounts, against the smartd at $base whose
# data directory is $work/smartd.log.data (started by start_smartd "$work/smartd.log" ...).
bench_json=(-H 'Content-Type: application/json')
# bench_login EMAIL PASSWORD: prints an access token.
bench_login() {
  curl -sf "${bench_json[@]}" -d "{\"email\":\"$1\",\"password\":\"$2\"}" "$base/api/v1/auth/login" \
    | sed 's/.*"access_token":"\([^"]*\)".*/\1/'
}
# bench_funded_users NAME...: registers NAME@example.com (password "bench password 1") and funds each
# with 10^15 base units of USDC through the dev faucet (smartd needs SMART_LEDGER_DEV_FAUCET=true).
# The admin is created in bench_data_dir (default: the first smartd's), with
# the environment in admin_env (e.g. SMART_DATABASE_URL=...).
bench_funded_users() {
  echo 'admin password 1' | env ${admin_env:-} "$SMARTD" admin create --email root@example.com --password-stdin \
    --data-dir "${bench_data_dir:-$work/smartd.log.data}" >/dev/null
  local root who
  root=$(bench_login root@example.com 'admin password 1')
  for who in "$@"; do
    curl -sf "${bench_json[@]}" -d "{\"email\":\"$who@example.com\",\"password\":\"bench password 1\",\"name\":\"B\"}" \
      "$base/api/v1/auth/register" >/dev/null
    curl -sf "${bench_json[@]}" -H "Authorization: Bearer $root" -H "Idempotency-Key: fund-$who" \
      -d "{\"user\":\"$who@example.com\",\"asset\":\"USDC\",\"amount\":\"1000000000000000\"}" \
      "$base/api/v1/admin/mint" >/dev/null
  done
}
# bench_key NAME SCOPE: prints a new API key of NAME@example.com with that scope.
bench_key() { # user scope...
  local t scopes; t=$(bench_login "$1@example.com" 'bench password 1')
  scopes=$(printf '"%s",' "${@:2}")
  curl -sf "${bench_json[@]}" -H "Authorization: Bearer $t" -d "{\"name\":\"bench\",\"scopes\":[${scopes%,}]}" \
    "$base/api/v1/user/api-keys" | sed 's/.*"key":"\([^"]*\)".*/\1/'
}
