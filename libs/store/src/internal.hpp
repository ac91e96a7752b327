#pragma once

#include <functional>
#include <memory>
#include <string>

#include "smart/store/store.hpp"

namespace smart::store::detail {

Result<std::unique_ptr<Database>> OpenSqlite(const std::string& path, const Options& options);
Result<std::unique_ptr<Database>> OpenPostgres(const std::string& url, const Options& options);

// Runs `attempt` until it succeeds, fails for good, or retries run out.
Result<void> WithRetries(int max_retries, const std::function<Result<void>()>& attempt);

// The URL with any password replaced by ***.
std::string RedactUrl(const std::string& url);

}  // namespace smart::store::detail
