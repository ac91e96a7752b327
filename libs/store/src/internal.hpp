#pragma once

#include <functional>
#include <memory>
#include <string>

#include "smart/store/store.hpp"

namespace smart::store::detail {

Result<std::unique_ptr<Database>> OpenSqlite(const std::string& path, const Options& options);
Result<std::unique_ptr<Database>> OpenPostgres(const std::string& url, const Options& options);

// A transaction over a backend connection that offers Run(sql, params, rows*)
// (rows changed) and ExecScript(sql).
template <class Connection>
class ConnectionTx final : public Tx {
 public:
  explicit ConnectionTx(Connection& c) : c_(c) {}
  Result<std::vector<Row>> Query(std::string_view sql, std::span<const Value> params) override {
    std::vector<Row> rows;
    auto r = c_.Run(sql, params, &rows);
    if (!r) return r.take_error();
    return rows;
  }
  Result<int64_t> Exec(std::string_view sql, std::span<const Value> params) override {
    return c_.Run(sql, params, nullptr);
  }
  Result<void> ExecScript(std::string_view sql) override { return c_.ExecScript(sql); }
  Result<void> ExecLater(std::string_view sql, std::span<const Value> params) override {
    if constexpr (requires { c_.RunLater(sql, params); }) {
      return c_.RunLater(sql, params);
    } else {
      return Tx::ExecLater(sql, params);
    }
  }
  Result<void> Sync() override {
    if constexpr (requires { c_.Sync(); }) {
      return c_.Sync();
    } else {
      return Ok();
    }
  }
  using Tx::Exec;
  using Tx::ExecLater;
  using Tx::Query;

 private:
  Connection& c_;
};

// One transaction: `sql` runs BEGIN/COMMIT/ROLLBACK on the connection. Commits
// when fn succeeds; rolls back when it fails, throws, or the commit fails.
Result<void> RunTransaction(const std::function<Result<void>(const char* sql)>& sql, const char* begin, Tx& tx,
                            const std::function<Result<void>(Tx&)>& fn);

// Marks the calling thread as one that runs commit callbacks (MayWaitForCommits).
void RunsCommitCallbacks();
Error CommitDeadlock();

// Runs `attempt` until it succeeds, fails for good, or retries run out.
Result<void> WithRetries(int max_retries, const std::function<Result<void>()>& attempt);

// The URL with any password replaced by ***.
std::string RedactUrl(const std::string& url);

}  // namespace smart::store::detail
