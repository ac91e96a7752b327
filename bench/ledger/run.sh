#!/usr/bin/env bash
# bench/ledger: durable transfers per second.
#  1. Through the library (group commit): callers each submit batches of random
#     transfers between 10,000 funded accounts and wait until they are durable
#     (SQLite synchronous=FULL; PostgreSQL with fsync and synchronous_commit on).
#  2. Through HTTP: POST /api/v1/transfers with a fresh Idempotency-Key per
#     request (wrk), one user paying another, authenticated with an API key.
# Target (2 cores): >= 50,000 transfers/s through the library on SQLite.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib.sh
bench_init
BENCH=build/release/bench/ledger_bench
SECONDS_EACH=${SECONDS_EACH:-5}

echo "bench/ledger: $(nproc) cores, $SECONDS_EACH s per run, 10,000 accounts, uniform random pairs"
printf '%-58s %14s %10s %10s\n' "library (durable, group commit)" "transfers/s" "p50 ms" "p99 ms"
row() { printf '%-58s %14.0f %10s %10s\n' "$1" "$2" "$3" "$4"; }
for cfg in "64 100" "16 100" "64 1"; do
  set -- $cfg
  read -r tps p50 p99 < <("$BENCH" --threads "$1" --batch "$2" --seconds "$SECONDS_EACH" --accounts 10000 --url "sqlite:$work/l-$1-$2.db")
  row "SQLite: $1 callers x batches of $2" "$tps" "$p50" "$p99"
done

# PostgreSQL: a throwaway cluster with durable settings.
PG_DURABLE=1 scripts/test-postgres start "$work/pg" >/dev/null
trap 'scripts/test-postgres stop "$work/pg"; bench_cleanup' EXIT
pg_url=$(cat "$work/pg/url")
for cfg in "64 100" "64 1"; do
  set -- $cfg
  read -r tps p50 p99 < <("$BENCH" --threads "$1" --batch "$2" --seconds "$SECONDS_EACH" --accounts 10000 --url "$pg_url")
  row "PostgreSQL: $1 callers x batches of $2" "$tps" "$p50" "$p99"
done
echo "target: >= 50000 transfers/s through the library on SQLite"

# HTTP: enough workers that concurrent requests share commits.
port=$(start_smartd "$work/smartd.log" SMART_LOG_ACCESS=false SMART_RATE_LIMIT_ENABLED=false \
  SMART_LEDGER_DEV_FAUCET=true SMART_HTTP_WORKER_THREADS=64)
base="http://127.0.0.1:$port"
bench_funded_users payer payee
key=$(bench_key payer ledger:write)
cat >"$work/transfer.lua" <<'LUA'
local counter = 0
id = tostring(math.random(1, 1e9))
function setup(thread) thread:set("id", tostring(math.random(1, 1e9))) end
request = function()
  counter = counter + 1
  return wrk.format("POST", "/api/v1/transfers", {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = id .. "-" .. counter,
    ["X-API-Key"] = os.getenv("BENCH_KEY"),
  }, '{"to":"payee@example.com","asset":"USDC","amount":"1"}')
end
LUA
read -r rps p50 p99 < <(BENCH_KEY=$key measure "$base/api/v1/transfers" -s "$work/transfer.lua")
printf '%-58s %14.0f %10s %10s\n' "HTTP POST /api/v1/transfers (SQLite, $CONNECTIONS connections)" "$rps" "$p50" "$p99"
verify=$("$SMARTD" ledger verify --data-dir "$work/smartd.log.data" | tail -1)
echo "after the run: smartd ledger verify: $verify"
