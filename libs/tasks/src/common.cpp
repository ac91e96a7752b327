#include <boost/json.hpp>

#include "internal.hpp"

namespace smart::tasks {

using store::Value;

std::optional<Priority> ParsePriority(std::string_view s) {
  for (auto p : {Priority::kLow, Priority::kNormal, Priority::kHigh, Priority::kUrgent}) {
    if (ToString(p) == s) return p;
  }
  return std::nullopt;
}

std::string_view ToString(Priority p) {
  switch (p) {
    case Priority::kLow: return "low";
    case Priority::kNormal: return "normal";
    case Priority::kHigh: return "high";
    case Priority::kUrgent: return "urgent";
  }
  return "normal";
}

bool Task::Final() const {
  return status == "completed" || status == "failed" || status == "timed_out" || status == "cancelled";
}

namespace {
Result<ledger::Amount> AmountAt(const store::Row& r, size_t i) {
  auto v = ledger::ParseAmount(r.Text(i));
  if (!v) return Error::Internal("tasks_corrupt", "a stored amount is not an amount");
  return *v;
}
std::string TextOr(const store::Row& r, size_t i) { return r.IsNull(i) ? std::string() : r.Text(i); }
}  // namespace

Result<Task> TaskFromRow(const store::Row& r) {
  Task t;
  t.id = r.Text(0);
  t.requester = r.Text(1);
  t.type = r.Text(2);
  t.input = r.Text(3);
  t.input_is_json = r.Int(4) != 0;
  t.parameters = r.Text(5);
  t.priority = static_cast<Priority>(std::clamp<int64_t>(r.Int(6), 0, 3));
  t.status = r.Text(7);
  t.asset = r.Text(8);
  auto cost = AmountAt(r, 9);
  if (!cost) return cost.take_error();
  t.cost = *cost;
  if (!r.IsNull(10)) {
    auto m = AmountAt(r, 10);
    if (!m) return m.take_error();
    t.max_cost = *m;
  }
  t.timeout_s = r.Int(11);
  t.max_attempts = static_cast<int>(r.Int(12));
  t.attempt = static_cast<int>(r.Int(13));
  t.failures = static_cast<int>(r.Int(14));
  t.node_id = TextOr(r, 15);
  t.lease_expires_ms = r.Int(16);
  t.progress = static_cast<int>(r.Int(17));
  t.progress_message = r.Text(18);
  t.output = TextOr(r, 19);
  t.proof_hash = TextOr(r, 20);
  t.error = TextOr(r, 21);
  t.escrow_id = r.Text(22);
  t.created_ms = r.Int(23);
  t.updated_ms = r.Int(24);
  t.completed_ms = r.Int(25);
  t.not_before_ms = r.Int(28);
  t.deadline_ms = r.Int(29);
  t.retries = static_cast<int>(r.Int(30));
  t.replicas = static_cast<int>(r.Int(31));
  t.parent_id = TextOr(r, 32);
  return t;
}

Result<Node> NodeFromRow(const store::Row& r) {
  Node n;
  n.id = r.Text(0);
  n.operator_id = r.Text(1);
  n.name = r.Text(2);
  boost::system::error_code ec;
  auto caps = boost::json::parse(r.Text(3), ec);
  if (!ec && caps.is_array()) {
    for (const auto& c : caps.as_array()) {
      if (c.is_string()) n.capabilities.emplace_back(c.as_string());
    }
  }
  n.capacity = static_cast<int>(r.Int(4));
  n.hardware = r.Text(5);
  n.endpoint = r.Text(6);
  n.state = r.Text(7);
  auto stake = AmountAt(r, 8);
  if (!stake) return stake.take_error();
  n.stake = *stake;
  n.stake_id = TextOr(r, 9);
  auto slashed = AmountAt(r, 10);
  if (!slashed) return slashed.take_error();
  n.slashed = *slashed;
  n.reputation = static_cast<int>(r.Int(11));
  n.load = static_cast<int>(r.Int(12));
  n.running = static_cast<int>(r.Int(13));
  n.last_heartbeat_ms = r.Int(14);
  n.created_ms = r.Int(15);
  n.completed = r.Int(16);
  n.failed = r.Int(17);
  n.timed_out = r.Int(18);
  return n;
}

Result<Task> LoadTask(store::Tx& tx, std::string_view id, std::string_view requester) {
  std::string sql = "SELECT ";
  sql += kTaskColumns;
  sql += " FROM tasks WHERE id = $1";
  auto row = tx.QueryOne(sql, {Value{std::string(id)}});
  if (!row) return row.take_error();
  if (!*row) return Error::NotFound("task_not_found", "no task " + std::string(id));
  auto t = TaskFromRow(**row);
  if (!t) return t;
  if (!requester.empty() && t->requester != requester) {
    return Error::NotFound("task_not_found", "no task " + std::string(id));  // others' tasks do not exist
  }
  return t;
}

Result<Node> LoadOwnNode(store::Tx& tx, std::string_view node_id, std::string_view operator_id) {
  std::string sql = "SELECT ";
  sql += kNodeColumns;
  sql += " FROM nodes WHERE id = $1";
  auto row = tx.QueryOne(sql, {Value{std::string(node_id)}});
  if (!row) return row.take_error();
  if (!*row) return Error::NotFound("node_not_found", "no node " + std::string(node_id));
  auto n = NodeFromRow(**row);
  if (!n) return n;
  if (n->operator_id != operator_id) {
    return Error::PermissionDenied("node_not_yours", "node " + std::string(node_id) + " is run by another user");
  }
  return n;
}

std::string EscrowKey(const Task& t, std::string_view step) {
  std::string key = "task/" + t.id + "/" + std::string(step);
  if (t.retries > 0) {
    key += '/';
    key += std::to_string(t.retries);
  }
  return key;
}

namespace {

// The settings row, read once per transaction: a group commit's jobs share it.
struct SettingsCache final : store::TxState {
  Result<void> Flush(store::Tx&) override { return Ok(); }
  void Mark() override {}
  void RollbackToMark() override { settings.reset(); }  // it may have been changed since
  std::optional<Settings> settings;
};
const char kSettingsTag = 0;

Result<Settings> ReadSettings(store::Tx& tx);

}  // namespace

Result<Settings> LoadSettings(store::Tx& tx) {
  auto* cache = static_cast<SettingsCache*>(tx.State(&kSettingsTag));
  if (cache == nullptr)
    cache = static_cast<SettingsCache*>(&tx.AddState(&kSettingsTag, std::make_unique<SettingsCache>()));
  if (!cache->settings) {
    auto s = ReadSettings(tx);
    if (!s) return s;
    cache->settings = *s;
  }
  return *cache->settings;
}

void ForgetSettings(store::Tx& tx) {
  if (auto* cache = static_cast<SettingsCache*>(tx.State(&kSettingsTag))) cache->settings.reset();
}

namespace {

Result<Settings> ReadSettings(store::Tx& tx) {
  auto row = tx.QueryOne(
      "SELECT paused, min_stake, max_tasks_per_node, min_timeout_s, max_timeout_s FROM task_settings WHERE id = 1");
  if (!row) return row.take_error();
  if (!*row) return Error::Internal("tasks_settings_missing", "the task settings row is missing");
  Settings s;
  s.paused = (*row)->Int(0) != 0;
  auto stake = AmountAt(**row, 1);
  if (!stake) return stake.take_error();
  s.min_stake = *stake;
  s.max_tasks_per_node = static_cast<int>((*row)->Int(2));
  s.min_timeout_s = (*row)->Int(3);
  s.max_timeout_s = (*row)->Int(4);
  return s;
}

}  // namespace

std::string HistoryLine(int64_t ts_ms, std::string_view status, std::string_view node_id,
                        std::string_view detail_json) {
  std::string line = "[";
  line += std::to_string(ts_ms);
  line += ",";
  line += boost::json::serialize(boost::json::string(status));
  line += ",";
  line += node_id.empty() ? std::string("null") : boost::json::serialize(boost::json::string(node_id));
  line += ",";
  line += detail_json;
  line += "]\n";
  return line;
}

Result<void> AddEvent(store::Tx& tx, std::string_view task_id, int64_t ts_ms, std::string_view status,
                      std::string_view node_id, std::string detail_json) {
  // Sent without waiting: nothing reads its outcome.
  return tx.ExecLater("UPDATE tasks SET history = history || $2 WHERE id = $1",
                      {Value{std::string(task_id)}, Value{HistoryLine(ts_ms, status, node_id, detail_json)}});
}

Result<std::vector<TaskEvent>> ParseHistory(std::string_view history) {
  std::vector<TaskEvent> out;
  while (!history.empty()) {
    size_t end = history.find('\n');
    std::string_view line = history.substr(0, end);
    history.remove_prefix(end == std::string_view::npos ? history.size() : end + 1);
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    const boost::json::array* a = !ec && v.is_array() ? &v.as_array() : nullptr;
    if (!a || a->size() != 4 || !(*a)[0].is_int64() || !(*a)[1].is_string() ||
        !((*a)[2].is_string() || (*a)[2].is_null()) || !(*a)[3].is_object()) {
      return Error::Internal("history_corrupt", "a task's history holds an unreadable line");
    }
    out.push_back({static_cast<int>(out.size()) + 1, (*a)[0].as_int64(), std::string((*a)[1].as_string()),
                   (*a)[2].is_null() ? "" : std::string((*a)[2].as_string()), boost::json::serialize((*a)[3])});
  }
  return out;
}

bool IsJsonObject(std::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes) return false;
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  return !ec && v.is_object();
}

std::string JsonObject(std::initializer_list<std::pair<std::string_view, std::string>> string_fields) {
  boost::json::object o;
  for (const auto& [k, v] : string_fields) o[k] = v;
  return boost::json::serialize(o);
}

}  // namespace smart::tasks
