#include "smart/store/store.hpp"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "internal.hpp"

namespace smart::store {

double Row::Double(size_t i) const {
  const Value& v = values_.at(i);
  if (const auto* n = std::get_if<int64_t>(&v)) return static_cast<double>(*n);
  return std::get<double>(v);
}

std::vector<std::string> PowersOfTwo(size_t max, const std::function<std::string(size_t)>& make) {
  std::vector<std::string> out;
  for (size_t n = 1; n <= max; n *= 2) out.push_back(make(n));
  return out;
}

std::string ValuesRows(size_t n, size_t columns, size_t first, std::string_view row) {
  std::string out;
  for (size_t r = 0; r < n; ++r) {
    if (r > 0) out += ", ";
    for (size_t i = 0; i < row.size(); ++i) {
      if (row[i] != '?') {
        out += row[i];
        continue;
      }
      size_t k = 0;
      while (i + 1 < row.size() && row[i + 1] >= '0' && row[i + 1] <= '9') k = k * 10 + (row[++i] - '0');
      out += '$';
      out += std::to_string(first + r * columns + k - 1);
    }
  }
  return out;
}

Result<std::optional<Row>> Tx::QueryOne(std::string_view sql, std::initializer_list<Value> params) {
  auto rows = Query(sql, params);
  if (!rows) return rows.take_error();
  if (rows->empty()) return std::optional<Row>();
  return std::optional<Row>(std::move(rows->front()));
}

Result<std::unique_ptr<Database>> Open(const std::string& url, const Options& options) {
  if (url.starts_with("sqlite:")) {
    std::string path = url.substr(7);
    if (path.starts_with("//")) path = path.substr(2);
    if (path.empty()) return Error::Invalid("bad_database_url", "sqlite URL names no file: '" + url + "'");
    return detail::OpenSqlite(path, options);
  }
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
    return detail::OpenPostgres(url, options);
  }
  return Error::Invalid("bad_database_url",
                        "database URL must start with sqlite: or postgresql://, got '" + detail::RedactUrl(url) + "'");
}

std::string TranslatePlaceholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size());
  for (size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      size_t end = sql.find(c, i + 1);
      // A doubled quote inside a literal is an escaped quote: find() lands on it
      // and the loop resumes inside the literal, which is handled the same way.
      if (end == std::string_view::npos) end = sql.size() - 1;
      out.append(sql.substr(i, end - i + 1));
      i = end;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      size_t end = sql.find('\n', i);
      if (end == std::string_view::npos) end = sql.size() - 1;
      out.append(sql.substr(i, end - i + 1));
      i = end;
    } else if (c == '$' && i + 1 < sql.size() && sql[i + 1] >= '1' && sql[i + 1] <= '9') {
      out.push_back('?');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Result<void> Tx::Savepoint() {
  SMART_TRY(Exec("SAVEPOINT grp"));
  savepoint_ = states_.size();
  for (auto& h : states_) h.state->Mark();
  return Ok();
}

Result<void> Tx::RollbackToSavepoint() {
  SMART_TRY(Exec("ROLLBACK TO SAVEPOINT grp"));
  if (savepoint_) {
    // A state begun after the savepoint read rows (and, on PostgreSQL, took
    // locks) that the rollback undid: it is dropped, not trusted.
    states_.resize(std::min(*savepoint_, states_.size()));
    for (auto& h : states_) h.state->RollbackToMark();
  }
  return Ok();
}

Result<void> Tx::ReleaseSavepoint() {
  SMART_TRY(Exec("RELEASE SAVEPOINT grp"));
  savepoint_.reset();
  return Ok();
}

TxState* Tx::State(const void* key) const {
  for (const auto& h : states_) {
    if (h.key == key) return h.state.get();
  }
  return nullptr;
}

TxState& Tx::AddState(const void* key, std::unique_ptr<TxState> state) {
  states_.push_back(Held{key, std::move(state)});
  return *states_.back().state;
}

Result<void> Tx::FlushStates() {
  for (auto& h : states_) SMART_TRY(h.state->Flush(*this));
  return Ok();
}

Result<void> Database::TransactEarly(const std::function<Result<void>(Tx&)>& fn,
                                     std::function<void(Result<void>)> durable) {
  SMART_TRY(Transact(TxMode::kWrite, fn));
  durable(Ok());
  return Ok();
}

namespace {
thread_local bool runs_commit_callbacks = false;
}  // namespace

bool MayWaitForCommits() { return !runs_commit_callbacks; }

namespace detail {

void RunsCommitCallbacks() { runs_commit_callbacks = true; }

Error CommitDeadlock() {
  return Error::Internal("commit_deadlock", "a write waited for a commit on the thread that announces commits");
}

Result<void> RunTransaction(const std::function<Result<void>(const char* sql)>& sql, const char* begin, Tx& tx,
                            const std::function<Result<void>(Tx&)>& fn) {
  SMART_TRY(sql(begin));
  Result<void> r;
  try {
    r = fn(tx);
  } catch (...) {
    (void)sql("ROLLBACK");
    throw;
  }
  if (r) {
    try {
      r = tx.FlushStates();
    } catch (...) {
      (void)sql("ROLLBACK");
      throw;
    }
  }
  if (!r) {
    (void)sql("ROLLBACK");
    return r;
  }
  auto commit = sql("COMMIT");
  if (!commit) (void)sql("ROLLBACK");
  return commit;
}

Result<void> WithRetries(int max_retries, const std::function<Result<void>()>& attempt) {
  for (int i = 0;; ++i) {
    auto r = attempt();
    if (r.ok() || r.error().kind != ErrorKind::kRetryable || i >= max_retries) return r;
    // Jittered exponential back-off: 1, 2, 4 ... ms, at most 64 ms.
    thread_local std::minstd_rand jitter{std::random_device{}()};
    std::this_thread::sleep_for(std::chrono::microseconds((1000 << std::min(i, 6)) + jitter() % 1000));
  }
}

std::string RedactUrl(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  auto at = url.find('@', scheme + 3);
  auto colon = url.find(':', scheme + 3);
  if (at == std::string::npos || colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

}  // namespace detail
}  // namespace smart::store
