#!/usr/bin/env bash
# bench/auth: the cost of authentication and rate limiting. The same route
# (GET /api/v1/version) three ways in one run: no credentials, a JWT, and an
# API key (each authenticated request is also rate limited per address, user
# and key, and counted against the daily quota). Then the limiter's memory for
# one million distinct keys.
# Targets (2 cores): at most 10% less throughput and at most 0.3 ms more p99;
# at most 128 MiB for 1M keys.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
bench_init

# Limits far above what wrk can send, so that every request is checked and none refused.
big=10000000
port=$(start_smartd "$work/smartd.log" SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ADDRESS_PER_MIN=$big \
  SMART_RATE_LIMIT_ADDRESS_BURST=$big SMART_RATE_LIMIT_DEFAULT_PER_MIN=$big SMART_RATE_LIMIT_DEFAULT_BURST=$big \
  SMART_RATE_LIMIT_DEFAULT_PER_DAY=$big)
base="http://127.0.0.1:$port"
json=(-H 'Content-Type: application/json')
curl -sf "${json[@]}" -d '{"email":"bench@example.com","password":"bench password 1","name":"Bench"}' "$base/api/v1/auth/register" >/dev/null
jwt=$(curl -sf "${json[@]}" -d '{"email":"bench@example.com","password":"bench password 1"}' "$base/api/v1/auth/login" \
  | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
key=$(curl -sf "${json[@]}" -H "Authorization: Bearer $jwt" -d '{"name":"bench","scopes":["tasks:read"]}' \
  "$base/api/v1/user/api-keys" | sed 's/.*"key":"\([^"]*\)".*/\1/')
[ -n "$jwt" ] && [ -n "$key" ] || { echo "bench/auth: could not get credentials" >&2; exit 1; }

echo "bench/auth: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET /api/v1/version, $(nproc) cores, median of $ROUNDS interleaved rounds"
for _ in $(seq 1 "$ROUNDS"); do
  measure_round none "$base/api/v1/version"
  measure_round jwt "$base/api/v1/version" -H "Authorization: Bearer $jwt"
  measure_round key "$base/api/v1/version" -H "X-API-Key: $key"
done
read -r a_rps a_p50 a_p99 < <(median none)
read -r j_rps j_p50 j_p99 < <(median jwt)
read -r k_rps k_p50 k_p99 < <(median key)

printf '%-36s %12s %10s %10s %12s %12s\n' "credentials" "requests/s" "p50 ms" "p99 ms" "throughput" "p99 added"
printf '%-36s %12.0f %10s %10s %12s %12s\n' "none" "$a_rps" "$a_p50" "$a_p99" "-" "-"
for row in "JWT + rate limit:$j_rps:$j_p50:$j_p99" "API key + rate limit:$k_rps:$k_p50:$k_p99"; do
  IFS=: read -r name rps p50 p99 <<<"$row"
  awk -v n="$name" -v r="$rps" -v p5="$p50" -v p9="$p99" -v ar="$a_rps" -v ap="$a_p99" 'BEGIN {
    printf "%-36s %12.0f %10s %10s %+11.1f%% %+10.3fms\n", n, r, p5, p9, (r / ar - 1) * 100, p9 - ap }'
done
echo "targets: throughput cost <= 10%, p99 added <= 0.3 ms"

build/release/bench/limiter_memory
