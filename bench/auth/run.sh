#!/usr/bin/env bash
# bench/auth: the cost of authentication and rate limiting. The same route
# (GET /api/v1/version) three ways in one run: no credentials, a JWT, and an
# API key (each authenticated request is also rate limited per address, user
# and key, and counted against the daily quota), and the API key again on a
# second smartd whose limits are shared through a redis-server (redis.url:
# decided in process, exchanged every 100 ms). Then the limiter's memory for
# one million distinct keys, and the shared limiter's cost with a key per
# request (bench/limiter_shared).
# Targets (2 cores): at most 10% less throughput and at most 0.3 ms more p99;
# at most 128 MiB for 1M keys.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
bench_init

# Limits far above what wrk can send, so that every request is checked and none refused.
big=10000000
limits=(SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ADDRESS_PER_MIN=$big SMART_RATE_LIMIT_ADDRESS_BURST=$big
  SMART_RATE_LIMIT_DEFAULT_PER_MIN=$big SMART_RATE_LIMIT_DEFAULT_BURST=$big SMART_RATE_LIMIT_DEFAULT_PER_DAY=$big)
json=(-H 'Content-Type: application/json')
# credentials BASE: registers and logs in; sets jwt and key
credentials() {
  curl -sf "${json[@]}" -d '{"email":"bench@example.com","password":"bench password 1","name":"Bench"}' "$1/api/v1/auth/register" >/dev/null
  jwt=$(curl -sf "${json[@]}" -d '{"email":"bench@example.com","password":"bench password 1"}' "$1/api/v1/auth/login" \
    | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  key=$(curl -sf "${json[@]}" -H "Authorization: Bearer $jwt" -d '{"name":"bench","scopes":["tasks:read"]}' \
    "$1/api/v1/user/api-keys" | sed 's/.*"key":"\([^"]*\)".*/\1/')
  [ -n "$jwt" ] && [ -n "$key" ] || { echo "bench/auth: could not get credentials" >&2; exit 1; }
}
start_redis redis
shared_port=$(start_smartd "$work/shared.log" "${limits[@]}" SMART_REDIS_URL="unix://$work/redis/sock")
shared="http://127.0.0.1:$shared_port"
credentials "$shared"
shared_key=$key
port=$(start_smartd "$work/smartd.log" "${limits[@]}")
base="http://127.0.0.1:$port"
credentials "$base"

echo "bench/auth: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET /api/v1/version, $(nproc) cores, median of $ROUNDS interleaved rounds"
for _ in $(seq 1 "$ROUNDS"); do
  measure_round none "$base/api/v1/version"
  measure_round jwt "$base/api/v1/version" -H "Authorization: Bearer $jwt"
  measure_round key "$base/api/v1/version" -H "X-API-Key: $key"
  measure_round shared "$shared/api/v1/version" -H "X-API-Key: $shared_key"
done
read -r a_rps a_p50 a_p99 < <(median none)
read -r j_rps j_p50 j_p99 < <(median jwt)
read -r k_rps k_p50 k_p99 < <(median key)
read -r s_rps s_p50 s_p99 < <(median shared)

printf '%-36s %12s %10s %10s %12s %12s\n' "credentials" "requests/s" "p50 ms" "p99 ms" "throughput" "p99 added"
printf '%-36s %12.0f %10s %10s %12s %12s\n' "none" "$a_rps" "$a_p50" "$a_p99" "-" "-"
for row in "JWT + rate limit:$j_rps:$j_p50:$j_p99" "API key + rate limit:$k_rps:$k_p50:$k_p99" \
  "API key + limits shared (Redis):$s_rps:$s_p50:$s_p99"; do
  IFS=: read -r name rps p50 p99 <<<"$row"
  awk -v n="$name" -v r="$rps" -v p5="$p50" -v p9="$p99" -v ar="$a_rps" -v ap="$a_p99" 'BEGIN {
    printf "%-36s %12.0f %10s %10s %+11.1f%% %+10.3fms\n", n, r, p5, p9, (r / ar - 1) * 100, p9 - ap }'
done
echo "targets: throughput cost <= 10%, p99 added <= 0.3 ms"

build/release/bench/limiter_memory
# The shared limiter's worst case: every request a key of its own (a flood
# from as many addresses), 50,000 a second; and redis-server's CPU for it.
build/release/bench/limiter_shared "unix://$work/redis/sock" 50000 5 "$redis_pid"
