// PostgreSQL backend over libpq: a bounded pool of connections, each with its
// own prepared-statement cache. Connections that fail are dropped and replaced.
#include <libpq-fe.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "internal.hpp"
#include "pg_signals.hpp"

namespace smart::store::detail {
namespace {

// Type OIDs from pg_type.h (stable across versions).
constexpr Oid kBool = 16, kBytea = 17, kInt8 = 20, kInt2 = 21, kInt4 = 23, kFloat4 = 700, kFloat8 = 701;

Error PgError(PGconn* conn, PGresult* res, std::string_view context) {
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string msg = std::string(context) + ": " + (res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  std::string_view s = state ? state : "";
  if (s == "23505") return Error::Conflict("unique_violation", msg);
  if (s == "23503") return Error::Conflict("foreign_key_violation", msg);
  if (s == "23502" || s == "23514") return Error::Invalid("constraint_violation", msg);
  if (s == "40001" || s == "40P01" || s == "55P03") return Error::Retryable("serialization_failure", msg);
  if (s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03" || s == "53300" ||
      PQstatus(conn) != CONNECTION_OK) {
    return Error::Unavailable("database_unavailable", msg);
  }
  return Error::Internal("sql_error", msg);
}

struct ResultPtr {
  PGresult* r;
  ~ResultPtr() { PQclear(r); }
};

std::string DecodeHexBytea(const char* text, size_t len) {
  std::string out;
  if (len < 2 || text[0] != '\\' || text[1] != 'x') return std::string(text, len);
  auto nibble = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  out.reserve((len - 2) / 2);
  for (size_t i = 2; i + 1 < len; i += 2) out.push_back(static_cast<char>(nibble(text[i]) * 16 + nibble(text[i + 1])));
  return out;
}

class Connection {
 public:
  explicit Connection(PGconn* c) : conn_(c) {}
  ~Connection() { PQfinish(conn_); }
  bool healthy() const { return PQstatus(conn_) == CONNECTION_OK; }

  Result<void> ExecScript(std::string_view sql) { return Command(std::string(sql).c_str()); }

  Result<void> Command(const char* sql) {
    if (pipelined_ > 0) {
      // One statement (COMMIT, ...) goes down the pipeline; a script waits for
      // it first, and ROLLBACK too (an error there would leave it unsent).
      if (std::strchr(sql, ';') == nullptr && std::strncmp(sql, "ROLLBACK", 8) != 0) {
        if (PQsendQueryParams(conn_, sql, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1) {
          auto r = Finish(true, nullptr);
          if (!r) return r.take_error();
          return Ok();
        }
        (void)Finish(false, nullptr);
        return Error::Unavailable("database_unavailable", std::string("statement not sent: ") + PQerrorMessage(conn_));
      }
      auto synced = Sync();
      if (!synced && std::strncmp(sql, "ROLLBACK", 8) != 0) return synced;
    }
    ResultPtr res{PQexec(conn_, sql)};
    auto st = PQresultStatus(res.r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return PgError(conn_, res.r, "command failed");
    return Ok();
  }

  // Runs one statement; collects rows when `rows` is given. After ExecLater's
  // statements it goes down the same pipeline: one round trip for all.
  Result<int64_t> Run(std::string_view sql, std::span<const Value> params, std::vector<Row>* rows) {
    Params p;
    auto name = PrepareAndBind(sql, params, p);
    if (!name) return name.take_error();
    if (pipelined_ == 0) {
      ResultPtr res{PQexecPrepared(conn_, name->c_str(), static_cast<int>(params.size()), p.values.data(),
                                   p.lengths.data(), p.formats.data(), 0)};
      return Collect(res.r, rows);
    }
    SMART_TRY(SendPrepared(*name, p));
    return Finish(true, rows);
  }

  // Sends a statement without waiting for it (pipeline mode); its outcome is
  // read with the next statement's, or by Sync.
  Result<void> RunLater(std::string_view sql, std::span<const Value> params) {
    Params p;
    auto name = PrepareAndBind(sql, params, p);
    if (!name) return name.take_error();
    if (pipelined_ == 0 && PQenterPipelineMode(conn_) != 1) {
      return Error::Unavailable("database_unavailable", std::string("no pipeline: ") + PQerrorMessage(conn_));
    }
    SMART_TRY(SendPrepared(*name, p));
    ++pipelined_;
    return Ok();
  }

  // Reads the outcome of every statement sent by RunLater; the first error.
  Result<void> Sync() {
    if (pipelined_ == 0) return Ok();
    auto r = Finish(false, nullptr);
    if (!r) return r.take_error();
    return Ok();
  }

 private:
  struct Params {
    std::vector<std::string> text;
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
  };

  // The statement's prepared name (a new one is prepared outside the pipeline) and its parameters.
  Result<std::string> PrepareAndBind(std::string_view sql, std::span<const Value> params, Params& p) {
    if (pipelined_ > 0 && !statements_.contains(std::string(sql))) SMART_TRY(Sync());
    auto name = Prepare(sql);
    if (!name) return name.take_error();
    SMART_TRY(Bind(params, p));
    return name;
  }

  // Into the pipeline; a failure ends it (the connection is likely gone).
  Result<void> SendPrepared(const std::string& name, const Params& p) {
    if (PQsendQueryPrepared(conn_, name.c_str(), static_cast<int>(p.values.size()), p.values.data(), p.lengths.data(),
                            p.formats.data(), 0) == 1) {
      return Ok();
    }
    auto sent = Error::Unavailable("database_unavailable", std::string("statement not sent: ") + PQerrorMessage(conn_));
    (void)Finish(false, nullptr);
    return sent;
  }

  static Result<void> Bind(std::span<const Value> params, Params& p) {
    p.text.resize(params.size());
    p.values.assign(params.size(), nullptr);
    p.lengths.assign(params.size(), 0);
    p.formats.assign(params.size(), 0);
    for (size_t i = 0; i < params.size(); ++i) {
      const Value& v = params[i];
      if (std::holds_alternative<std::monostate>(v)) continue;
      if (const auto* n = std::get_if<int64_t>(&v)) {
        p.text[i] = std::to_string(*n);
      } else if (const auto* d = std::get_if<double>(&v)) {
        char buf[64];
        p.text[i].assign(buf, std::to_chars(buf, buf + sizeof buf, *d).ptr);
      } else if (const auto* s = std::get_if<std::string>(&v)) {
        if (std::memchr(s->data(), 0, s->size())) {
          return Error::Invalid("invalid_text", "text parameters cannot contain NUL bytes");
        }
        p.values[i] = s->c_str();
        p.lengths[i] = static_cast<int>(s->size());
        continue;
      } else {
        const auto& b = std::get<Blob>(v);
        p.values[i] = b.bytes.data();
        p.lengths[i] = static_cast<int>(b.bytes.size());
        p.formats[i] = 1;
        continue;
      }
      p.values[i] = p.text[i].c_str();
      p.lengths[i] = static_cast<int>(p.text[i].size());
    }
    return Ok();
  }

  // A statement's result: its rows into `rows`, the rows it changed.
  Result<int64_t> Collect(PGresult* res, std::vector<Row>* rows) {
    auto st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return PgError(conn_, res, "statement failed");
    if (rows && st == PGRES_TUPLES_OK) {
      int nrows = PQntuples(res), ncols = PQnfields(res);
      rows->reserve(static_cast<size_t>(nrows));
      for (int r = 0; r < nrows; ++r) {
        std::vector<Value> vals;
        vals.reserve(static_cast<size_t>(ncols));
        for (int c = 0; c < ncols; ++c) {
          if (PQgetisnull(res, r, c)) {
            vals.emplace_back(std::monostate{});
            continue;
          }
          const char* v = PQgetvalue(res, r, c);
          size_t len = static_cast<size_t>(PQgetlength(res, r, c));
          switch (PQftype(res, c)) {
            case kInt2:
            case kInt4:
            case kInt8: {
              int64_t n = 0;
              std::from_chars(v, v + len, n);
              vals.emplace_back(n);
              break;
            }
            case kFloat4:
            case kFloat8: vals.emplace_back(std::strtod(v, nullptr)); break;
            case kBool: vals.emplace_back(static_cast<int64_t>(v[0] == 't')); break;
            case kBytea: vals.emplace_back(Blob{DecodeHexBytea(v, len)}); break;
            default: vals.emplace_back(std::string(v, len));
          }
        }
        rows->emplace_back(std::move(vals));
      }
    }
    const char* affected = PQcmdTuples(res);
    return affected && *affected ? std::strtoll(affected, nullptr, 10) : int64_t{0};
  }

  // Ends the pipeline: a sync point, then the outcome of each statement sent
  // (and of one more when `last`: its rows into `rows`), then out of pipeline
  // mode. The first error wins; those after it were not run (aborted).
  Result<int64_t> Finish(bool last, std::vector<Row>* rows) {
    std::optional<Error> first;
    if (PQpipelineSync(conn_) != 1) {
      first = Error::Unavailable("database_unavailable", std::string("pipeline not synced: ") + PQerrorMessage(conn_));
    }
    Result<int64_t> mine = int64_t{0};
    const int results = pipelined_ + (last ? 1 : 0);
    for (int i = 0; i < results; ++i) {
      ResultPtr res{PQgetResult(conn_)};
      if (!res.r) {
        if (!first) first = Error::Unavailable("database_unavailable", "the pipeline ended early");
        break;
      }
      auto st = PQresultStatus(res.r);
      if (st == PGRES_PIPELINE_ABORTED) {
        if (!first) first = Error::Internal("sql_error", "a pipelined statement was not run");
      } else if (last && i == results - 1) {
        mine = Collect(res.r, rows);
      } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !first) {
        first = PgError(conn_, res.r, "statement failed");
      }
      while (PGresult* more = PQgetResult(conn_)) PQclear(more);  // the end of this statement's results
    }
    // The sync point, then out of pipeline mode (whatever is left is read first).
    for (int i = 0; i < 1000 && PQexitPipelineMode(conn_) != 1; ++i) {
      PGresult* more = PQgetResult(conn_);
      if (!more && PQstatus(conn_) != CONNECTION_OK) break;
      PQclear(more);
    }
    pipelined_ = 0;
    if (first) return *first;
    return mine;
  }

 private:
  Result<std::string> Prepare(std::string_view sql) {
    auto it = statements_.find(std::string(sql));
    if (it != statements_.end()) return it->second;
    std::string name = 's' + std::to_string(statements_.size());
    std::string text(sql);
    ResultPtr res{PQprepare(conn_, name.c_str(), text.c_str(), 0, nullptr)};
    if (PQresultStatus(res.r) != PGRES_COMMAND_OK) return PgError(conn_, res.r, "prepare failed");
    statements_.emplace(std::move(text), name);
    return name;
  }

  PGconn* conn_;
  std::unordered_map<std::string, std::string> statements_;
  int pipelined_ = 0;  // statements sent by RunLater whose outcome is not read yet
};

using PgTx = ConnectionTx<Connection>;

class PgDatabase final : public Database {
 public:
  PgDatabase(std::string url, Options opt) : url_(std::move(url)), opt_(opt), signals_(url_) {}

  std::string_view backend() const override { return "postgresql"; }

  Result<void> Transact(TxMode mode, const std::function<Result<void>(Tx&)>& fn) override {
    const char* begin = mode == TxMode::kRead           ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                        : mode == TxMode::kSerializable ? "BEGIN ISOLATION LEVEL SERIALIZABLE"
                                                        : "BEGIN";
    return RunWithRetries(begin, fn);
  }

  // The group committers' transactions (the coordinator's writer and the
  // ledger's) first take one transaction-scoped advisory lock, so that those
  // of every instance sharing the database run one at a time. They did
  // anyway from their first ledger statement on (the ledger's chain head is
  // one row), but after locking other rows in any order (a task's lane, a
  // node), so two instances deadlocked, each deadlock stalling both writers
  // for deadlock_timeout (1 s) and failing requests: two instances completed
  // 91-694 tasks/s where one completed 2,467 (bench/tasks/run.sh).
  Result<void> TransactEarly(const std::function<Result<void>(Tx&)>& fn,
                             std::function<void(Result<void>)> durable) override {
    SMART_TRY(RunWithRetries("BEGIN; SELECT pg_advisory_xact_lock(" + std::to_string(kWritersLock) + ")", fn));
    durable(Ok());
    return Ok();
  }

  void Signal(std::string_view channel) override { signals_.Signal(channel); }
  std::unique_ptr<Listening> Listen(std::string channel, std::function<void()> fn) override {
    return signals_.Listen(std::move(channel), std::move(fn));
  }

  Result<void> Ping() override {
    auto conn = Acquire();
    if (!conn) return conn.take_error();
    auto r = (*conn)->Command("SELECT 1");
    Release(std::move(*conn));
    return r;
  }

  Result<std::unique_ptr<Connection>> Connect() {
    PGconn* c = PQconnectdb(url_.c_str());
    if (PQstatus(c) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(c);
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      PQfinish(c);
      return Error::Unavailable("database_unavailable", "cannot connect to " + RedactUrl(url_) + ": " + msg);
    }
    // NOTICE messages ("relation already exists, skipping") would go to stderr.
    PQsetNoticeProcessor(
        c, [](void*, const char*) {}, nullptr);
    auto conn = std::make_unique<Connection>(c);
    // Statements are prepared once per connection, often while the tables are
    // still empty; a generic plan chosen then (a sequential scan) would stay
    // after they grow. A plan per execution follows the real data.
    SMART_TRY(conn->Command("SET plan_cache_mode = force_custom_plan"));
    return conn;
  }

  void Seed(std::unique_ptr<Connection> c) {
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(c));
  }

  void Release(std::unique_ptr<Connection> c) {
    std::lock_guard lock(mu_);
    if (c->healthy()) idle_.push_back(std::move(c));
    --in_use_;
    cv_.notify_one();
  }

 private:
  // The writers' advisory lock: "smart" in ASCII.
  static constexpr int64_t kWritersLock = 0x736d617274;

  Result<void> RunWithRetries(const std::string& begin, const std::function<Result<void>(Tx&)>& fn) {
    return WithRetries(opt_.max_retries, [&]() -> Result<void> {
      auto conn = Acquire();
      if (!conn) return conn.take_error();
      Result<void> r;
      {
        Connection& c = **conn;
        PgTx tx(c);  // ends before the connection goes back to the pool
        r = RunTransaction([&c](const char* sql) { return c.Command(sql); }, begin.c_str(), tx, fn);
      }
      Release(std::move(*conn));
      return r;
    });
  }

  Result<std::unique_ptr<Connection>> Acquire() {
    std::unique_lock lock(mu_);
    bool ok = cv_.wait_for(lock, std::chrono::milliseconds(opt_.busy_timeout_ms),
                           [&] { return !idle_.empty() || in_use_ < opt_.pool_size; });
    if (!ok) {
      return Error::Unavailable("pool_exhausted",
                                "no database connection free within " + std::to_string(opt_.busy_timeout_ms) + " ms");
    }
    ++in_use_;
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
    lock.unlock();
    auto c = Connect();
    if (!c) {
      std::lock_guard relock(mu_);
      --in_use_;
      cv_.notify_one();
    }
    return c;
  }

  std::string url_;
  Options opt_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  int in_use_ = 0;
  PgSignals signals_;
};

}  // namespace

Result<std::unique_ptr<Database>> OpenPostgres(const std::string& url, const Options& options) {
  auto db = std::make_unique<PgDatabase>(url, options);
  // Connect once now so that a wrong URL fails at start-up, not on first use.
  auto c = db->Connect();
  if (!c) return c.take_error();
  db->Seed(std::move(c).value());
  return std::unique_ptr<Database>(std::move(db));
}

}  // namespace smart::store::detail
