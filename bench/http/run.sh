#!/usr/bin/env bash
# bench/http: wrk against smartd's small JSON route (GET /health) and, in the
# same run on the same machine, against nginx serving the same JSON as a static
# file. Prints requests/s, p50 and p99 of both and the ratio.
# Target (2 cores): smartd >= 50k req/s and >= 0.8x nginx.
# Env: DURATION (default 10s), CONNECTIONS (64), THREADS (2), SMARTD (binary path); see bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
command -v nginx >/dev/null || { echo "bench/http: needs nginx (scripts/install-deps)" >&2; exit 1; }
bench_init

# nginx with the same body and content type, access log off, one worker per core.
nginx_port=$(free_port)
mkdir -p "$work/nginx/html" "$work/nginx/logs"
printf '{"status":"ok"}' >"$work/nginx/html/health.json"
chmod -R a+rX "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port;
    location = /health { default_type application/json; alias $work/nginx/html/health.json; }
  }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
sleep 0.5

echo "bench/http: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET /health, $(nproc) cores, median of $ROUNDS interleaved rounds"
quiet=$(start_smartd "$work/smartd-quiet.log" SMART_LOG_ACCESS=false)
logged=$(start_smartd "$work/smartd-logged.log" SMART_LOG_ACCESS=true)
for _ in $(seq 1 "$ROUNDS"); do
  measure_round nginx "http://127.0.0.1:$nginx_port/health"
  measure_round quiet "http://127.0.0.1:$quiet/health"
  measure_round logged "http://127.0.0.1:$logged/health"
done
read -r n_rps n_p50 n_p99 < <(median nginx)
read -r s_rps s_p50 s_p99 < <(median quiet)
read -r l_rps l_p50 l_p99 < <(median logged)

printf '%-34s %12s %10s %10s\n' "server" "requests/s" "p50 ms" "p99 ms"
printf '%-34s %12.0f %10s %10s\n' "nginx static file (peer)" "$n_rps" "$n_p50" "$n_p99"
printf '%-34s %12.0f %10s %10s\n' "smartd GET /health" "$s_rps" "$s_p50" "$s_p99"
printf '%-34s %12.0f %10s %10s\n' "smartd GET /health + access log" "$l_rps" "$l_p50" "$l_p99"
awk -v s="$s_rps" -v n="$n_rps" -v l="$l_rps" 'BEGIN {
  printf "ratio smartd/nginx: %.2f (target >= 0.80); with access log: %.2f\n", s / n, l / n
  printf "target >= 50000 req/s: %s\n", (s >= 50000 ? "met" : "NOT met") }'
