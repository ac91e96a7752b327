#!/usr/bin/env bash
# bench/tasks: durable task throughput, submit -> node receives -> completed.
#  smartd: clients submit `echo` tasks over HTTP; simulated nodes in another
#  process (bench/tasks_sim) take pushed tasks on the node WebSocket and send
#  their results on it; every step is a durable transaction (SQLite, FULL
#  sync; then PostgreSQL). Latency submit -> node receives is measured again
#  at half the throughput just measured.
#  BullMQ (npm) on Debian's redis-server with appendfsync always (each write
#  durable, as ours), the same no-op flow, same machine, same run.
# Targets (2 cores): >= 10k tasks/s, >= 3x BullMQ, p99 submit -> receive <= 10 ms.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
bench_init
SECONDS_EACH=${SECONDS_EACH:-10}
SIM=build/release/bench/tasks_sim
scripts/install-npm build/npm bullmq@5

port=$(start_smartd "$work/smartd.log" SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ENABLED=false \
  SMART_LEDGER_DEV_FAUCET=true SMART_HTTP_WORKER_THREADS=32 SMART_TASKS_MAX_PER_REQUESTER=1000000 \
  SMART_TASKS_MIN_STAKE=1 SMART_TASKS_MAX_TASKS_PER_NODE=100)
base="http://127.0.0.1:$port"
bench_funded_users client operator
client_key=$(bench_key client tasks:write)
operator_key=$(bench_key operator nodes tasks:read)

echo "bench/tasks: $(nproc) cores, $SECONDS_EACH s each, echo tasks"
printf '%-64s %12s %12s %10s %10s\n' "system" "completed/s" "submitted/s" "p50 ms" "p99 ms"
sim() { # label rate
  local out
  out=$("$SIM" --server "$base" --client-key "$client_key" --operator-key "$operator_key" \
    --submitters 16 --nodes 16 --credit 100 --seconds "$SECONDS_EACH" --rate "$2") \
    || { echo "bench/tasks: the simulator failed" >&2; exit 1; }
  read -r done_s sub_s p50 p99 <<<"$out"
  printf '%-64s %12.0f %12.0f %10s %10s\n' "$1" "$done_s" "$sub_s" "$p50" "$p99"
}
sim "smartd, SQLite (HTTP submit, WebSocket nodes), full load" 0
smart_rate=$done_s
sim "smartd, SQLite, at half that rate" "$(awk -v r="$done_s" 'BEGIN { printf "%d", r / 2 }')"

# The same on PostgreSQL (a throwaway cluster, fsync and synchronous_commit on).
PG_DURABLE=1 scripts/test-postgres start "$work/pg" >/dev/null
trap 'scripts/test-postgres stop "$work/pg"; bench_cleanup' EXIT
sqlite_base=$base sqlite_client_key=$client_key sqlite_operator_key=$operator_key
port=$(start_smartd "$work/smartd-pg.log" SMART_DATABASE_URL="$(cat "$work/pg/url")" SMART_LOG_ACCESS=false \
  SMART_RATE_LIMIT_ENABLED=false SMART_LEDGER_DEV_FAUCET=true SMART_HTTP_WORKER_THREADS=32 \
  SMART_TASKS_MAX_PER_REQUESTER=1000000 SMART_TASKS_MIN_STAKE=1 SMART_TASKS_MAX_TASKS_PER_NODE=100)
base="http://127.0.0.1:$port"
admin_env="SMART_DATABASE_URL=$(cat "$work/pg/url")" bench_data_dir="$work/smartd-pg.log.data" \
  bench_funded_users client operator
client_key=$(bench_key client tasks:write)
operator_key=$(bench_key operator nodes tasks:read)
sim "smartd, PostgreSQL, full load" 0
sim "smartd, PostgreSQL, at half that rate" "$(awk -v r="$done_s" 'BEGIN { printf "%d", r / 2 }')"
base=$sqlite_base client_key=$sqlite_client_key operator_key=$sqlite_operator_key

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
  --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
echo $! >>"$work/pids"
up=0
for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
[ "$up" = 1 ] || { echo "bench/tasks: redis-server did not start" >&2; cat "$work/redis.log" >&2; exit 1; }
cp bench/tasks/bullmq.mjs build/npm/  # ES modules resolve packages from the script's directory
b_out=$(REDIS_PORT=$rport SECONDS_EACH=$SECONDS_EACH timeout $((SECONDS_EACH + 60)) node build/npm/bullmq.mjs) \
  || { echo "bench/tasks: the BullMQ run failed" >&2; exit 1; }
read -r b_done b_sub b50 b99 <<<"$b_out"
printf '%-64s %12.0f %12.0f %10s %10s\n' "BullMQ 5 (peer), redis-server appendfsync always" "$b_done" "$b_sub" "$b50" "$b99"
b_out=$(RATE=$(awk -v r="$b_done" 'BEGIN { printf "%d", r / 2 }') REDIS_PORT=$rport SECONDS_EACH=$SECONDS_EACH \
  timeout $((SECONDS_EACH + 60)) node build/npm/bullmq.mjs) || { echo "bench/tasks: the BullMQ run failed" >&2; exit 1; }
read -r h_done h_sub h50 h99 <<<"$b_out"
printf '%-64s %12.0f %12.0f %10s %10s\n' "BullMQ 5, at half its rate" "$h_done" "$h_sub" "$h50" "$h99"
awk -v s="$smart_rate" -v b="$b_done" 'BEGIN { printf "ratio smartd / BullMQ: %.2fx (target >= 3x; >= 10000 tasks/s)\n", (b > 0 ? s / b : 0) }'
