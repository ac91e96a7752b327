// The ledger's tables. Amounts are decimal text: both backends store and
// compare them exactly, and arithmetic happens in C++ on 128-bit integers.
#include "internal.hpp"

namespace smart::ledger {
namespace {

constexpr std::string_view kAccounts = R"sql(
CREATE TABLE ledger_accounts (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  kind TEXT NOT NULL,
  asset TEXT NOT NULL,
  debits_posted TEXT NOT NULL,
  credits_posted TEXT NOT NULL,
  debits_pending TEXT NOT NULL,
  credits_pending TEXT NOT NULL,
  created_ms BIGINT NOT NULL,
  last_seq BIGINT NOT NULL,
  UNIQUE (owner, kind, asset)
);
)sql";

// seq is the chain position; on SQLite an INTEGER PRIMARY KEY is the rowid.
// An account's history is a list linked through debit_prev/credit_prev (the
// previous transfer of the same account) from the account's last_seq, so the
// table needs no per-account index: a commit then writes the pages it appends
// to, not a random index page per account touched, which on SQLite is what
// limits durable throughput. No foreign keys either: two probes per transfer
// on the hot path, and Verify() checks every reference.
constexpr std::string_view kTransfers = R"sql(
CREATE TABLE ledger_transfers (
  seq @SEQ@ PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  idem_key TEXT NOT NULL UNIQUE,
  fingerprint TEXT NOT NULL,
  type TEXT NOT NULL,
  debit_id TEXT NOT NULL,
  credit_id TEXT NOT NULL,
  asset TEXT NOT NULL,
  amount TEXT NOT NULL,
  pending_id TEXT,
  expires_ms BIGINT NOT NULL,
  state TEXT NOT NULL,
  code TEXT NOT NULL,
  metadata TEXT NOT NULL,
  ts_ms BIGINT NOT NULL,
  debit_prev BIGINT NOT NULL,
  credit_prev BIGINT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX ledger_transfers_expiring ON ledger_transfers (expires_ms) WHERE state = 'pending' AND expires_ms > 0;
CREATE TABLE ledger_head (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq BIGINT NOT NULL,
  ts_ms BIGINT NOT NULL,
  hash TEXT NOT NULL
);
INSERT INTO ledger_head (id, seq, ts_ms, hash) VALUES (1, 0, 0, '0000000000000000000000000000000000000000000000000000000000000000');
)sql";

std::string Script(std::string_view seq_type) {
  std::string s(kAccounts);
  std::string t(kTransfers);
  t.replace(t.find("@SEQ@"), 5, seq_type);
  return s + t;
}

}  // namespace

std::vector<store::Migration> Ledger::Migrations() { return {{200, "ledger", Script("INTEGER"), Script("BIGINT")}}; }

}  // namespace smart::ledger
