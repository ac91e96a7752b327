// PostgreSQL backend over libpq: a bounded pool of connections, each with its
// own prepared-statement cache. Connections that fail are dropped and replaced.
#include <libpq-fe.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "internal.hpp"

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
    ResultPtr res{PQexec(conn_, sql)};
    auto st = PQresultStatus(res.r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return PgError(conn_, res.r, "command failed");
    return Ok();
  }

  Result<int64_t> Run(std::string_view sql, std::span<const Value> params, std::vector<Row>* rows) {
    auto name = Prepare(sql);
    if (!name) return name.take_error();
    std::vector<std::string> text(params.size());
    std::vector<const char*> values(params.size());
    std::vector<int> lengths(params.size()), formats(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      const Value& v = params[i];
      if (std::holds_alternative<std::monostate>(v)) {
        values[i] = nullptr;
      } else if (const auto* n = std::get_if<int64_t>(&v)) {
        text[i] = std::to_string(*n);
      } else if (const auto* d = std::get_if<double>(&v)) {
        char buf[64];
        text[i].assign(buf, std::to_chars(buf, buf + sizeof buf, *d).ptr);
      } else if (const auto* s = std::get_if<std::string>(&v)) {
        values[i] = s->c_str();
        lengths[i] = static_cast<int>(s->size());
        if (std::memchr(s->data(), 0, s->size())) {
          return Error::Invalid("invalid_text", "text parameters cannot contain NUL bytes");
        }
        continue;
      } else {
        const auto& b = std::get<Blob>(v);
        values[i] = b.bytes.data();
        lengths[i] = static_cast<int>(b.bytes.size());
        formats[i] = 1;
        continue;
      }
      if (!std::holds_alternative<std::monostate>(v)) {
        values[i] = text[i].c_str();
        lengths[i] = static_cast<int>(text[i].size());
      }
    }
    ResultPtr res{PQexecPrepared(conn_, name->c_str(), static_cast<int>(params.size()), values.data(), lengths.data(),
                                 formats.data(), 0)};
    auto st = PQresultStatus(res.r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return PgError(conn_, res.r, "statement failed");
    if (rows && st == PGRES_TUPLES_OK) {
      int nrows = PQntuples(res.r), ncols = PQnfields(res.r);
      rows->reserve(static_cast<size_t>(nrows));
      for (int r = 0; r < nrows; ++r) {
        std::vector<Value> vals;
        vals.reserve(static_cast<size_t>(ncols));
        for (int c = 0; c < ncols; ++c) {
          if (PQgetisnull(res.r, r, c)) {
            vals.emplace_back(std::monostate{});
            continue;
          }
          const char* p = PQgetvalue(res.r, r, c);
          size_t len = static_cast<size_t>(PQgetlength(res.r, r, c));
          switch (PQftype(res.r, c)) {
            case kInt2:
            case kInt4:
            case kInt8: {
              int64_t n = 0;
              std::from_chars(p, p + len, n);
              vals.emplace_back(n);
              break;
            }
            case kFloat4:
            case kFloat8: vals.emplace_back(std::strtod(p, nullptr)); break;
            case kBool: vals.emplace_back(static_cast<int64_t>(p[0] == 't')); break;
            case kBytea: vals.emplace_back(Blob{DecodeHexBytea(p, len)}); break;
            default: vals.emplace_back(std::string(p, len));
          }
        }
        rows->emplace_back(std::move(vals));
      }
    }
    const char* affected = PQcmdTuples(res.r);
    return affected && *affected ? std::strtoll(affected, nullptr, 10) : int64_t{0};
  }

 private:
  Result<std::string> Prepare(std::string_view sql) {
    auto it = statements_.find(std::string(sql));
    if (it != statements_.end()) return it->second;
    std::string name = "s" + std::to_string(statements_.size());
    std::string text(sql);
    ResultPtr res{PQprepare(conn_, name.c_str(), text.c_str(), 0, nullptr)};
    if (PQresultStatus(res.r) != PGRES_COMMAND_OK) return PgError(conn_, res.r, "prepare failed");
    statements_.emplace(std::move(text), name);
    return name;
  }

  PGconn* conn_;
  std::unordered_map<std::string, std::string> statements_;
};

using PgTx = ConnectionTx<Connection>;

class PgDatabase final : public Database {
 public:
  PgDatabase(std::string url, Options opt) : url_(std::move(url)), opt_(opt) {}

  std::string_view backend() const override { return "postgresql"; }

  Result<void> Transact(TxMode mode, const std::function<Result<void>(Tx&)>& fn) override {
    return WithRetries(opt_.max_retries, [&]() -> Result<void> {
      auto conn = Acquire();
      if (!conn) return conn.take_error();
      auto r = RunTx(**conn, mode, fn);
      Release(std::move(*conn));
      return r;
    });
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
  static Result<void> RunTx(Connection& c, TxMode mode, const std::function<Result<void>(Tx&)>& fn) {
    const char* begin = mode == TxMode::kRead           ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
                        : mode == TxMode::kSerializable ? "BEGIN ISOLATION LEVEL SERIALIZABLE"
                                                        : "BEGIN";
    PgTx tx(c);
    return RunTransaction([&c](const char* sql) { return c.Command(sql); }, begin, tx, fn);
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
