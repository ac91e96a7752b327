#!/usr/bin/env bash
# bench/tasks: durable task throughput, submit -> node receives -> completed.
#  smartd: clients submit `echo` tasks over HTTP; simulated nodes in another
#  process (bench/tasks_sim) take pushed tasks on the node WebSocket and send
#  their results on it; every step is a durable transaction (SQLite, FULL
#  sync; then PostgreSQL, also with two instances). Latency submit -> node receives is measured again
#  at half the throughput just measured (submitters paced, staggered). Each
#  SQLite run has a fresh smartd.
#  BullMQ (npm) on Debian's redis-server with appendfsync always (each write
#  durable, as ours), the same no-op flow, same machine, same run. In batches,
#  both are also run paced, stepping up to the highest rate each sustains
#  (full load grows a backlog, which costs the two very differently). What a
#  task costs smartd's CPU is measured at a paced 10,000/s, alone and with
#  client events shared through a redis-server (redis.url).
# Targets (2 cores): >= 10k tasks/s, >= 3x BullMQ, p99 submit -> receive <= 10 ms.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
bench_init
SECONDS_EACH=${SECONDS_EACH:-10}
# Clients submitting at once, for both systems: smartd's submitters, BullMQ's
# producers (each waits for its last submission's answer before the next).
CLIENTS=16
SIM=build/release/bench/tasks_sim
scripts/install-npm build/npm bullmq@5

# A fresh smartd on SQLite (the previous one stopped) for each SQLite run: a
# run after a full-load one would meet its after-effects (a grown WAL and
# database) in its first moments.
instance=0
sqlite_env=()  # more settings for the next fresh_sqlite
fresh_sqlite() {
  [ -n "${sqlite_pid:-}" ] && { kill "$sqlite_pid" 2>/dev/null || true; while kill -0 "$sqlite_pid" 2>/dev/null; do sleep 0.1; done; }
  instance=$((instance + 1))
  port=$(start_smartd "$work/smartd$instance.log" "${sqlite_env[@]}" SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ENABLED=false \
    SMART_LEDGER_DEV_FAUCET=true SMART_TASKS_MAX_PER_REQUESTER=1000000 \
    SMART_TASKS_MIN_STAKE=1 SMART_TASKS_MAX_TASKS_PER_NODE=100)
  sqlite_pid=$(tail -1 "$work/pids")
  base="http://127.0.0.1:$port"
  bench_data_dir="$work/smartd$instance.log.data" bench_funded_users client operator
  client_key=$(bench_key client tasks:write)
  operator_key=$(bench_key operator nodes tasks:read)
}

echo "bench/tasks: $(nproc) cores, $SECONDS_EACH s each, echo tasks"
printf '%-64s %12s %12s %10s %10s\n' "system" "completed/s" "submitted/s" "p50 ms" "p99 ms"
row() { printf '%-64s %12.0f %12.0f %10s %10s\n' "$@"; }
sim_run() { # rate batch: sets done_s sub_s p50 p99
  local out
  out=$("$SIM" --server "$base" --client-key "$client_key" --operator-key "$operator_key" \
    --submitters "$CLIENTS" --nodes 16 --credit 100 --seconds "$SECONDS_EACH" --rate "$1" --batch "$2") \
    || { echo "bench/tasks: the simulator failed" >&2; exit 1; }
  read -r done_s sub_s p50 p99 <<<"$out"
}
sim() { # label rate batch
  sim_run "$2" "$3"
  row "$1" "$done_s" "$sub_s" "$p50" "$p99"
}
half() { awk -v r="$1" 'BEGIN { printf "%d", r / 2 }'; }
# The highest offered rate a system keeps up with (completes >= 97% of it),
# from 90% of its full-load figure up in steps of 10% (or first down in
# steps of 20%, to a third of it, until one is kept up with), then once
# halfway between the last rate kept up with and the first not. At full load
# the submitters outrun the consumers and the backlog grows all run long,
# which costs each system differently (BullMQ's producers add ~8x what its
# worker completes, and it completes less than half its sustained rate);
# what each sustains is the comparison that does not depend on that.
sustained() { # runner full_load_rate batch: sets peak peak_sub peak_p50 peak_p99 (peak 0: none)
  local rate floor
  rate=$(awk -v r="$2" 'BEGIN { printf "%d", r * 0.9 }')
  floor=$(awk -v r="$2" 'BEGIN { printf "%d", r / 3 }')
  peak=0 peak_sub=0 peak_p50=- peak_p99=-
  local kept=0
  while :; do
    "$1" "$rate" "$3"
    if awk -v d="$done_s" -v r="$rate" 'BEGIN { exit !(d >= 0.97 * r) }'; then
      peak=$done_s peak_sub=$sub_s peak_p50=$p50 peak_p99=$p99 kept=$rate
      rate=$(awk -v r="$rate" 'BEGIN { printf "%d", r * 1.1 }')
    elif [ "$kept" -eq 0 ]; then
      rate=$(awk -v r="$rate" 'BEGIN { printf "%d", r * 0.8 }')
      [ "$rate" -ge "$floor" ] || return 0
    else
      break
    fi
  done
  rate=$(( (kept + rate) / 2 ))
  "$1" "$rate" "$3"
  if awk -v d="$done_s" -v r="$rate" -v p="$peak" 'BEGIN { exit !(d >= 0.97 * r && d > p) }'; then
    peak=$done_s peak_sub=$sub_s peak_p50=$p50 peak_p99=$p99
  fi
}
fresh_sim_run() { fresh_sqlite; sim_run "$@"; }
read -r core_done core_sub < <(build/release/bench/tasks_core --seconds "$SECONDS_EACH")
printf '%-64s %12.0f %12.0f %10s %10s\n' "the coordinator alone (bench/tasks_core: no HTTP), SQLite" "$core_done" "$core_sub" - -
fresh_sqlite
sim "smartd, SQLite: one task per request, full load" 0 1
smart_rate=$done_s
fresh_sqlite
sim "smartd, SQLite: one task per request, at half that rate" "$(half "$done_s")" 1
fresh_sqlite
sim "smartd, SQLite: batches of 100 (POST /tasks/batch), full load" 0 100
smart_batch_rate=$done_s
fresh_sqlite
sim "smartd, SQLite: batches of 100, at half that rate" "$(half "$done_s")" 100
sustained fresh_sim_run "$smart_batch_rate" 100
smart_batch_peak=$peak
row "smartd, SQLite: batches of 100, highest sustained rate" "$peak" "$peak_sub" "$peak_p50" "$peak_p99"
# What a task costs smartd, at one paced rate so that sessions compare: CPU
# per completed task of the writer thread (the sustained rate's limit) and of
# the whole process, sampled over 5 s in the middle of a run; then the same
# with client events shared through Redis (redis.url), and redis-server's.
cpu_per_task() { # label [redis-server pid]
  local writer_dir sampler w0 w1 p0 p1 r0 r1
  writer_dir=$(dirname "$(grep -lx group-commit /proc/"$sqlite_pid"/task/*/comm | head -1)")
  ticks() { if [ -n "$1" ]; then awk '{ print $14 + $15 }' "$1"; else echo 0; fi; }
  local rstat=${2:+/proc/$2/stat}
  ( sleep 3; w0=$(ticks "$writer_dir/stat"); p0=$(ticks /proc/"$sqlite_pid"/stat); r0=$(ticks "$rstat"); sleep 5
    echo "$w0 $(ticks "$writer_dir/stat") $p0 $(ticks /proc/"$sqlite_pid"/stat) $r0 $(ticks "$rstat")" >"$work/cpu" ) &
  sampler=$!
  sim_run 10000 100
  wait "$sampler"
  read -r w0 w1 p0 p1 r0 r1 <"$work/cpu"
  awk -v w=$((w1 - w0)) -v p=$((p1 - p0)) -v r=$((r1 - r0)) -v hz="$(getconf CLK_TCK)" -v n="$done_s" -v l="$1" 'BEGIN {
    printf "%-64s %12.0f   writer %.1f us, smartd %.1f us of CPU a task", l, n, w / hz / 5 / n * 1e6, p / hz / 5 / n * 1e6
    if (r > 0) printf ", redis-server %.1f us", r / hz / 5 / n * 1e6
    printf "\n" }'
}
if [ "$SECONDS_EACH" -ge 9 ]; then
  fresh_sqlite
  cpu_per_task "smartd, SQLite: batches of 100 at 10,000/s, CPU per task"
  start_redis relay
  relay_pid=$redis_pid
  sqlite_env=(SMART_REDIS_URL="unix://$work/relay/sock")
  fresh_sqlite
  cpu_per_task "smartd, SQLite, events through Redis (redis.url): the same" "$relay_pid"
  sqlite_env=()
  kill "$relay_pid" 2>/dev/null || true
fi

# The same on PostgreSQL (a throwaway cluster, fsync and synchronous_commit on).
PG_DURABLE=1 scripts/test-postgres start "$work/pg" >/dev/null
trap 'scripts/test-postgres stop "$work/pg"; bench_cleanup' EXIT
sqlite_base=$base sqlite_client_key=$client_key sqlite_operator_key=$operator_key
port=$(start_smartd "$work/smartd-pg.log" SMART_DATABASE_URL="$(cat "$work/pg/url")" SMART_LOG_ACCESS=false \
  SMART_RATE_LIMIT_ENABLED=false SMART_LEDGER_DEV_FAUCET=true \
  SMART_TASKS_MAX_PER_REQUESTER=1000000 SMART_TASKS_MIN_STAKE=1 SMART_TASKS_MAX_TASKS_PER_NODE=100)
base="http://127.0.0.1:$port"
admin_env="SMART_DATABASE_URL=$(cat "$work/pg/url")" bench_data_dir="$work/smartd-pg.log.data" \
  bench_funded_users client operator
client_key=$(bench_key client tasks:write)
operator_key=$(bench_key operator nodes tasks:read)
sim "smartd, PostgreSQL: one task per request, full load" 0 1
sim "smartd, PostgreSQL: one task per request, at half that rate" "$(half "$done_s")" 1
sim "smartd, PostgreSQL: batches of 100, full load" 0 100
# Scaled out: a second instance on the same database, each with half the
# submitters and nodes (either instance's nodes may take either's tasks);
# completions summed, latencies of the load process that ended first.
pg_base=$base
port=$(start_smartd "$work/smartd-pg2.log" SMART_DATABASE_URL="$(cat "$work/pg/url")" SMART_LOG_ACCESS=false \
  SMART_RATE_LIMIT_ENABLED=false SMART_TASKS_MAX_PER_REQUESTER=1000000 SMART_TASKS_MIN_STAKE=1 \
  SMART_TASKS_MAX_TASKS_PER_NODE=100)
sims=()
for b in "$pg_base" "http://127.0.0.1:$port"; do
  "$SIM" --server "$b" --client-key "$client_key" --operator-key "$operator_key" --submitters $((CLIENTS / 2)) --nodes 8 \
    --credit 100 --seconds "$SECONDS_EACH" --rate 0 --batch 100 >>"$work/pg2.out" &
  sims+=($!)
done
wait "${sims[@]}"
awk '{ d += $1; s += $2; if (NR == 1) { p50 = $3; p99 = $4 } } END {
  printf "%-64s %12.0f %12.0f %10s %10s\n", "smartd, PostgreSQL, two instances: batches of 100, full load", d, s, p50, p99 }' \
  "$work/pg2.out"
base=$sqlite_base client_key=$sqlite_client_key operator_key=$sqlite_operator_key

# A fresh redis-server (empty, its append-only file new) for each BullMQ run,
# as smartd gets a fresh database for each SQLite run: a run after a
# full-load one would otherwise meet its backlog (hundreds of thousands of
# jobs) and a grown append-only file being rewritten.
redis_n=0
fresh_redis() {
  if [ -n "${redis_pid:-}" ]; then  # the previous one, and its files (a full-load run's are large)
    kill "$redis_pid" 2>/dev/null || true
    while kill -0 "$redis_pid" 2>/dev/null; do sleep 0.1; done
    rm -rf "$work/redis$redis_n"
  fi
  redis_n=$((redis_n + 1))
  mkdir -p "$work/redis$redis_n"
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
    --dir "$work/redis$redis_n" --daemonize no >"$work/redis$redis_n.log" 2>&1 &
  redis_pid=$!
  echo "$redis_pid" >>"$work/pids"
  local up=0
  for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
  [ "$up" = 1 ] || { echo "bench/tasks: redis-server did not start" >&2; cat "$work/redis$redis_n.log" >&2; exit 1; }
}
cp bench/tasks/bullmq.mjs build/npm/  # ES modules resolve packages from the script's directory
bull_run() { # rate bulk: sets done_s sub_s p50 p99
  local out
  fresh_redis
  out=$(RATE=$1 BULK=$2 PRODUCERS=$CLIENTS REDIS_PORT=$rport SECONDS_EACH=$SECONDS_EACH timeout $((SECONDS_EACH + 60)) \
    node build/npm/bullmq.mjs) || { echo "bench/tasks: the BullMQ run failed" >&2; exit 1; }
  read -r done_s sub_s p50 p99 <<<"$out"
  b_done=$done_s
}
bull() { # label rate bulk
  bull_run "$2" "$3"
  row "$1" "$done_s" "$sub_s" "$p50" "$p99"
}
bull "BullMQ 5 (peer, appendfsync always): add, full load" 0 1
bull_rate=$b_done
bull "BullMQ 5: add, at half that rate" "$(half "$b_done")" 1
bull "BullMQ 5: addBulk of 100, full load" 0 100
bull_batch_rate=$b_done
bull "BullMQ 5: addBulk of 100, at half that rate" "$(half "$b_done")" 100
sustained bull_run "$bull_batch_rate" 100
bull_batch_peak=$peak
row "BullMQ 5: addBulk of 100, highest sustained rate" "$peak" "$peak_sub" "$peak_p50" "$peak_p99"
awk -v s="$smart_rate" -v b="$bull_rate" -v sb="$smart_batch_rate" -v bb="$bull_batch_rate" \
  -v sp="$smart_batch_peak" -v bp="$bull_batch_peak" 'BEGIN {
  printf "ratio smartd / BullMQ: %.2fx one per request, %.2fx in batches at full load, %.2fx in batches at the highest sustained rates (target >= 3x; >= 10000 tasks/s)\n",
    (b > 0 ? s / b : 0), (bb > 0 ? sb / bb : 0), (bp > 0 ? sp / bp : 0) }'
