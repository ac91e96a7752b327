#include "apply.hpp"

#include <algorithm>
#include <bit>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>

#include "smart/core/crypto.hpp"
#include "smart/core/ids.hpp"
#include "smart/core/json_text.hpp"

namespace smart::ledger {
namespace {

using store::Value;

constexpr size_t kMaxKey = 256;
constexpr size_t kMaxMetadata = 4096;
constexpr int64_t kMaxTimeoutS = 10LL * 365 * 86400;
constexpr size_t kInsertChunk = 32;
constexpr size_t kAccountChunk = 64;

void AppendField(std::string& out, std::string_view field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
  out += ';';
}

// Identifies what a request asks for, so that a replayed key can be told
// apart from a reused one.
std::string Fingerprint(const TransferRequest& r) {
  std::string s;
  AppendField(s, ToString(r.type));
  for (const auto* ref : {&r.debit, &r.credit}) {
    AppendField(s, ref->owner);
    AppendField(s, ref->kind);
    AppendField(s, ref->asset);
  }
  AppendField(s, FormatAmount(r.amount));
  AppendField(s, r.pending_id);
  AppendField(s, std::to_string(r.timeout_s));
  AppendField(s, r.code);
  AppendField(s, r.metadata);
  return crypto::Sha256Hex(s);
}

bool ValidOwner(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

bool ValidCode(std::string_view s) {
  if (s.empty() || s.size() > 32) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

bool ValidKey(std::string_view s) {
  if (s.empty() || s.size() > kMaxKey || !IsValidUtf8(s)) return false;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

Result<void> CheckMetadata(std::string_view m) {
  if (m.size() > kMaxMetadata) return Error::Invalid("invalid_metadata", "metadata: at most 4096 bytes");
  if (m == "{}") return Ok();
  // Parsed into a stack buffer: a check per transfer should not allocate.
  unsigned char buffer[2048];
  boost::json::monotonic_resource memory(buffer, sizeof buffer);
  boost::system::error_code ec;
  auto v = boost::json::parse(m, ec, &memory);
  if (ec || !v.is_object()) return Error::Invalid("invalid_metadata", "metadata: must be a JSON object");
  return Ok();
}

Result<void> CheckRef(const LedgerConfig& config, const AccountRef& r, std::string_view side) {
  std::string f(side);
  if (!ValidOwner(r.owner)) {
    return Error::Invalid("invalid_account", f + ".owner: 1 to 64 of [A-Za-z0-9_-]");
  }
  if (!IsKind(r.kind)) return Error::Invalid("invalid_account", f + ".kind: not an account kind");
  bool known = false;
  for (const auto& a : config.assets) known = known || a.code == r.asset;
  if (!known) return Error::Invalid("unknown_asset", f + ".asset: '" + r.asset + "' is not a configured asset");
  return Ok();
}

std::string ValuesList(size_t rows, size_t columns) {
  std::string row = "(";
  for (size_t c = 1; c <= columns; ++c) row += (c == 1 ? "?" : ", ?") + std::to_string(c);
  return store::ValuesRows(rows, columns, 1, row + ")");
}

std::string UpdateAccounts(size_t rows) {
  return "UPDATE ledger_accounts SET debits_posted = v.column2, credits_posted = v.column3, debits_pending = "
         "v.column4, credits_pending = v.column5, last_seq = CAST(v.column6 AS BIGINT) FROM (VALUES " +
         ValuesList(rows, 6) + ") AS v WHERE ledger_accounts.id = v.column1";
}

std::string UpdateStates(size_t rows) {
  return "UPDATE ledger_transfers SET state = v.column2 FROM (VALUES " + ValuesList(rows, 2) +
         ") AS v WHERE ledger_transfers.seq = CAST(v.column1 AS BIGINT)";
}

std::string InsertAccounts(size_t rows) {
  return "INSERT INTO ledger_accounts (id, owner, kind, asset, debits_posted, credits_posted, debits_pending, "
         "credits_pending, created_ms, last_seq) VALUES " +
         ValuesList(rows, 10);
}

std::string InsertTransfers(size_t rows) {
  return "INSERT INTO ledger_transfers (seq, id, idem_key, fingerprint, type, debit_id, credit_id, asset, amount, "
         "pending_id, expires_ms, state, code, metadata, ts_ms, debit_prev, credit_prev, hash) VALUES " +
         ValuesList(rows, 18);
}

// The columns a post or void reads of its pending transfer, without joining
// the accounts: their names come from the accounts the transaction holds
// already, mostly.
constexpr std::string_view kPendingColumns = "id, seq, type, debit_id, credit_id, asset, amount, expires_ms, state";

// `head` + "$1, $2, ... $n)" for n = 1, 2, 4 ... 256, by log2 of n (the
// caller pads its list by repeating an element).
std::vector<std::string> InLists(std::string_view head) {
  return store::PowersOfTwo(256, [head](size_t n) {
    std::string s(head);
    for (size_t i = 1; i <= n; ++i) s += (i == 1 ? "$" : ", $") + std::to_string(i);
    return s + ")";
  });
}

// Runs one of `texts` (InLists) over `values`, 256 at a time, each list
// padded to a power of two by repeating its last value (harmless in an IN
// list); `each` gets every row read.
Result<void> SelectIn(store::Tx& tx, const std::vector<std::string>& texts, const std::vector<std::string>& values,
                      const std::function<Result<void>(const store::Row&)>& each) {
  constexpr size_t kChunk = 256;
  std::vector<Value> params;
  for (size_t i = 0; i < values.size(); i += kChunk) {
    const size_t n = std::min(kChunk, values.size() - i);
    params.assign(values.begin() + static_cast<std::ptrdiff_t>(i), values.begin() + static_cast<std::ptrdiff_t>(i + n));
    while (!std::has_single_bit(params.size())) params.push_back(params.back());
    auto rows = tx.Query(texts.at(static_cast<size_t>(std::bit_width(params.size() - 1))), params);
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) SMART_TRY(each(r));
  }
  return Ok();
}

// Writes rows [0, count) with ExecLater, sql[k] (store::PowersOfTwo) writing 2^k
// rows: the largest that fits what is left a statement (45 rows: 32, 8, 4
// and 1). `add(params, r)` appends row r's parameters.
template <class Add>
Result<void> WriteRows(store::Tx& tx, size_t count, const std::vector<std::string>& sql, Add add) {
  const size_t chunk = size_t{1} << (sql.size() - 1);
  std::vector<Value> params;
  for (size_t i = 0; i < count;) {
    const size_t n = std::bit_floor(std::min(count - i, chunk));
    params.clear();
    for (size_t r = i; r < i + n; ++r) add(params, r);
    SMART_TRY(tx.ExecLater(sql[static_cast<size_t>(std::countr_zero(n))], params));
    i += n;
  }
  return Ok();
}

Error Overflow() {
  return Error::Conflict("amount_overflow", "amount: an account's total would exceed 2^128 - 1 base units");
}

}  // namespace

Result<void> Applier::Begin() {
  // Taking the head row first serializes ledger writers (a row lock on
  // PostgreSQL; SQLite has one writer anyway), which keeps the chain linear.
  auto row = tx_.QueryOne("UPDATE ledger_head SET seq = seq WHERE id = 1 RETURNING seq, hash, ts_ms");
  if (!row) return row.take_error();
  if (!*row) return Error::Internal("ledger_head_missing", "the ledger head row is missing");
  seq_ = (*row)->Int(0);
  hash_ = (*row)->Text(1);
  ts_ = (*row)->Int(2);
  began_ = true;
  return Ok();
}

Result<void> Applier::Prefetch(const std::vector<const TransferRequest*>& requests) {
  static const auto kKeys = InLists("SELECT idem_key, fingerprint, id FROM ledger_transfers WHERE idem_key IN (");
  static const auto kOwners =
      InLists("SELECT " + std::string(kAccountColumns) + " FROM ledger_accounts WHERE owner IN (");
  static const auto kPendings =
      InLists("SELECT " + std::string(kPendingColumns) + " FROM ledger_transfers WHERE id IN (");
  std::vector<std::string> keys, owners, pendings;
  std::unordered_set<std::string> seen_owners, seen_pendings;
  for (const TransferRequest* req : requests) {
    const TransferRequest& r = *req;
    if (!r.new_key && ValidKey(r.key) && !keys_.count(r.key) && !stored_keys_.count(r.key) && !new_keys_.count(r.key)) {
      keys.push_back(r.key);
    }
    if (!r.pending_id.empty() && !pendings_.count(r.pending_id) && seen_pendings.insert(r.pending_id).second) {
      pendings.push_back(r.pending_id);
    }
    for (const auto* o : {&r.debit.owner, &r.credit.owner}) {
      if (ValidOwner(*o) && !loaded_owners_.count(*o) && seen_owners.insert(*o).second) owners.push_back(*o);
    }
  }
  SMART_TRY(SelectIn(tx_, kKeys, keys, [&](const store::Row& r) -> Result<void> {
    stored_keys_[r.Text(0)] = {r.Text(1), r.Text(2)};
    return Ok();
  }));
  for (const std::string& k : keys) {
    if (!stored_keys_.count(k)) new_keys_.insert(k);
  }
  SMART_TRY(SelectIn(tx_, kOwners, owners, [&](const store::Row& r) -> Result<void> {
    auto a = AccountFromRow(r);
    if (!a) return a.take_error();
    if (!accounts_.count(a->ref)) Remember(AccountState{.account = std::move(a).value(), .persisted = true});
    return Ok();
  }));
  loaded_owners_.insert(owners.begin(), owners.end());
  // The pending transfers to post or void (a missing one, or one that is not
  // pending, is left to LoadPending, which says so).
  SMART_TRY(SelectIn(tx_, kPendings, pendings, [&](const store::Row& r) -> Result<void> {
    if (pendings_.count(r.Text(0)) || ParseTransferType(r.Text(2)) != TransferType::kPending) return Ok();
    auto p = RememberPending(r);
    if (!p) return p.take_error();
    return Ok();
  }));
  return Ok();
}

Result<std::vector<Transfer>> Applier::ApplyBatch(std::span<const TransferRequest> batch, bool internal, bool full) {
  if (!began_) SMART_TRY(Begin());
  const Position before = Here();
  std::vector<Transfer> out;
  out.reserve(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    auto t = ApplyOne(batch[i], internal, full);
    if (!t) {
      UndoTo(before);
      Error e = t.take_error();
      if (batch.size() > 1) e.message = "transfers[" + std::to_string(i) + "]." + e.message;
      return e;
    }
    out.push_back(std::move(t).value());
  }
  return out;
}

void Applier::Mark() {
  account_undo_.clear();
  pending_undo_.clear();
  mark_ = Here();
}

void Applier::RollbackToMark() { UndoTo(mark_); }

Applier::Position Applier::Here() {
  ++epoch_;
  return Position{account_undo_.size(), pending_undo_.size(), rows_.size(), seq_, ts_, hash_};
}

void Applier::UndoTo(const Position& p) {
  while (account_undo_.size() > p.account_undo) {
    auto& [state, before] = account_undo_.back();
    *state = std::move(before);
    account_undo_.pop_back();
  }
  while (pending_undo_.size() > p.pending_undo) {
    auto& [id, before] = pending_undo_.back();
    if (before) {
      pendings_[id] = std::move(*before);
    } else {
      pendings_.erase(id);
    }
    pending_undo_.pop_back();
  }
  for (size_t i = p.rows; i < rows_.size(); ++i) keys_.erase(rows_[i].transfer.key);
  rows_.resize(p.rows);
  seq_ = p.seq;
  hash_ = p.hash;
  ts_ = p.ts;
  ++epoch_;  // the entries popped no longer cover the states they held
}

void Applier::Touch(AccountState* a) {
  if (a->saved_in != epoch_) {
    a->saved_in = epoch_;
    account_undo_.emplace_back(a, *a);
  }
  a->dirty = true;
}

void Applier::TouchPending(const std::string& id, PendingState* p) {
  if (p == nullptr) {
    pending_undo_.emplace_back(id, std::nullopt);  // created in this epoch
    return;
  }
  if (p->saved_in != epoch_) {
    p->saved_in = epoch_;
    pending_undo_.emplace_back(id, *p);
  }
  p->dirty = true;
}

Result<Applier::AccountState*> Applier::LoadAccount(const AccountRef& ref) {
  if (auto it = accounts_.find(ref); it != accounts_.end()) return &it->second;
  AccountState s;
  if (!loaded_owners_.count(ref.owner)) {  // a prefetched owner's missing account does not exist yet
    auto row = tx_.QueryOne("SELECT " + std::string(kAccountColumns) +
                                " FROM ledger_accounts WHERE owner = $1 AND kind = $2 AND asset = $3",
                            {Value{ref.owner}, Value{ref.kind}, Value{ref.asset}});
    if (!row) return row.take_error();
    if (*row) {
      auto a = AccountFromRow(**row);
      if (!a) return a.take_error();
      s.account = std::move(a).value();
      s.persisted = true;
    }
  }
  if (!s.persisted) {
    s.account.ref = ref;
    s.account.id = MakeId("acc");
    s.account.created_ms = clock_.NowMs();
  }
  return Remember(std::move(s));
}

Applier::AccountState* Applier::Remember(AccountState s) {
  AccountRef ref = s.account.ref;
  AccountState* kept = &accounts_.emplace(std::move(ref), std::move(s)).first->second;
  by_id_.emplace(kept->account.id, kept);
  return kept;
}

Result<Applier::AccountState*> Applier::AccountById(const std::string& id) {
  if (auto it = by_id_.find(id); it != by_id_.end()) return it->second;
  auto row =
      tx_.QueryOne("SELECT " + std::string(kAccountColumns) + " FROM ledger_accounts WHERE id = $1", {Value{id}});
  if (!row) return row.take_error();
  if (!*row) return Error::Internal("ledger_inconsistent", "a pending transfer names account " + id + ", not found");
  auto a = AccountFromRow(**row);
  if (!a) return a.take_error();
  if (auto it = accounts_.find(a->ref); it != accounts_.end()) return &it->second;  // read by its name already
  return Remember(AccountState{.account = std::move(a).value(), .persisted = true});
}

Result<Applier::PendingState*> Applier::LoadPending(const std::string& id) {
  if (auto it = pendings_.find(id); it != pendings_.end()) return &it->second;
  static const std::string kSql = "SELECT " + std::string(kPendingColumns) + " FROM ledger_transfers WHERE id = $1";
  auto row = tx_.QueryOne(kSql, {Value{id}});
  if (!row) return row.take_error();
  if (!*row) return Error::NotFound("pending_not_found", "pending_id: no transfer " + id);
  return RememberPending(**row);
}

Result<Applier::PendingState*> Applier::RememberPending(const store::Row& r) {
  const std::string& id = r.Text(0);
  if (ParseTransferType(r.Text(2)) != TransferType::kPending) {
    return Error::NotFound("pending_not_found", "pending_id: " + id + " is not a pending transfer");
  }
  auto amount = AmountColumn(r, 6);
  if (!amount) return amount.take_error();
  auto debit = AccountById(r.Text(3));
  if (!debit) return debit.take_error();
  auto credit = AccountById(r.Text(4));
  if (!credit) return credit.take_error();
  PendingState s;
  Transfer& t = s.transfer;
  t.seq = r.Int(1);
  t.id = id;
  t.type = TransferType::kPending;
  t.debit = (*debit)->account.ref;
  t.credit = (*credit)->account.ref;
  t.debit_id = r.Text(3);
  t.credit_id = r.Text(4);
  t.asset = r.Text(5);
  t.amount = *amount;
  t.expires_ms = r.Int(7);
  t.state = r.Text(8);
  s.persisted = true;
  return &pendings_.emplace(id, std::move(s)).first->second;
}

Result<std::optional<Transfer>> Applier::FindByKey(const std::string& key, bool new_key, std::string* fingerprint) {
  if (auto it = keys_.find(key); it != keys_.end()) {
    *fingerprint = rows_[it->second].fingerprint;
    Transfer t = rows_[it->second].transfer;
    if (t.type == TransferType::kPending) t.state = pendings_[t.id].transfer.state;
    return std::optional<Transfer>(std::move(t));
  }
  if (new_key || new_keys_.count(key)) return std::optional<Transfer>();
  std::string id;
  if (auto it = stored_keys_.find(key); it != stored_keys_.end()) {
    *fingerprint = it->second.first;
    id = it->second.second;
  } else {
    // Not prefetched: probe the key index alone, join only on a hit.
    auto hit = tx_.QueryOne("SELECT fingerprint, id FROM ledger_transfers WHERE idem_key = $1", {Value{key}});
    if (!hit) return hit.take_error();
    if (!*hit) return std::optional<Transfer>();
    *fingerprint = (*hit)->Text(0);
    id = (*hit)->Text(1);
  }
  auto t = LoadTransfer(tx_, id);
  if (!t) return t.take_error();
  if (!*t) return Error::Internal("ledger_inconsistent", "transfer " + id + " lost its accounts");
  if (auto it = pendings_.find((*t)->id); it != pendings_.end()) (*t)->state = it->second.transfer.state;
  return t;
}

Result<Transfer> Applier::ApplyOne(const TransferRequest& req, bool internal, bool full) {
  if (!ValidKey(req.key)) {
    return Error::Invalid("invalid_key", "key: 1 to 256 bytes of UTF-8 without control characters");
  }
  if (!ValidCode(req.code)) return Error::Invalid("invalid_code", "code: 1 to 32 of [a-z0-9_]");
  SMART_TRY(CheckMetadata(req.metadata));
  if (req.type == TransferType::kExpire && !internal) {
    return Error::Invalid("invalid_type", "type: expiry is written by the ledger only");
  }

  std::string fingerprint = Fingerprint(req);
  std::string existing_fp;
  auto existing = FindByKey(req.key, req.new_key, &existing_fp);
  if (!existing) return existing.take_error();
  if (*existing) {
    if (existing_fp != fingerprint) {
      return Error::Conflict("idempotency_key_reused",
                             "key: already used by transfer " + (*existing)->id + " for a different request");
    }
    Transfer t = std::move(**existing);
    t.replayed = true;
    return t;
  }

  Transfer t;
  t.key = req.key;
  t.type = req.type;
  t.code = req.code;
  t.metadata = req.metadata;
  t.ts_ms = std::max(clock_.NowMs(), ts_);  // time follows the chain even if the clock steps back
  t.id = MakeId("tr");
  AccountState* debit_state = nullptr;
  AccountState* credit_state = nullptr;

  if (req.type == TransferType::kSingle || req.type == TransferType::kPending) {
    SMART_TRY(CheckRef(config_, req.debit, "debit"));
    SMART_TRY(CheckRef(config_, req.credit, "credit"));
    if (req.debit.asset != req.credit.asset) {
      return Error::Invalid("asset_mismatch", "credit.asset: both accounts must hold the same asset");
    }
    if (req.debit == req.credit) return Error::Invalid("same_account", "credit: cannot be the debit account");
    if (req.amount == 0) return Error::Invalid("invalid_amount", "amount: must be greater than zero");
    if (!req.pending_id.empty()) return Error::Invalid("invalid_pending_id", "pending_id: only for post and void");
    if (req.type == TransferType::kSingle && req.timeout_s != 0) {
      return Error::Invalid("invalid_timeout", "timeout_s: only for pending transfers");
    }
    if (req.timeout_s < 0 || req.timeout_s > kMaxTimeoutS) {
      return Error::Invalid("invalid_timeout", "timeout_s: 0 (never) to 315360000");
    }
    auto debit = LoadAccount(req.debit);
    if (!debit) return debit.take_error();
    auto credit = LoadAccount(req.credit);
    if (!credit) return credit.take_error();
    Account& d = (*debit)->account;
    Account& c = (*credit)->account;
    if (!KindMayGoNegative(d.ref.kind) && d.Spendable() < req.amount) {
      return Error::Conflict("insufficient_funds", "amount: the debit account can spend " +
                                                       FormatAmount(d.Spendable()) + " " + d.ref.asset + ", not " +
                                                       FormatAmount(req.amount));
    }
    bool pending = req.type == TransferType::kPending;
    auto nd = CheckedAdd(pending ? d.debits_pending : d.debits_posted, req.amount);
    auto nc = CheckedAdd(pending ? c.credits_pending : c.credits_posted, req.amount);
    // The balance itself must stay representable too.
    if (!nd || !nc || !CheckedAdd(d.debits_posted, d.debits_pending + req.amount) ||
        !CheckedAdd(c.credits_posted, c.credits_pending + req.amount)) {
      return Overflow();
    }
    debit_state = *debit;
    credit_state = *credit;
    Touch(debit_state);
    Touch(credit_state);
    (pending ? d.debits_pending : d.debits_posted) = *nd;
    (pending ? c.credits_pending : c.credits_posted) = *nc;
    t.debit = d.ref;
    t.credit = c.ref;
    t.debit_id = d.id;
    t.credit_id = c.id;
    t.asset = d.ref.asset;
    t.amount = req.amount;
    t.state = pending ? "pending" : "posted";
    if (pending && req.timeout_s > 0) t.expires_ms = t.ts_ms + req.timeout_s * 1000;
    if (pending) {
      TouchPending(t.id, nullptr);
      PendingState ps;
      ps.transfer = t;
      ps.saved_in = epoch_;
      pendings_.emplace(t.id, std::move(ps));
    }
  } else {
    if (req.pending_id.empty()) return Error::Invalid("invalid_pending_id", "pending_id: required to post or void");
    if (!req.debit.owner.empty() || !req.credit.owner.empty()) {
      return Error::Invalid("invalid_account", "debit: post and void use the pending transfer's accounts");
    }
    if (req.timeout_s != 0) return Error::Invalid("invalid_timeout", "timeout_s: only for pending transfers");
    if (req.type != TransferType::kPost && req.amount != 0) {
      return Error::Invalid("invalid_amount", "amount: only a post takes an amount");
    }
    auto p = LoadPending(req.pending_id);
    if (!p) return p.take_error();
    Transfer& pt = (*p)->transfer;
    if (pt.state != "pending") {
      return Error::Conflict("pending_already_resolved", "pending_id: " + pt.id + " is already " + pt.state);
    }
    bool expired = pt.expires_ms > 0 && t.ts_ms >= pt.expires_ms;
    if (req.type == TransferType::kPost && expired) {
      return Error::Conflict("pending_expired", "pending_id: " + pt.id + " expired");
    }
    if (req.type == TransferType::kExpire && !expired) {
      return Error::Conflict("pending_not_expired", "pending_id: " + pt.id + " has not expired");
    }
    Amount posted = req.type == TransferType::kPost ? (req.amount == 0 ? pt.amount : req.amount) : 0;
    if (posted > pt.amount) {
      return Error::Invalid("invalid_amount",
                            "amount: " + FormatAmount(posted) + " exceeds the pending " + FormatAmount(pt.amount));
    }
    auto debit = LoadAccount(pt.debit);
    if (!debit) return debit.take_error();
    auto credit = LoadAccount(pt.credit);
    if (!credit) return credit.take_error();
    Account& d = (*debit)->account;
    Account& c = (*credit)->account;
    if (d.debits_pending < pt.amount || c.credits_pending < pt.amount) {
      return Error::Internal("ledger_inconsistent", "pending totals below a pending transfer " + pt.id);
    }
    auto nd = CheckedAdd(d.debits_posted, posted);
    auto nc = CheckedAdd(c.credits_posted, posted);
    if (!nd || !nc) return Overflow();
    debit_state = *debit;
    credit_state = *credit;
    Touch(debit_state);
    Touch(credit_state);
    TouchPending(pt.id, *p);
    d.debits_pending -= pt.amount;
    c.credits_pending -= pt.amount;
    d.debits_posted = *nd;
    c.credits_posted = *nc;
    const char* state = req.type == TransferType::kPost   ? "posted"
                        : req.type == TransferType::kVoid ? "voided"
                                                          : "expired";
    pt.state = state;
    t.debit = pt.debit;
    t.credit = pt.credit;
    t.debit_id = d.id;
    t.credit_id = c.id;
    t.asset = pt.asset;
    t.amount = req.type == TransferType::kPost ? posted : pt.amount;
    t.pending_id = pt.id;
    t.state = state;
  }

  t.seq = seq_ + 1;
  // Both touched above, so their undo is recorded.
  t.debit_prev = debit_state->account.last_seq;
  t.credit_prev = credit_state->account.last_seq;
  debit_state->account.last_seq = credit_state->account.last_seq = t.seq;
  t.hash = ChainHash(hash_, t);
  seq_ = t.seq;
  ts_ = t.ts_ms;
  hash_ = t.hash;
  keys_.emplace(t.key, rows_.size());
  Transfer out;
  if (full) {
    out = t;
  } else {
    out.id = t.id;
  }
  rows_.push_back({std::move(t), std::move(fingerprint)});
  return out;
}

Result<void> Applier::Flush() {
  if (rows_.empty()) return Ok();
  // Changed accounts, a chunk per statement: an UPDATE ... FROM (VALUES ...)
  // for those that exist, a multi-row INSERT for new ones; a statement
  // shape for each power of two up to a chunk, their texts built once.
  std::vector<const Account*> updated, inserted;
  for (const auto& [k, st] : accounts_) {
    if (st.dirty) (st.persisted ? updated : inserted).push_back(&st.account);
  }
  static const auto kUpdate = store::PowersOfTwo(kAccountChunk, UpdateAccounts);
  static const auto kInsertAccounts = store::PowersOfTwo(kAccountChunk, InsertAccounts);
  static const auto kInsertTransfers = store::PowersOfTwo(kInsertChunk, InsertTransfers);
  static const auto kStates = store::PowersOfTwo(kAccountChunk, UpdateStates);
  SMART_TRY(WriteRows(tx_, updated.size(), kUpdate, [&](std::vector<Value>& params, size_t r) {
    const Account& a = *updated[r];
    params.emplace_back(a.id);
    params.emplace_back(FormatAmount(a.debits_posted));
    params.emplace_back(FormatAmount(a.credits_posted));
    params.emplace_back(FormatAmount(a.debits_pending));
    params.emplace_back(FormatAmount(a.credits_pending));
    params.emplace_back(a.last_seq);
  }));
  SMART_TRY(WriteRows(tx_, inserted.size(), kInsertAccounts, [&](std::vector<Value>& params, size_t r) {
    const Account& a = *inserted[r];
    params.emplace_back(a.id);
    params.emplace_back(a.ref.owner);
    params.emplace_back(a.ref.kind);
    params.emplace_back(a.ref.asset);
    params.emplace_back(FormatAmount(a.debits_posted));
    params.emplace_back(FormatAmount(a.credits_posted));
    params.emplace_back(FormatAmount(a.debits_pending));
    params.emplace_back(FormatAmount(a.credits_pending));
    params.emplace_back(a.created_ms);
    params.emplace_back(a.last_seq);
  }));
  // Transfers kInsertChunk at a time, moved from: Flush runs once, as the
  // transaction ends (after it, rows_ is empty).
  SMART_TRY(WriteRows(tx_, rows_.size(), kInsertTransfers, [&](std::vector<Value>& params, size_t r) {
    Transfer& t = rows_[r].transfer;
    std::string state = t.type == TransferType::kPending ? pendings_.at(t.id).transfer.state : std::move(t.state);
    params.emplace_back(t.seq);
    params.emplace_back(std::move(t.id));
    params.emplace_back(std::move(t.key));
    params.emplace_back(std::move(rows_[r].fingerprint));
    params.emplace_back(std::string(ToString(t.type)));
    params.emplace_back(std::move(t.debit_id));
    params.emplace_back(std::move(t.credit_id));
    params.emplace_back(std::move(t.asset));
    params.emplace_back(FormatAmount(t.amount));
    if (t.pending_id.empty()) {
      params.emplace_back(std::monostate{});
    } else {
      params.emplace_back(std::move(t.pending_id));
    }
    params.emplace_back(t.expires_ms);
    params.emplace_back(std::move(state));
    params.emplace_back(std::move(t.code));
    params.emplace_back(std::move(t.metadata));
    params.emplace_back(t.ts_ms);
    params.emplace_back(t.debit_prev);
    params.emplace_back(t.credit_prev);
    params.emplace_back(std::move(t.hash));
  }));
  rows_.clear();
  keys_.clear();
  // Pending transfers posted, voided or expired.
  std::vector<const Transfer*> resolved;
  for (const auto& [id, p] : pendings_) {
    if (p.persisted && p.dirty) resolved.push_back(&p.transfer);
  }
  SMART_TRY(WriteRows(tx_, resolved.size(), kStates, [&](std::vector<Value>& params, size_t r) {
    params.emplace_back(resolved[r]->seq);
    params.emplace_back(resolved[r]->state);
  }));
  SMART_TRY(tx_.ExecLater("UPDATE ledger_head SET seq = $1, hash = $2, ts_ms = $3 WHERE id = 1",
                          {Value{seq_}, Value{hash_}, Value{ts_}}));
  return Ok();
}

}  // namespace smart::ledger
