#include "smart/ledger/ledger.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "apply.hpp"
#include "smart/core/crypto.hpp"
#include "smart/core/thread_name.hpp"

namespace smart::ledger {
namespace {

using store::Value;

constexpr std::string_view kKinds[] = {kind::kAvailable, kind::kEscrow,   kind::kStake,    kind::kRewards,
                                       kind::kFees,      kind::kTreasury, kind::kExternal, kind::kIssuer};

void AppendField(std::string& out, std::string_view field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
  out += ';';
}

}  // namespace

bool IsKind(std::string_view k) { return std::find(std::begin(kKinds), std::end(kKinds), k) != std::end(kKinds); }

bool KindMayGoNegative(std::string_view k) { return k == kind::kIssuer || k == kind::kExternal; }

Amount Account::Spendable() const {
  Amount out = debits_posted + debits_pending;  // bounded by the ledger's overflow checks
  return credits_posted > out ? credits_posted - out : 0;
}

std::string_view ToString(TransferType t) {
  switch (t) {
    case TransferType::kSingle: return "single";
    case TransferType::kPending: return "pending";
    case TransferType::kPost: return "post";
    case TransferType::kVoid: return "void";
    case TransferType::kExpire: return "expire";
  }
  return "single";
}

std::optional<TransferType> ParseTransferType(std::string_view s) {
  for (auto t : {TransferType::kSingle, TransferType::kPending, TransferType::kPost, TransferType::kVoid,
                 TransferType::kExpire}) {
    if (ToString(t) == s) return t;
  }
  return std::nullopt;
}

Result<std::vector<Asset>> ParseAssets(const std::vector<std::string>& specs) {
  std::vector<Asset> out;
  std::set<std::string> seen;
  for (const auto& spec : specs) {
    auto colon = spec.find(':');
    std::string code = spec.substr(0, colon);
    bool code_ok = code.size() >= 2 && code.size() <= 12 && std::all_of(code.begin(), code.end(), [](char c) {
                     return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
                   });
    int decimals = -1;
    if (colon != std::string::npos) {
      std::string d = spec.substr(colon + 1);
      if (!d.empty() && d.size() <= 2 && std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        decimals = std::stoi(d);
      }
    }
    if (!code_ok || decimals < 0 || decimals > 36) {
      return Error::Invalid("invalid_asset", "'" + spec + "' is not CODE:DECIMALS (2-12 of A-Z0-9, 0-36 decimals)");
    }
    if (!seen.insert(code).second) return Error::Invalid("invalid_asset", "asset " + code + " is listed twice");
    out.push_back({code, decimals});
  }
  return out;
}

Result<Amount> AmountColumn(const store::Row& row, size_t i) {
  auto v = ParseAmount(row.Text(i));
  if (!v) return Error::Internal("ledger_corrupt", "a stored amount is not an amount: '" + row.Text(i) + "'");
  return *v;
}

Result<Account> AccountFromRow(const store::Row& r) {
  Account a;
  a.id = r.Text(0);
  a.ref = {r.Text(1), r.Text(2), r.Text(3)};
  Amount* fields[] = {&a.debits_posted, &a.credits_posted, &a.debits_pending, &a.credits_pending};
  for (size_t i = 0; i < 4; ++i) {
    auto v = AmountColumn(r, i + 4);
    if (!v) return v.take_error();
    *fields[i] = *v;
  }
  a.created_ms = r.Int(8);
  a.last_seq = r.Int(9);
  return a;
}

Result<Transfer> TransferFromRow(const store::Row& r) {
  Transfer t;
  t.seq = r.Int(0);
  t.id = r.Text(1);
  t.key = r.Text(2);
  auto type = ParseTransferType(r.Text(3));
  if (!type) return Error::Internal("ledger_corrupt", "transfer " + t.id + " has an unknown type");
  t.type = *type;
  t.debit_id = r.Text(4);
  t.credit_id = r.Text(5);
  t.asset = r.Text(6);
  auto amount = AmountColumn(r, 7);
  if (!amount) return amount.take_error();
  t.amount = *amount;
  if (!r.IsNull(8)) t.pending_id = r.Text(8);
  t.expires_ms = r.Int(9);
  t.state = r.Text(10);
  t.code = r.Text(11);
  t.metadata = r.Text(12);
  t.ts_ms = r.Int(13);
  t.hash = r.Text(14);
  t.debit = {r.Text(15), r.Text(16), t.asset};
  t.credit = {r.Text(17), r.Text(18), t.asset};
  t.debit_prev = r.Int(20);
  t.credit_prev = r.Int(21);
  return t;
}

Result<std::optional<Transfer>> LoadTransfer(store::Tx& tx, std::string_view id) {
  std::string sql = "SELECT ";
  sql += kTransferColumns;
  sql += kTransferJoins;
  sql += " WHERE t.id = $1";
  auto row = tx.QueryOne(sql, {Value{std::string(id)}});
  if (!row) return row.take_error();
  if (!*row) return std::optional<Transfer>();
  auto t = TransferFromRow(**row);
  if (!t) return t.take_error();
  return std::optional<Transfer>(std::move(t).value());
}

std::string ChainHash(std::string_view prev_hash, const Transfer& t) {
  std::string s(prev_hash);
  AppendField(s, std::to_string(t.seq));
  AppendField(s, t.id);
  AppendField(s, t.key);
  AppendField(s, ToString(t.type));
  AppendField(s, t.debit_id);
  AppendField(s, t.credit_id);
  AppendField(s, t.asset);
  AppendField(s, FormatAmount(t.amount));
  AppendField(s, t.pending_id);
  AppendField(s, std::to_string(t.expires_ms));
  AppendField(s, t.code);
  AppendField(s, t.metadata);
  AppendField(s, std::to_string(t.ts_ms));
  AppendField(s, std::to_string(t.debit_prev));
  AppendField(s, std::to_string(t.credit_prev));
  return crypto::Sha256Hex(s);
}

Ledger::Ledger(store::Database& db, LedgerConfig config, const Clock& clock)
    : db_(db), config_(std::move(config)), clock_(clock), committer_([this] {
        NameThread("ledger-commit");
        RunCommitter();
      }) {}

Ledger::~Ledger() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  committer_.join();
}

const Asset* Ledger::FindAsset(std::string_view code) const {
  for (const auto& a : config_.assets) {
    if (a.code == code) return &a;
  }
  return nullptr;
}

Result<std::vector<Transfer>> Ledger::Execute(std::vector<TransferRequest> batch) {
  if (batch.empty()) return Error::Invalid("invalid_batch", "transfers: at least one");
  if (batch.size() > config_.max_batch) {
    return Error::Invalid("batch_too_large", "transfers: at most " + std::to_string(config_.max_batch));
  }
  if (!store::MayWaitForCommits()) {  // the answer would come from this very thread
    return Error::Internal("commit_deadlock", "Ledger::Execute waited for a commit where commits are announced");
  }
  for (TransferRequest& r : batch) r.new_key = false;  // looked up here, whoever asks
  std::future<Result<std::vector<Transfer>>> done;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return Error::Unavailable("ledger_stopped", "the ledger is shutting down");
    queue_.push_back(Job{std::move(batch), {}});
    done = queue_.back().done.get_future();
  }
  cv_.notify_one();
  return done.get();
}

Result<std::vector<std::string>> Ledger::ExecuteIn(store::Tx& tx, std::span<const TransferRequest> batch) {
  if (batch.empty()) return Error::Invalid("invalid_batch", "transfers: at least one");
  if (batch.size() > config_.max_batch) {
    return Error::Invalid("batch_too_large", "transfers: at most " + std::to_string(config_.max_batch));
  }
  // One Applier per transaction: calls from a group commit's jobs share the
  // chain head and the accounts, written once when the transaction commits.
  static const char kTag = 0;
  auto* state = static_cast<ApplierState*>(tx.State(&kTag));
  if (state == nullptr) {
    state = static_cast<ApplierState*>(&tx.AddState(&kTag, std::make_unique<ApplierState>(tx, config_, clock_)));
    SMART_TRY(state->applier.Begin());
  }
  std::vector<const TransferRequest*> all;
  for (const auto& r : batch) all.push_back(&r);
  SMART_TRY(state->applier.Prefetch(all));
  auto done = state->applier.ApplyBatch(batch, /*internal=*/false, /*full=*/false);
  if (!done) return done.take_error();
  std::vector<std::string> ids;
  ids.reserve(done->size());
  for (Transfer& t : *done) ids.push_back(std::move(t.id));
  return ids;
}

void Ledger::RunCommitter() {
  using Steady = std::chrono::steady_clock;
  auto next_sweep = Steady::now() + std::chrono::milliseconds(config_.sweep_interval_ms);
  std::unique_lock lk(mu_);
  while (true) {
    if (queue_.empty() && !stopping_) {
      if (config_.sweep_interval_ms > 0) {
        cv_.wait_until(lk, next_sweep);
      } else {
        cv_.wait(lk);
      }
    }
    if (queue_.empty() && stopping_) return;
    std::vector<Job> jobs;
    size_t transfers = 0;
    while (!queue_.empty() && (jobs.empty() || transfers + queue_.front().batch.size() <= config_.max_group)) {
      transfers += queue_.front().batch.size();
      jobs.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lk.unlock();
    if (!jobs.empty()) CommitGroup(std::move(jobs));
    if (config_.sweep_interval_ms > 0 && Steady::now() >= next_sweep) {
      auto swept = ExpirePending();
      if (!swept && config_.on_sweep_error) config_.on_sweep_error(swept.error());
      next_sweep = Steady::now() + std::chrono::milliseconds(config_.sweep_interval_ms);
    }
    lk.lock();
  }
}

void Ledger::CommitGroup(std::vector<Job> group) {
  auto jobs_ptr = std::make_shared<std::vector<Job>>(std::move(group));
  auto results_ptr = std::make_shared<std::vector<Result<std::vector<Transfer>>>>();
  auto& jobs = *jobs_ptr;
  auto& results = *results_ptr;
  auto answer = [jobs_ptr, results_ptr](Result<void> durable) {
    for (size_t i = 0; i < jobs_ptr->size(); ++i) {
      if (!durable) {
        (*jobs_ptr)[i].done.set_value(durable.error());
      } else {
        (*jobs_ptr)[i].done.set_value(std::move((*results_ptr)[i]));
      }
    }
  };
  auto committed = db_.TransactEarly(
      [&](store::Tx& tx) -> Result<void> {
        results.clear();
        Applier applier(tx, config_, clock_);
        SMART_TRY(applier.Begin());
        std::vector<const TransferRequest*> all;
        for (const auto& job : jobs) {
          for (const auto& r : job.batch) all.push_back(&r);
        }
        SMART_TRY(applier.Prefetch(all));
        for (auto& job : jobs) {
          auto r = applier.ApplyBatch(job.batch);
          if (!r) {
            // A domain refusal fails only its own batch; anything else (the
            // database) fails the whole group, which Transact may retry.
            auto k = r.error().kind;
            if (k != ErrorKind::kInvalid && k != ErrorKind::kConflict && k != ErrorKind::kNotFound)
              return r.take_error();
          }
          results.push_back(std::move(r));
        }
        return applier.Flush();
      },
      answer);
  if (!committed) answer(committed);
}

Result<int> Ledger::ExpirePending(int limit) {
  int n = 0;
  SMART_TRY(db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    n = 0;
    auto rows = tx.Query(
        "SELECT id FROM ledger_transfers WHERE state = 'pending' AND expires_ms > 0 AND expires_ms <= $1 "
        "ORDER BY expires_ms LIMIT $2",
        {Value{clock_.NowMs()}, Value{int64_t{limit}}});
    if (!rows) return rows.take_error();
    if (rows->empty()) return Ok();
    Applier applier(tx, config_, clock_);
    for (const auto& row : *rows) {
      TransferRequest req;
      req.type = TransferType::kExpire;
      req.pending_id = row.Text(0);
      req.key = "expire/" + req.pending_id;
      req.code = "expired";
      auto r = applier.ApplyBatch(std::span(&req, 1), /*internal=*/true);
      if (!r && r.error().kind == ErrorKind::kConflict) continue;  // resolved meanwhile (another instance)
      if (!r) return r.take_error();
      ++n;
    }
    return applier.Flush();
  }));
  return n;
}

Result<Account> Ledger::GetAccount(const AccountRef& ref) {
  Account out;
  out.ref = ref;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    std::string sql = "SELECT ";
    sql += kAccountColumns;
    sql += " FROM ledger_accounts WHERE owner = $1 AND kind = $2 AND asset = $3";
    auto row = tx.QueryOne(sql, {Value{ref.owner}, Value{ref.kind}, Value{ref.asset}});
    if (!row) return row.take_error();
    if (!*row) return Ok();
    auto a = AccountFromRow(**row);
    if (!a) return a.take_error();
    out = std::move(a).value();
    return Ok();
  }));
  return out;
}

Result<std::vector<Account>> Ledger::AccountsOf(std::string_view owner) {
  std::vector<Account> out;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    out.clear();
    std::string sql = "SELECT ";
    sql += kAccountColumns;
    sql += " FROM ledger_accounts WHERE owner = $1 ORDER BY asset, kind";
    auto rows = tx.Query(sql, {Value{std::string(owner)}});
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) {
      auto a = AccountFromRow(r);
      if (!a) return a.take_error();
      out.push_back(std::move(a).value());
    }
    return Ok();
  }));
  return out;
}

Result<Page<Account>> Ledger::ListAccounts(const AccountFilter& filter, int limit, std::string_view cursor) {
  Page<Account> page;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    page = {};
    std::string sql = "SELECT ";
    sql += kAccountColumns;
    sql += " FROM ledger_accounts WHERE id > $1";
    std::vector<Value> params{Value{std::string(cursor)}};
    auto add = [&](const char* column, const std::optional<std::string>& v) {
      if (!v) return;
      params.emplace_back(*v);
      sql += std::string(" AND ") + column + " = $" + std::to_string(params.size());
    };
    add("owner", filter.owner);
    add("kind", filter.kind);
    add("asset", filter.asset);
    params.emplace_back(int64_t{limit} + 1);
    sql += " ORDER BY id LIMIT $" + std::to_string(params.size());
    auto rows = tx.Query(sql, params);
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) {
      auto a = AccountFromRow(r);
      if (!a) return a.take_error();
      page.items.push_back(std::move(a).value());
    }
    if (page.items.size() > static_cast<size_t>(limit)) {
      page.items.pop_back();
      page.next_cursor = page.items.back().id;
    }
    return Ok();
  }));
  return page;
}

Result<Transfer> Ledger::GetTransfer(std::string_view id) {
  std::optional<Transfer> out;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto t = LoadTransfer(tx, id);
    if (!t) return t.take_error();
    out = std::move(t).value();
    return Ok();
  }));
  if (!out) return Error::NotFound("transfer_not_found", "no transfer " + std::string(id));
  return std::move(*out);
}

namespace {

// A history cursor holds, for each of the owner's accounts, the next transfer
// to read from its list ("acc_…:seq,…", base64url): pages cost what they
// return, however deep. Accounts missing from it were created after it was
// made, so all of their transfers are newer and already seen.
std::string EncodeHistoryCursor(const std::vector<std::pair<std::string, int64_t>>& heads) {
  std::string s;
  for (const auto& [id, next] : heads) {
    if (!s.empty()) s += ',';
    s += id + ":" + std::to_string(next);
  }
  return crypto::Base64UrlEncode(s);
}

std::optional<std::map<std::string, int64_t>> DecodeHistoryCursor(std::string_view cursor) {
  auto text = crypto::Base64UrlDecode(cursor);
  if (!text || text->empty() || text->size() > 4096) return std::nullopt;
  std::map<std::string, int64_t> out;
  size_t pos = 0;
  while (pos <= text->size()) {
    size_t comma = text->find(',', pos);
    if (comma == std::string::npos) comma = text->size();
    std::string_view item(text->data() + pos, comma - pos);
    size_t colon = item.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    auto seq = ParseAmount(item.substr(colon + 1));
    if (!seq || *seq > static_cast<Amount>(INT64_MAX)) return std::nullopt;
    if (!out.emplace(std::string(item.substr(0, colon)), static_cast<int64_t>(*seq)).second) return std::nullopt;
    pos = comma + 1;
  }
  return out;
}

}  // namespace

Result<Page<Transfer>> Ledger::History(std::string_view owner, const HistoryFilter& filter, int limit,
                                       std::string_view cursor) {
  std::optional<std::map<std::string, int64_t>> positions;
  if (!cursor.empty()) {
    positions = DecodeHistoryCursor(cursor);
    if (!positions) return Error::Invalid("invalid_cursor", "cursor: not a cursor");
  }
  const Error bad_cursor = Error::Invalid("invalid_cursor", "cursor: does not belong to this listing");
  Page<Transfer> page;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    page = {};
    std::string accounts_sql = "SELECT id, last_seq FROM ledger_accounts WHERE owner = $1";
    std::vector<Value> params{Value{std::string(owner)}};
    if (filter.asset) {
      params.emplace_back(*filter.asset);
      accounts_sql += " AND asset = $" + std::to_string(params.size());
    }
    if (filter.kind) {
      params.emplace_back(*filter.kind);
      accounts_sql += " AND kind = $" + std::to_string(params.size());
    }
    accounts_sql += " ORDER BY id";
    auto rows = tx.Query(accounts_sql, params);
    if (!rows) return rows.take_error();
    std::vector<std::pair<std::string, int64_t>> heads;
    size_t matched = 0;
    for (const auto& r : *rows) {
      int64_t next = r.Int(1);
      if (positions) {
        auto it = positions->find(r.Text(0));
        next = it == positions->end() ? 0 : it->second;
        matched += it != positions->end();
      }
      heads.emplace_back(r.Text(0), next);
    }
    if (positions && matched != positions->size()) return bad_cursor;
    std::string sql = "SELECT ";
    sql += kTransferColumns;
    sql += kTransferJoins;
    sql += " WHERE t.seq = $1";
    while (page.items.size() < static_cast<size_t>(limit)) {
      int64_t seq = 0;
      for (const auto& h : heads) seq = std::max(seq, h.second);
      if (seq == 0) break;
      auto row = tx.QueryOne(sql, {Value{seq}});
      if (!row) return row.take_error();
      if (!*row) return bad_cursor;
      auto t = TransferFromRow(**row);
      if (!t) return t.take_error();
      for (auto& h : heads) {  // a transfer between two of the owner's accounts is in both lists
        if (h.second != seq) continue;
        if (h.first == t->debit_id) {
          h.second = t->debit_prev;
        } else if (h.first == t->credit_id) {
          h.second = t->credit_prev;
        } else {
          return bad_cursor;
        }
      }
      if (filter.since_ms && t->ts_ms < *filter.since_ms) {  // times never decrease along the chain
        for (auto& h : heads) h.second = 0;
        break;
      }
      if (filter.until_ms && t->ts_ms >= *filter.until_ms) continue;
      page.items.push_back(std::move(t).value());
    }
    bool more = std::any_of(heads.begin(), heads.end(), [](const auto& h) { return h.second != 0; });
    if (more) page.next_cursor = EncodeHistoryCursor(heads);
    return Ok();
  }));
  return page;
}

Result<Amount> Ledger::Supply(std::string_view asset) {
  Amount credits = 0, debits = 0;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    credits = debits = 0;
    auto rows = tx.Query(
        "SELECT credits_posted, debits_posted FROM ledger_accounts WHERE asset = $1 AND kind IN ('issuer', "
        "'external')",
        {Value{std::string(asset)}});
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) {
      auto c = AmountColumn(r, 0);
      if (!c) return c.take_error();
      auto d = AmountColumn(r, 1);
      if (!d) return d.take_error();
      credits += *c;
      debits += *d;
    }
    return Ok();
  }));
  // The negative side's deficit is what everyone else holds.
  return debits > credits ? debits - credits : 0;
}

}  // namespace smart::ledger
