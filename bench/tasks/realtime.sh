#!/usr/bin/env bash
# bench/tasks, benchmarks 4 and 5 (the node and client WebSockets at scale):
#  4. NODES simulated nodes (default 10,000) on the node WebSocket, each
#     heartbeating every 5 s: smartd's CPU, in % of one core.
#  5. CLIENTS idle client WebSockets (default 50,000) subscribed to
#     network_stats (published every second): smartd's resident memory, and
#     the p50/p99 delay from an event's timestamp to its arrival at a client.
#     Where the open-file limit keeps one process below CLIENTS, also across
#     as many instances as it takes (PostgreSQL and Redis shared: 5b).
#  6. Task throughput (bench/tasks' flow, one task per request) alone, with
#     as many idle client WebSockets connected as one load process may open,
#     and with NODES idle nodes attached (credit for a type nobody submits):
#     an event or a dispatch round must not cost every connection.
# The load runs in Node.js processes (npm `ws`), each under the open-file
# limit; when the limit here is too low for the full count, the figures are
# for as many connections as it allows (said so) and memory is also given
# per connection.
# Targets (2 cores): heartbeats <= 10% of a core; 50k connections <= 4 GiB,
# fan-out p99 <= 50 ms.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
bench_init
NODES=${NODES:-10000}
PARTS=${PARTS:-4 5 6}  # which benchmarks to run
CLIENTS=${CLIENTS:-50000}
SECONDS_EACH=${SECONDS_EACH:-20}
scripts/install-npm build/npm ws@8
cp bench/tasks/heartbeats.mjs bench/tasks/fanout.mjs build/npm/

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
limit=$(ulimit -n)
per_proc=$(( limit - 500 ))  # each load process's share of sockets
server_cap=$(( limit - 1000 ))

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# wait_ready PREFIX COUNT: until COUNT load processes wrote "ready" in $work/PREFIX*.out (or fail)
wait_ready() {
  for _ in $(seq 1 1200); do
    [ "$(grep -l ready "$work"/"$1"*.out 2>/dev/null | wc -l)" = "$2" ] && return
    grep -q "^Error\|Node.js v" "$work"/"$1"*.out 2>/dev/null && break  # a load process died
    sleep 0.5
  done
  echo "bench: the load did not connect" >&2; cat "$work"/"$1"*.out >&2; exit 1
}

# retried PREFIX: the connections the fan-out load processes opened again, in all
retried() { cat "$work"/"$1"*.out | awk '$1 == "retried" { n += $2 } END { print n + 0 }'; }

# spread N over processes of at most per_proc each; prints the counts
split_counts() { local n=$1; while [ "$n" -gt 0 ]; do local c=$(( n < per_proc ? n : per_proc )); echo "$c"; n=$(( n - c )); done; }

echo "bench/tasks (real time): $(nproc) cores, open-file limit $limit"

if [[ " $PARTS " == *" 4 "* ]]; then
# --- 4. heartbeats
nodes=$NODES
[ "$nodes" -gt "$server_cap" ] && nodes=$server_cap
port=$(start_smartd "$work/smartd.log" SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ENABLED=false \
  SMART_LEDGER_DEV_FAUCET=true SMART_TASKS_MIN_STAKE=1 SMART_HTTP_MAX_CONNECTIONS=$((server_cap + 100)))
pid=$(tail -1 "$work/pids")
base="http://127.0.0.1:$port"
bench_funded_users operator
key=$(bench_key operator nodes)
i=0
for n in $(split_counts "$nodes"); do
  i=$((i + 1))
  SERVER=$base KEY=$key NODES=$n PREFIX="hb$i" SECONDS_EACH=$SECONDS_EACH LOCAL_ADDRESS=127.0.0.$((i + 1)) \
    node build/npm/heartbeats.mjs >"$work/hb$i.out" 2>&1 &
  echo $! >>"$work/pids"
  echo $! >>"$work/hb_pids"
done
wait_ready hb "$i"
sleep 6  # every node has started beating
hz=$(getconf CLK_TCK)
since_ms=$(date +%s%3N)
t0=$(cpu_ticks "$pid"); s0=$(date +%s.%N)
sleep 10
t1=$(cpu_ticks "$pid"); s1=$(date +%s.%N)
# The heartbeats are not answered: count in the database the nodes whose beat was recorded meanwhile.
recorded=$(sqlite3 -cmd ".timeout 5000" "file:$work/smartd.log.data/smart.db?mode=ro" \
  "SELECT COUNT(*) FROM nodes WHERE name LIKE 'hb%' AND last_heartbeat_ms >= $since_ms" || echo "?")
for p in $(cat "$work/hb_pids"); do wait "$p" || true; done
sent=$(cat "$work"/hb*.out | awk 'NF == 2 {s += $1; e += $2} END {print s + 0, e + 0}')
cpu=$(awk -v a="$t0" -v b="$t1" -v s0="$s0" -v s1="$s1" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz / (s1 - s0) * 100 }')
read -r per_s errors <<<"$sent"
printf '4. %d nodes heartbeating every 5 s (%s sent/s, %s errors, %s nodes recorded in 10 s): smartd CPU %s%% of one core (target <= 10%%)\n' \
  "$nodes" "$per_s" "$errors" "$recorded" "$cpu"
[ "$nodes" -lt "$NODES" ] && echo "   (the open-file limit allowed $nodes of $NODES nodes)"
kill "$pid" 2>/dev/null || true

fi

if [[ " $PARTS " == *" 5 "* ]]; then
# --- 5. idle client connections and fan-out
clients=$CLIENTS
[ "$clients" -gt "$server_cap" ] && clients=$server_cap
port=$(start_smartd "$work/smartd5.log" SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ENABLED=false \
  SMART_LEDGER_DEV_FAUCET=true SMART_EVENTS_STATS_INTERVAL_S=1 SMART_HTTP_MAX_CONNECTIONS=$((server_cap + 100)) \
  SMART_EVENTS_MAX_CONNECTIONS_PER_USER=$((server_cap + 100)))  # the load is one account
pid=$(tail -1 "$work/pids")
base="http://127.0.0.1:$port"
rss0=$(rss_mib "$pid")
bench_data_dir="$work/smartd5.log.data" bench_funded_users watcher
key=$(bench_key watcher tasks:read)
i=0
: >"$work/fo_pids"
for n in $(split_counts "$clients"); do
  i=$((i + 1))
  SERVER=$base KEY=$key CLIENTS=$n SECONDS_EACH=10 OUT="$work/fo$i.delays" LOCAL_ADDRESS=127.0.1.$((i + 1)) \
    node build/npm/fanout.mjs >"$work/fo$i.out" 2>&1 &
  echo $! >>"$work/pids"
  echo $! >>"$work/fo_pids"
done
wait_ready fo "$i"
rss=$(rss_mib "$pid")
delivery() { curl -fsS "$base/metrics" | grep '^smart_ws_event_delivery_seconds_bucket{type="network_stats"'; }
delivery >"$work/delivery0" || true
for p in $(cat "$work/fo_pids"); do wait "$p" || true; done
delivery >"$work/delivery1" || true
# The server's side: publication -> frame written to each socket, from its
# histogram over the same window (buckets: the figure is a bucket's upper bound).
read -r s_count s50 s99 < <(awk '
  { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n = $NF + 0 }
  FNR == NR { before[le] = n; next }
  { les[++k] = le; c[le] = n - before[le] }
  END {
    total = c["+Inf"]; if (total <= 0) { print 0, "-", "-"; exit }
    for (i = 1; i <= k; i++) { if (p50 == "" && c[les[i]] >= total * 0.5) p50 = les[i]; if (p99 == "" && c[les[i]] >= total * 0.99) p99 = les[i] }
    printf "%d %g %g\n", total, p50 * 1000, p99 * 1000 }' "$work/delivery0" "$work/delivery1")
read -r count p50 p99 < <(cat "$work"/fo*.delays | grep . | sort -n | awk '{v[NR] = $1} END {
  if (NR == 0) { print 0, 0, 0; exit }
  i50 = int(NR * 0.5); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
  print NR, v[i50], v[i99] }')
per_conn=$(awk -v a="$rss0" -v b="$rss" -v n="$clients" 'BEGIN { printf "%.1f", (b - a) * 1024 / n }')
at_50k=$(awk -v a="$rss0" -v b="$rss" -v n="$clients" 'BEGIN { printf "%.0f", a + (b - a) / n * 50000 }')
printf '5. %d idle client WebSockets: smartd RSS %s MiB (%s KiB per connection; %s MiB at 50,000; target <= 4096)\n' \
  "$clients" "$rss" "$per_conn" "$at_50k"
printf '   network_stats fanned out to all of them, at the clients: %s deliveries, p50 %s ms, p99 %s ms (target p99 <= 50 ms)\n' \
  "$count" "$p50" "$p99"
printf '   the same at the server (publication -> written to the socket): %s writes, p50 <= %s ms, p99 <= %s ms\n' \
  "$s_count" "$s50" "$s99"
echo "   $(retried fo) connections reopened by the load (closed unanswered: the server's header timeout ran out first)"
[ "$clients" -lt "$CLIENTS" ] && echo "   (the open-file limit allowed $clients of $CLIENTS connections)"
kill "$pid" 2>/dev/null || true

# 5b. When one process may not hold CLIENTS sockets: the scaled-out shape,
# as many instances as the limit needs, sharing PostgreSQL and Redis (events
# reach every instance through Redis), each load process on its own instance.
if [ "$clients" -lt "$CLIENTS" ]; then
  instances=$(( (CLIENTS + server_cap - 1) / server_cap ))
  scripts/test-postgres start "$work/pg5" >/dev/null
  trap 'scripts/test-postgres stop "$work/pg5"; bench_cleanup' EXIT
  start_redis redis5
  shared=(SMART_DATABASE_URL="$(cat "$work/pg5/url")" SMART_REDIS_URL="unix://$work/redis5/sock"
    SMART_AUTH_JWT_SECRET="bench-secret-bench-secret-bench-secret-42")
  ports=() ipids=() rss0s=()
  for k in $(seq 1 "$instances"); do
    ports+=("$(start_smartd "$work/smartd5-$k.log" "${shared[@]}" SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ENABLED=false \
      SMART_LEDGER_DEV_FAUCET=true SMART_EVENTS_STATS_INTERVAL_S=1 SMART_HTTP_MAX_CONNECTIONS=$((server_cap + 100)) \
      SMART_EVENTS_MAX_CONNECTIONS_PER_USER=$((CLIENTS + 100)))")
    ipids+=("$(tail -1 "$work/pids")")
    rss0s+=("$(rss_mib "${ipids[-1]}")")
  done
  base="http://127.0.0.1:${ports[0]}"
  admin_env="SMART_DATABASE_URL=$(cat "$work/pg5/url")" bench_data_dir="$work/smartd5-1.log.data" \
    bench_funded_users watcher
  key=$(bench_key watcher tasks:read)
  : >"$work/fb_pids"
  for k in $(seq 1 "$instances"); do
    n=$(( CLIENTS / instances + (k <= CLIENTS % instances ? 1 : 0) ))
    SERVER="http://127.0.0.1:${ports[k-1]}" KEY=$key CLIENTS=$n SECONDS_EACH=10 OUT="$work/fb$k.delays" \
      LOCAL_ADDRESS=127.0.3.$((k + 1)) node build/npm/fanout.mjs >"$work/fb$k.out" 2>&1 &
    echo $! >>"$work/pids"
    echo $! >>"$work/fb_pids"
  done
  wait_ready fb "$instances"
  rss_total=0 rss_base=0
  for k in $(seq 1 "$instances"); do
    rss_total=$(( rss_total + $(rss_mib "${ipids[k-1]}") )); rss_base=$(( rss_base + ${rss0s[k-1]} ))
  done
  for p in $(cat "$work/fb_pids"); do wait "$p" || true; done
  read -r count p50 p99 < <(cat "$work"/fb*.delays | grep . | sort -n | awk '{v[NR] = $1} END {
    if (NR == 0) { print 0, 0, 0; exit }
    i50 = int(NR * 0.5); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
    print NR, v[i50], v[i99] }')
  per_conn=$(awk -v a="$rss_base" -v b="$rss_total" -v n="$CLIENTS" 'BEGIN { printf "%.1f", (b - a) * 1024 / n }')
  printf '5b. %d idle client WebSockets over %d instances (PostgreSQL + Redis, all on these cores): smartd RSS %s MiB in all (%s KiB per connection; target <= 4096)\n' \
    "$CLIENTS" "$instances" "$rss_total" "$per_conn"
  printf '    network_stats (published by one instance, through Redis) at the clients: %s deliveries, p50 %s ms, p99 %s ms (target p99 <= 50 ms)\n' \
    "$count" "$p50" "$p99"
  echo "    $(retried fb) connections reopened by the load (closed unanswered: the server's header timeout ran out first)"
  for p in "${ipids[@]}"; do kill "$p" 2>/dev/null || true; done
fi
fi

if [[ " $PARTS " == *" 6 "* ]]; then
# --- 6. task throughput while others are connected and idle: an event or a
# dispatch round must cost those it concerns, not every connection
# (bench/tasks' flow, one task per request).
clients=$(( CLIENTS < per_proc ? CLIENTS : per_proc ))
[ "$clients" -gt "$server_cap" ] && clients=$server_cap
idle_nodes=$(( NODES < per_proc ? NODES : per_proc ))
run6() { # none | clients N | nodes N
  local port pid out
  port=$(start_smartd "$work/smartd6-$1.log" SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ENABLED=false \
    SMART_LEDGER_DEV_FAUCET=true SMART_TASKS_MAX_PER_REQUESTER=1000000 SMART_TASKS_MIN_STAKE=1 \
    SMART_TASKS_MAX_TASKS_PER_NODE=100 SMART_HTTP_MAX_CONNECTIONS=$((server_cap + 100)) \
    SMART_EVENTS_MAX_CONNECTIONS_PER_USER=$((server_cap + 100)))
  pid=$(tail -1 "$work/pids")
  base="http://127.0.0.1:$port"
  bench_data_dir="$work/smartd6-$1.log.data" bench_funded_users client operator idle
  case $1 in
    clients)  # another user's, subscribed to network_stats
      SERVER=$base KEY=$(bench_key idle tasks:read) CLIENTS=$2 SECONDS_EACH=$((SECONDS_EACH + 60)) OUT=/dev/null \
        LOCAL_ADDRESS=127.0.2.1 node build/npm/fanout.mjs >"$work/idle-$1.out" 2>&1 & ;;
    nodes)  # another operator's, with credit, for a type nobody submits
      SERVER=$base KEY=$(bench_key idle nodes) NODES=$2 PREFIX=idle CREDIT=1 CAPABILITIES=sha256 \
        SECONDS_EACH=$((SECONDS_EACH + 60)) LOCAL_ADDRESS=127.0.2.2 node build/npm/heartbeats.mjs >"$work/idle-$1.out" 2>&1 & ;;
  esac
  if [ "$1" != none ]; then
    echo $! >>"$work/pids"
    wait_ready "idle-$1" 1
  fi
  out=$(build/release/bench/tasks_sim --server "$base" --client-key "$(bench_key client tasks:write)" \
    --operator-key "$(bench_key operator nodes tasks:read)" --submitters 16 --nodes 16 --credit 100 \
    --seconds "$SECONDS_EACH" --rate 0 --batch 1) || { echo "bench: the simulator failed" >&2; exit 1; }
  kill "$pid" 2>/dev/null || true
  echo "$out" | awk '{printf "%.0f", $1}'
}
alone=$(run6 none)
with_clients=$(run6 clients "$clients")
with_nodes=$(run6 nodes "$idle_nodes")
printf '6. tasks completed/s, one per request: %s alone; %s with %d idle client WebSockets connected;\n' \
  "$alone" "$with_clients" "$clients"
printf '   %s with %d idle nodes attached (credit for another task type, heartbeating every 5 s)\n' \
  "$with_nodes" "$idle_nodes"
fi
exit 0
