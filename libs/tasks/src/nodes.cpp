// Nodes (stake, heartbeats, deactivation), settings, and the sweeper that
// expires leases and notices dead nodes.
#include <boost/json.hpp>
#include <unordered_map>

#include "internal.hpp"
#include "smart/core/ids.hpp"
#include "smart/core/json_text.hpp"
#include "smart/core/thread_name.hpp"

namespace smart::tasks {
namespace {

using store::Value;

bool ValidName(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// How long a batch of heartbeats waits for more: the longer, the fewer
// commits (10,000 nodes: 2 a second instead of 20, each writing its pages of
// the nodes table once; ~14% of a core -> ~8% in bench/tasks/realtime.sh 4).
constexpr auto kBeatLinger = std::chrono::milliseconds(500);
constexpr auto kAwaitedBeatLinger = std::chrono::milliseconds(50);

std::string Status(const Node& n, int64_t now, int64_t offline_after_s) {
  if (n.state != "active") return n.state;
  return now - n.last_heartbeat_ms <= offline_after_s * 1000 ? "online" : "offline";
}

}  // namespace

Coordinator::Coordinator(store::Database& db, ledger::Ledger& ledger, TasksConfig config, const Clock& clock)
    : db_(db), ledger_(ledger), config_(std::move(config)), clock_(clock), writer_(db) {
  (void)writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto r = tx.Exec(
        "INSERT INTO task_settings (id, paused, min_stake, max_tasks_per_node, min_timeout_s, max_timeout_s) "
        "VALUES (1, 0, $1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        {Value{ledger::FormatAmount(config_.min_stake)}, Value{int64_t{config_.max_tasks_per_node}},
         Value{config_.min_timeout_s}, Value{config_.max_timeout_s}});
    if (!r) return r.take_error();
    return Ok();
  });
  sweeper_ = std::thread([this] {
    NameThread("task-sweeper");
    RunSweeper();
  });
  dispatcher_ = std::thread([this] {
    NameThread("task-dispatch");
    RunDispatcher();
  });
  beat_writer_ = std::thread([this] {
    NameThread("task-beats");
    RunBeatWriter();
  });
  // Other instances' new work (PostgreSQL): pushed and waiting claims here
  // get it at once, not at the dispatcher's next tick.
  listening_ = db_.Listen(std::string(kWorkChannel), [this] { WakeHere(); });
  freed_listening_ = db_.Listen(std::string(kFreedChannel), [this] { FreedPlaceHere(); });
}

Coordinator::~Coordinator() {
  listening_.reset();  // no wake-up from another instance from now on
  freed_listening_.reset();
  StopWaiting();
  sweeper_.join();
  dispatcher_.join();
  {
    std::lock_guard lk(beat_mu_);
    beats_stopping_ = true;  // what is queued is still written
  }
  beat_cv_.notify_all();
  beat_writer_.join();
}

void Coordinator::StopWaiting() {
  {
    std::lock_guard lk(wake_mu_);
    stopping_ = true;
  }
  sweep_cv_.notify_all();
  {
    std::lock_guard lk(push_mu_);
    push_stopping_ = true;
  }
  push_cv_.notify_all();
}

void Coordinator::RunSweeper() {
  std::unique_lock lk(wake_mu_);
  while (!stopping_) {
    if (config_.sweep_interval_ms <= 0) {
      sweep_cv_.wait(lk, [&] { return stopping_; });
      break;
    }
    if (sweep_cv_.wait_for(lk, std::chrono::milliseconds(config_.sweep_interval_ms), [&] { return stopping_; })) break;
    lk.unlock();
    (void)Sweep();  // a failure is retried at the next interval
    lk.lock();
  }
}

Result<Node> Coordinator::RegisterNode(std::string_view operator_id, const RegisterNodeRequest& req) {
  if (!ValidName(req.name)) return Error::Invalid("invalid_name", "name: 1 to 64 of [A-Za-z0-9._-]");
  if (req.capabilities.empty() || req.capabilities.size() > 32) {
    return Error::Invalid("invalid_capabilities", "capabilities: 1 to 32 task types");
  }
  boost::json::array caps;
  for (const auto& c : req.capabilities) {
    if (std::find(config_.types.begin(), config_.types.end(), c) == config_.types.end()) {
      return Error::Invalid("unknown_task_type", "capabilities: '" + c + "' is not a task type here");
    }
    caps.emplace_back(c);
  }
  if (req.capacity < 1 || req.capacity > 100) return Error::Invalid("invalid_capacity", "capacity: 1 to 100");
  if (!IsJsonObject(req.hardware, 4096))
    return Error::Invalid("invalid_hardware", "hardware: a JSON object of at most 4 KiB");
  if (req.endpoint.size() > 512 || !IsValidUtf8(req.endpoint) ||
      (!req.endpoint.empty() && !req.endpoint.starts_with("http://") && !req.endpoint.starts_with("https://"))) {
    return Error::Invalid("invalid_endpoint", "endpoint: an http(s) URL of at most 512 bytes");
  }
  const std::string id = MakeId("node");
  Node out;
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto taken = tx.QueryOne("SELECT id FROM nodes WHERE name = $1", {Value{req.name}});
    if (!taken) return taken.take_error();
    if (*taken) return Error::Conflict("node_name_taken", "name: another node is called " + req.name);
    auto settings = LoadSettings(tx);
    if (!settings) return settings.take_error();
    int64_t now = clock_.NowMs();
    std::string stake_id;
    if (settings->min_stake > 0) {
      ledger::TransferRequest hold{
          .key = "node/" + id + "/stake/0",
          .type = ledger::TransferType::kPending,
          .debit = {std::string(operator_id), std::string(ledger::kind::kAvailable), config_.asset},
          .credit = {std::string(ledger::kPlatform), std::string(ledger::kind::kStake), config_.asset},
          .amount = settings->min_stake,
          .code = "node_stake",
          .metadata = JsonObject({{"node_id", id}})};
      auto held = ledger_.ExecuteIn(tx, std::span(&hold, 1));
      if (!held) {
        Error e = held.take_error();
        if (e.code == "insufficient_funds") {
          e.message = "a node stakes " + ledger::FormatAmount(settings->min_stake) + " " + config_.asset +
                      " (base units); hold that much in your available balance";
        }
        return e;
      }
      stake_id = (*held)[0];
    }
    SMART_TRY(tx.Exec(
        "INSERT INTO nodes (id, operator_id, name, capabilities, capacity, hardware, endpoint, state, stake, stake_id, "
        "slashed, slashes, reputation, load, running, last_heartbeat_ms, created_ms, completed, failed, timed_out) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, '0', 0, 100, 0, 0, $10, $10, 0, 0, 0)",
        {Value{id}, Value{std::string(operator_id)}, Value{req.name}, Value{boost::json::serialize(caps)},
         Value{int64_t{req.capacity}}, Value{req.hardware}, Value{req.endpoint},
         Value{ledger::FormatAmount(settings->min_stake)}, stake_id.empty() ? Value{} : Value{stake_id}, Value{now}}));
    auto n = LoadOwnNode(tx, id, operator_id);
    if (!n) return n.take_error();
    out = std::move(n).value();
    out.status = Status(out, now, config_.offline_after_s);
    return Ok();
  }));
  if (on_node_update_) on_node_update_(out);
  return out;
}

Result<Node> Coordinator::GetNode(std::string_view id) {
  Node out;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    std::string sql = "SELECT ";
    sql += kNodeColumns;
    sql += " FROM nodes WHERE id = $1";
    auto row = tx.QueryOne(sql, {Value{std::string(id)}});
    if (!row) return row.take_error();
    if (!*row) return Error::NotFound("node_not_found", "no node " + std::string(id));
    auto n = NodeFromRow(**row);
    if (!n) return n.take_error();
    auto held = tx.QueryOne("SELECT COUNT(*) FROM tasks WHERE node_id = $1 AND status IN ('assigned', 'in_progress')",
                            {Value{n->id}});
    if (!held) return held.take_error();
    out = std::move(n).value();
    out.assigned = static_cast<int>((*held)->Int(0));
    out.status = Status(out, clock_.NowMs(), config_.offline_after_s);
    return Ok();
  }));
  return out;
}

Result<Page<Node>> Coordinator::ListNodes(int limit, std::string_view cursor) {
  Page<Node> page;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    page = {};
    std::string sql = "SELECT ";
    sql += kNodeColumns;
    sql += " FROM nodes WHERE id > $1 ORDER BY id LIMIT $2";
    auto rows = tx.Query(sql, {Value{std::string(cursor)}, Value{int64_t{limit} + 1}});
    if (!rows) return rows.take_error();
    int64_t now = clock_.NowMs();
    for (const auto& r : *rows) {
      auto n = NodeFromRow(r);
      if (!n) return n.take_error();
      n->status = Status(*n, now, config_.offline_after_s);
      page.items.push_back(std::move(n).value());
    }
    if (page.items.size() > static_cast<size_t>(limit)) {
      page.items.pop_back();
      page.next_cursor = page.items.back().id;
    }
    return Ok();
  }));
  return page;
}

Result<std::string> Coordinator::Heartbeat(std::string_view operator_id, std::string_view node_id, int load,
                                           int running) {
  return Wait<std::string>([&](Callback<std::string> done) {
    HeartbeatAsync(std::string(operator_id), std::string(node_id), load, running, BeatAnswer::kAwaited,
                   std::move(done));
  });
}

void Coordinator::HeartbeatAsync(std::string operator_id, std::string node_id, int load, int running, BeatAnswer answer,
                                 Callback<std::string> done) {
  if (load < 0 || load > 100) return done(Error::Invalid("invalid_load", "load: 0 to 100 (percent)"));
  if (running < 0 || running > 10000) return done(Error::Invalid("invalid_running", "running: 0 to 10000"));
  {
    std::lock_guard lk(beat_mu_);
    if (!beats_stopping_) {
      beats_.push_back({std::move(operator_id), std::move(node_id), load, running, std::move(done)});
      bool wake = beats_.size() == 1;
      if (answer == BeatAnswer::kAwaited && !beats_awaited_) wake = beats_awaited_ = true;
      if (wake) beat_cv_.notify_one();
      return;
    }
  }
  done(Error::Unavailable("stopping", "the coordinator is shutting down"));
}

void Coordinator::RunBeatWriter() {
  std::unique_lock lk(beat_mu_);
  while (true) {
    beat_cv_.wait(lk, [&] { return !beats_.empty() || beats_stopping_; });
    if (beats_.empty()) return;
    // Linger: the heartbeats arriving meanwhile share the commit.
    const auto first = std::chrono::steady_clock::now();
    beat_cv_.wait_until(lk, first + kBeatLinger, [&] { return beats_stopping_ || beats_awaited_; });
    beat_cv_.wait_until(lk, first + kAwaitedBeatLinger, [&] { return beats_stopping_; });
    auto batch = std::make_shared<std::vector<Beat>>(std::move(beats_));
    beats_.clear();
    beats_awaited_ = false;
    lk.unlock();
    struct Out {
      Result<std::string> status = Error::Internal("unset", "");
      std::optional<Node> changed;  // its status (online, offline, maintenance) changed: announced
    };
    auto outs = std::make_shared<std::vector<Out>>(batch->size());
    writer_.TransactAsync(
        [this, batch, outs](store::Tx& tx) -> Result<void> {
          int64_t now = clock_.NowMs();
          // A node's beats in one batch are one write, its latest; each beat
          // is answered with the result (however fast a node beats, it costs
          // at most one write per linger).
          std::unordered_map<std::string, size_t> latest;
          for (size_t i = 0; i < batch->size(); ++i) {
            latest[(*batch)[i].operator_id + '\n' + (*batch)[i].node_id] = i;
          }
          for (size_t i = 0; i < batch->size(); ++i) {
            const Beat& b = (*batch)[i];
            Out& out = (*outs)[i];
            if (latest[b.operator_id + '\n' + b.node_id] != i) continue;  // answered with its latest, below
            // The usual case in one statement: an active node of this
            // operator, online already (so online still, no news).
            auto fresh = tx.Exec(
                "UPDATE nodes SET last_heartbeat_ms = $2, load = $3, running = $4 WHERE id = $1 AND operator_id = $5 "
                "AND state = 'active' AND last_heartbeat_ms >= $6",
                {Value{b.node_id}, Value{now}, Value{int64_t{b.load}}, Value{int64_t{b.running}}, Value{b.operator_id},
                 Value{now - config_.offline_after_s * 1000}});
            if (!fresh) return fresh.take_error();
            if (*fresh == 1) {
              out.status = std::string("online");
              continue;
            }
            auto n = LoadOwnNode(tx, b.node_id, b.operator_id);
            if (!n) {
              out.status = n.take_error();
              continue;
            }
            if (n->state == "deactivated") {
              out.status = Error::Conflict("node_deactivated", "node " + n->id + " is deactivated");
              continue;
            }
            SMART_TRY(tx.Exec("UPDATE nodes SET last_heartbeat_ms = $2, load = $3, running = $4 WHERE id = $1",
                              {Value{n->id}, Value{now}, Value{int64_t{b.load}}, Value{int64_t{b.running}}}));
            const std::string before = Status(*n, now, config_.offline_after_s);
            n->last_heartbeat_ms = now;
            n->load = b.load;
            n->running = b.running;
            n->status = Status(*n, now, config_.offline_after_s);
            out.status = n->status;
            if (n->status != before) out.changed = std::move(n).value();
          }
          for (size_t i = 0; i < batch->size(); ++i) {
            size_t last = latest[(*batch)[i].operator_id + '\n' + (*batch)[i].node_id];
            if (last != i) (*outs)[i] = Out{.status = (*outs)[last].status};
          }
          return Ok();
        },
        [this, batch, outs](Result<void> r) {
          for (size_t i = 0; i < batch->size(); ++i) {
            Out& out = (*outs)[i];
            if (!r) {
              (*batch)[i].done(r.error());
              continue;
            }
            if (out.changed && on_node_update_) on_node_update_(*out.changed);
            (*batch)[i].done(std::move(out.status));
          }
        });
    lk.lock();
  }
}

Result<Node> Coordinator::Deactivate(std::string_view operator_id, std::string_view node_id) {
  Node out;
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto n = LoadOwnNode(tx, node_id, operator_id);
    if (!n) return n.take_error();
    if (n->state == "deactivated") return Error::Conflict("node_deactivated", "node " + n->id + " is deactivated");
    auto held = tx.QueryOne("SELECT COUNT(*) FROM tasks WHERE node_id = $1 AND status IN ('assigned', 'in_progress')",
                            {Value{n->id}});
    if (!held) return held.take_error();
    if ((*held)->Int(0) > 0) {
      return Error::Conflict("node_busy", "node " + n->id + " holds " + std::to_string((*held)->Int(0)) +
                                              " task(s); finish or fail them first");
    }
    if (!n->stake_id.empty()) {
      ledger::TransferRequest release{.key = "node/" + n->id + "/release",
                                      .type = ledger::TransferType::kVoid,
                                      .pending_id = n->stake_id,
                                      .code = "node_unstake"};
      SMART_TRY(ledger_.ExecuteIn(tx, std::span(&release, 1)));
    }
    SMART_TRY(
        tx.Exec("UPDATE nodes SET state = 'deactivated', stake = '0', stake_id = NULL WHERE id = $1", {Value{n->id}}));
    auto done = LoadOwnNode(tx, node_id, operator_id);
    if (!done) return done.take_error();
    out = std::move(done).value();
    out.status = "deactivated";
    return Ok();
  }));
  if (on_node_update_) on_node_update_(out);
  return out;
}

Result<Node> Coordinator::SetMaintenance(std::string_view operator_id, std::string_view node_id, bool on) {
  Node out;
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto n = LoadOwnNode(tx, node_id, operator_id);
    if (!n) return n.take_error();
    if (n->state == "deactivated") return Error::Conflict("node_deactivated", "node " + n->id + " is deactivated");
    SMART_TRY(tx.Exec("UPDATE nodes SET state = $2 WHERE id = $1",
                      {Value{n->id}, Value{std::string(on ? "maintenance" : "active")}}));
    out = std::move(n).value();
    out.state = on ? "maintenance" : "active";
    out.status = Status(out, clock_.NowMs(), config_.offline_after_s);
    return Ok();
  }));
  if (on_node_update_) on_node_update_(out);
  return out;
}

Result<Stats> Coordinator::GetStats() {
  Stats s;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    int64_t since = clock_.NowMs() - config_.offline_after_s * 1000;
    auto nodes = tx.QueryOne(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'active' AND last_heartbeat_ms >= $1 THEN 1 ELSE 0 END), 0) "
        "FROM nodes WHERE state <> 'deactivated'",
        {Value{since}});
    if (!nodes) return nodes.take_error();
    s.nodes_total = (*nodes)->Int(0);
    s.nodes_online = (*nodes)->Int(1);
    // Each count reads a partial index, and completions are the nodes' counters:
    // no scan of the whole task history (network_stats runs this every few seconds).
    auto count = [&](const char* sql) -> Result<int64_t> {
      auto row = tx.QueryOne(sql);
      if (!row) return row.take_error();
      return (*row)->Int(0);
    };
    auto pending = count("SELECT COUNT(*) FROM tasks WHERE status = 'pending'");
    auto running = count("SELECT COUNT(*) FROM tasks WHERE status IN ('assigned', 'in_progress')");
    // SUM(bigint) is numeric on PostgreSQL: cast back.
    auto completed = count("SELECT CAST(COALESCE(SUM(completed), 0) AS BIGINT) FROM nodes");
    auto failed = count("SELECT COUNT(*) FROM tasks WHERE status IN ('failed', 'timed_out')");
    for (auto* r : {&pending, &running, &completed, &failed}) {
      if (!*r) return r->error();
    }
    s.pending = *pending;
    s.running = *running;
    s.completed = *completed;
    s.failed = *failed;
    return Ok();
  }));
  return s;
}

Result<Settings> Coordinator::GetSettings() {
  Settings out;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto s = LoadSettings(tx);
    if (!s) return s.take_error();
    out = *s;
    return Ok();
  }));
  return out;
}

Result<Settings> Coordinator::UpdateSettings(const Settings& s) {
  if (s.max_tasks_per_node < 1 || s.max_tasks_per_node > 100) {
    return Error::Invalid("invalid_settings", "max_tasks_per_node: 1 to 100");
  }
  if (s.min_timeout_s < 1 || s.max_timeout_s > 86400 || s.min_timeout_s > s.max_timeout_s) {
    return Error::Invalid("invalid_settings", "min_timeout_s: 1 to max_timeout_s, max_timeout_s: at most 86400");
  }
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto r = tx.Exec(
        "UPDATE task_settings SET paused = $1, min_stake = $2, max_tasks_per_node = $3, min_timeout_s = $4, "
        "max_timeout_s = $5 WHERE id = 1",
        {Value{int64_t{s.paused}}, Value{ledger::FormatAmount(s.min_stake)}, Value{int64_t{s.max_tasks_per_node}},
         Value{s.min_timeout_s}, Value{s.max_timeout_s}});
    if (!r) return r.take_error();
    ForgetSettings(tx);
    return Ok();
  }));
  return GetSettings();
}

Result<void> Coordinator::Slash(store::Tx& tx, const Node& node) {
  ledger::Amount amount = node.stake * static_cast<unsigned>(config_.slash_pct) / 100;
  if (amount == 0 || node.stake_id.empty()) return Ok();
  auto slashes = tx.QueryOne("SELECT slashes FROM nodes WHERE id = $1", {Value{node.id}});
  if (!slashes) return slashes.take_error();
  const std::string base = "node/" + node.id + "/slash/" + std::to_string((*slashes)->Int(0) + 1);
  const std::string meta = JsonObject({{"node_id", node.id}});
  ledger::Amount rest = node.stake - amount;
  std::vector<ledger::TransferRequest> batch{{.key = base + "/post",
                                              .type = ledger::TransferType::kPost,
                                              .amount = amount,
                                              .pending_id = node.stake_id,
                                              .code = "node_slash"}};
  if (rest > 0) {
    batch.push_back({.key = base + "/rehold",
                     .type = ledger::TransferType::kPending,
                     .debit = {node.operator_id, std::string(ledger::kind::kAvailable), config_.asset},
                     .credit = {std::string(ledger::kPlatform), std::string(ledger::kind::kStake), config_.asset},
                     .amount = rest,
                     .code = "node_stake",
                     .metadata = meta});
  }
  batch.push_back({.key = base + "/take",
                   .debit = {std::string(ledger::kPlatform), std::string(ledger::kind::kStake), config_.asset},
                   .credit = {std::string(ledger::kPlatform), std::string(ledger::kind::kTreasury), config_.asset},
                   .amount = amount,
                   .code = "node_slash",
                   .metadata = meta});
  auto done = ledger_.ExecuteIn(tx, batch);
  if (!done) return done.take_error();
  SMART_TRY(tx.Exec("UPDATE nodes SET stake = $2, stake_id = $3, slashed = $4, slashes = slashes + 1 WHERE id = $1",
                    {Value{node.id}, Value{ledger::FormatAmount(rest)}, rest > 0 ? Value{(*done)[1]} : Value{},
                     Value{ledger::FormatAmount(node.slashed + amount)}}));
  return Ok();
}

Result<void> Coordinator::ExpireLease(std::string_view task_id) {
  bool requeued = false;
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto t = LoadTask(tx, task_id);
    if (!t) return t.take_error();
    int64_t now = clock_.NowMs();
    if ((t->status != "assigned" && t->status != "in_progress") || t->lease_expires_ms > now) return Ok();
    std::string sql = "SELECT ";
    sql += kNodeColumns;
    sql += " FROM nodes WHERE id = $1";
    auto row = tx.QueryOne(sql, {Value{t->node_id}});
    if (!row) return row.take_error();
    if (*row) {
      auto node = NodeFromRow(**row);
      if (!node) return node.take_error();
      SMART_TRY(tx.Exec(
          "UPDATE nodes SET timed_out = timed_out + 1, reputation = CASE WHEN reputation >= 50 THEN reputation - 50 "
          "ELSE 0 END WHERE id = $1",
          {Value{node->id}}));
      SMART_TRY(Slash(tx, *node));
    }
    SMART_TRY(AddEvent(tx, t->id, now, "timed_out", t->node_id, "{\"lease\":" + std::to_string(t->attempt) + "}"));
    requeued = t->failures + 1 < t->max_attempts;
    return Requeue(tx, *t, "timed_out", "the lease expired (timeout_s " + std::to_string(t->timeout_s) + ")", true,
                   now);
  }));
  if (requeued) {
    WakeClaimers();
  } else {
    FreedPlace();  // failed for good: a place under its requester's cap
  }
  NotifyById(task_id);
  return Ok();
}

Result<void> Coordinator::ReleaseLease(std::string_view task_id) {
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto t = LoadTask(tx, task_id);
    if (!t) return t.take_error();
    if (t->status != "assigned" && t->status != "in_progress") return Ok();
    int64_t now = clock_.NowMs();
    auto node = tx.QueryOne("SELECT last_heartbeat_ms FROM nodes WHERE id = $1", {Value{t->node_id}});
    if (!node) return node.take_error();
    if (*node && (*node)->Int(0) >= now - config_.offline_after_s * 1000) return Ok();  // it came back
    SMART_TRY(AddEvent(tx, t->id, now, "lease_lost", t->node_id, "{\"reason\":\"node offline\"}"));
    return Requeue(tx, *t, "failed", "", /*counts=*/false, now);
  }));
  WakeClaimers();
  NotifyById(task_id);
  return Ok();
}

Result<void> Coordinator::ExpireDeadline(std::string_view task_id) {
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto t = LoadTask(tx, task_id);
    if (!t) return t.take_error();
    int64_t now = clock_.NowMs();
    if (t->status != "pending" || t->deadline_ms == 0 || t->deadline_ms > now) return Ok();
    SMART_TRY(AddEvent(tx, t->id, now, "failed", "", "{\"error\":\"the deadline passed before a node took it\"}"));
    return Requeue(tx, *t, "failed", "the deadline passed before a node took it", /*counts=*/false, now);
  }));
  NotifyById(task_id);
  return Ok();
}

Result<void> Coordinator::Sweep() {
  int64_t now = clock_.NowMs();
  const int64_t offline_ms = config_.offline_after_s * 1000;
  // The first sweep of this process looks back one interval: a node that
  // fell silent while no smartd ran is not announced.
  int64_t last = last_sweep_ms_.load();
  if (last == 0) last = now - std::max<int64_t>(config_.sweep_interval_ms, 1);
  std::vector<std::string> expired, orphaned, overdue;
  // Active nodes whose last beat is older than offline_after_s, fallen
  // silent since the last sweep, and not announced for that beat yet.
  static constexpr std::string_view kSilent =
      " WHERE state = 'active' AND last_heartbeat_ms < $1 AND last_heartbeat_ms >= $2 "
      "AND silence_announced_ms <> last_heartbeat_ms";
  bool any_silent = false;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    expired.clear();
    orphaned.clear();
    overdue.clear();
    auto silent = tx.Query("SELECT 1 FROM nodes" + std::string(kSilent) + " LIMIT 1",
                           {Value{now - offline_ms}, Value{last - offline_ms}});
    if (!silent) return silent.take_error();
    any_silent = !silent->empty();
    auto rows = tx.Query(
        "SELECT id FROM tasks WHERE status IN ('assigned', 'in_progress') AND lease_expires_ms <= $1 LIMIT 500",
        {Value{now}});
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) expired.push_back(r.Text(0));
    rows = tx.Query(
        "SELECT t.id FROM tasks t JOIN nodes n ON n.id = t.node_id WHERE t.status IN ('assigned', 'in_progress') "
        "AND n.last_heartbeat_ms < $1 LIMIT 500",
        {Value{now - offline_ms}});
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) orphaned.push_back(r.Text(0));
    rows = tx.Query("SELECT id FROM tasks WHERE status = 'pending' AND deadline_ms > 0 AND deadline_ms <= $1 LIMIT 500",
                    {Value{now}});
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) overdue.push_back(r.Text(0));
    return Ok();
  }));
  // Each silence is announced once, by the instance whose sweep marks it
  // (every instance sharing the database sweeps; their writers take turns).
  std::vector<Node> gone;
  if (any_silent) {
    SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
      gone.clear();
      // One statement whose conditions PostgreSQL checks again on a row that
      // a heartbeat changed meanwhile: a node that just beat is not marked.
      auto marked = tx.Query("UPDATE nodes SET silence_announced_ms = last_heartbeat_ms" + std::string(kSilent) +
                                 " RETURNING " + std::string(kNodeColumns),
                             {Value{now - offline_ms}, Value{last - offline_ms}});
      if (!marked) return marked.take_error();
      for (const auto& r : *marked) {
        auto n = NodeFromRow(r);
        if (!n) return n.take_error();
        n->status = "offline";
        gone.push_back(std::move(n).value());
      }
      return Ok();
    }));
  }
  last_sweep_ms_ = now;
  if (on_node_update_) {
    for (const auto& n : gone) on_node_update_(n);
  }
  for (const auto& id : expired) SMART_TRY(ExpireLease(id));
  for (const auto& id : orphaned) SMART_TRY(ReleaseLease(id));
  for (const auto& id : overdue) SMART_TRY(ExpireDeadline(id));
  return Ok();
}

}  // namespace smart::tasks
