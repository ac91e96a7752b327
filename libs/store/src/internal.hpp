#pragma once

#include <functional>
#include <memory>
#include <string>

#include "smart/store/store.hpp"

namespace smart::store::detail {

Result<std::unique_ptr<Database>> OpenSqlite(const std::string& path, const Options& options);
Result<std::unique_ptr<Database>> OpenPostgres(const std::string& url, const Options& options);

// One transaction: `sql` runs BEGIN/COMMIT/ROLLBACK on the connection. Commits
// when fn succeeds; rolls back when it fails, throws, or the commit fails.
Result<void> RunTransaction(const std::function<Result<void>(const char* sql)>& sql, const char* begin, Tx& tx,
                            const std::function<Result<void>(Tx&)>& fn);

// Runs `attempt` until it succeeds, fails for good, or retries run out.
Result<void> WithRetries(int max_retries, const std::function<Result<void>()>& attempt);

// The URL with any password replaced by ***.
std::string RedactUrl(const std::string& url);

}  // namespace smart::store::detail
