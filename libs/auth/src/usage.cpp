#include "smart/auth/usage.hpp"

#include "smart/core/json_text.hpp"

namespace smart::auth {

void UsageRecorder::Count(const std::string& user_id, const std::string& key_id) {
  int64_t day = clock_.NowS() / 86400;
  std::lock_guard lock(mu_);
  auto it = pending_.find(std::tuple<int64_t, std::string_view, std::string_view>(day, user_id, key_id));
  if (it == pending_.end()) it = pending_.emplace(std::make_tuple(day, user_id, key_id), 0).first;
  ++it->second;
}

Result<void> UsageRecorder::Flush() {
  std::lock_guard flush_lock(flush_mu_);  // one flush at a time, so counts are added once
  decltype(pending_) batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(pending_);
  }
  if (batch.empty()) return Ok();
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    for (const auto& [k, n] : batch) {
      const auto& [day_number, user, key] = k;
      std::string day = FormatTimestamp(day_number * 86400).substr(0, 10);
      SMART_TRY(tx.Exec(
          "INSERT INTO usage_daily (day, user_id, key_id, requests) VALUES ($1, $2, $3, $4)"
          " ON CONFLICT (day, user_id, key_id) DO UPDATE SET requests = usage_daily.requests + excluded.requests",
          {store::Value{day}, store::Value{user}, store::Value{key}, store::Value{n}}));
    }
    return Ok();
  });
  if (!r) {
    std::lock_guard lock(mu_);
    for (auto& [k, n] : batch) pending_[k] += n;
  }
  return r;
}

Result<std::vector<UsageRow>> UsageRecorder::ForUser(const std::string& user_id, int days) {
  std::string since = FormatTimestamp(clock_.NowS() - int64_t{days - 1} * 86400).substr(0, 10);
  std::vector<UsageRow> out;
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    out.clear();
    auto rows = tx.Query(
        "SELECT day, key_id, requests FROM usage_daily WHERE user_id = $1 AND day >= $2 ORDER BY day DESC, key_id",
        {store::Value{user_id}, store::Value{since}});
    if (!rows) return rows.take_error();
    for (const auto& row : *rows) out.push_back({row.Text(0), row.Text(1), row.Int(2)});
    return Ok();
  });
  if (!r) return r.take_error();
  return out;
}

std::vector<store::Migration> UsageRecorder::Migrations() {
  return {{103, "create_usage_daily",
           "CREATE TABLE usage_daily (day TEXT NOT NULL, user_id TEXT NOT NULL, key_id TEXT NOT NULL,"
           " requests BIGINT NOT NULL, PRIMARY KEY (day, user_id, key_id));",
           ""}};
}

}  // namespace smart::auth
