// Request counts per user, per API key and per UTC day. Counting is in memory
// (a mutex and a map: cheap on the request path); Flush() adds the counts to
// the database in one transaction. smartd flushes every few seconds and at
// shutdown, and before answering a usage query.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "smart/core/clock.hpp"
#include "smart/store/migrations.hpp"

namespace smart::auth {

struct UsageRow {
  std::string day;     // YYYY-MM-DD (UTC)
  std::string key_id;  // empty: requests made with a session token
  int64_t requests = 0;
};

class UsageRecorder {
 public:
  UsageRecorder(store::Database& db, const Clock& clock) : db_(db), clock_(clock) {}

  void Count(const std::string& user_id, const std::string& key_id);
  // Adds pending counts to the database; on failure they stay pending.
  Result<void> Flush();
  // The user's last `days` days, newest first, flushed counts only.
  Result<std::vector<UsageRow>> ForUser(const std::string& user_id, int days);

  static std::vector<store::Migration> Migrations();

 private:
  store::Database& db_;
  const Clock& clock_;
  std::mutex mu_;
  // (day number since the epoch, user, key) -> count; looked up by views, so a
  // request that repeats a known key allocates nothing.
  std::map<std::tuple<int64_t, std::string, std::string>, int64_t, std::less<>> pending_;
  std::mutex flush_mu_;
};

}  // namespace smart::auth
