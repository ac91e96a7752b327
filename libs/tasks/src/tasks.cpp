// Tasks: submission with escrow, reads, cancel, and the leased lifecycle.
#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "internal.hpp"
#include "smart/core/crypto.hpp"
#include "smart/core/ids.hpp"
#include "smart/core/json_text.hpp"

namespace smart::tasks {
namespace {

using store::Value;
constexpr size_t kMaxParameters = 64 * 1024;
constexpr size_t kMaxMessage = 256;

constexpr int64_t kFairUnit = 1'000'000;  // a weight-1 requester's step in virtual time at normal priority
constexpr size_t kPriorities = static_cast<size_t>(Priority::kUrgent) + 1;  // a requester's lanes

// A task's step in virtual time: its requester's share (weight) times its
// priority's (low 1/2, normal 1, high 2, urgent 4) in its own lane.
int64_t FairStep(int weight, Priority priority) {
  return kFairUnit * 2 / (int64_t{weight} << static_cast<int>(priority));
}
constexpr int64_t kMaxScheduleMs = 30LL * 86400 * 1000;
constexpr int kMaxCredit = 1000;
constexpr int kHeadsRead = 256;  // requesters a claim reads past requesters at their cap, at most
constexpr size_t kMaxBatch = 100;

// What ends a node's older attachment when it attached again.
Error Reattached(const std::string& node_id) {
  return Error::Conflict("node_reattached",
                         "node " + node_id + " attached again from another connection; this one is ended");
}

// The text of a multi-row statement for `rows` rows (a power of two up to
// kMax), made by `make(rows)` once per size.
template <size_t kMax, class Make>
const std::string& ByChunk(size_t rows, Make make) {
  static const auto kTexts = store::PowersOfTwo(kMax, make);
  return kTexts[static_cast<size_t>(std::countr_zero(rows))];
}

// A submission's INSERT of `rows` tasks, each with kInsertColumns
// parameters.
constexpr size_t kInsertChunk = 64;
constexpr size_t kInsertColumns = 21;
const std::string& InsertTasks(size_t rows) {
  return ByChunk<kInsertChunk>(rows, [](size_t n) {
    return "INSERT INTO tasks (id, requester, type, input, input_is_json, parameters, priority, status, asset, cost, "
           "max_cost, timeout_s, max_attempts, attempt, failures, node_id, lease_expires_ms, progress, "
           "progress_message, escrow_id, idem_key, fingerprint, created_ms, updated_ms, completed_ms, fair_key, "
           "not_before_ms, deadline_ms, retries, replicas, history) VALUES " +
           store::ValuesRows(
               n, kInsertColumns, 1,
               "(?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?12, 0, 0, NULL, 0, 0, '', ?13, ?14, ?15, "
               "?16, ?16, 0, ?17, ?18, ?19, 0, ?20, ?21)");
  });
}

// A claim's assignment of `rows` tasks (a power of two up to kClaimChunk;
// a node holds at most 100): $1 the node, $2 the time, then the task ids.
// The history line is made in SQL, in HistoryLine's format (the lease is
// the row's); node ids are ours ([A-Za-z0-9_]), so they need no JSON
// escaping. $2 is typed BIGINT by the assignments before it (PostgreSQL
// infers a parameter's type where it is first used): keep the history last.
constexpr size_t kClaimChunk = 128;
const std::string& AssignTasks(size_t rows) {
  return ByChunk<kClaimChunk>(rows, [](size_t n) {
    std::string sql =
        "UPDATE tasks SET status = 'assigned', node_id = $1, attempt = attempt + 1, "
        "lease_expires_ms = CASE WHEN deadline_ms > 0 AND deadline_ms < $2 + timeout_s * 1000 THEN deadline_ms "
        "ELSE $2 + timeout_s * 1000 END, progress = 0, progress_message = '', updated_ms = $2, "
        "history = history || '[' || CAST($2 AS TEXT) || ',\"assigned\",\"' || $1 || '\",{\"lease\":' || "
        "CAST(attempt + 1 AS TEXT) || '}]\n' WHERE status = 'pending' AND id IN (";
    for (size_t i = 0; i < n; ++i) sql += (i ? ", $" : "$") + std::to_string(i + 3);
    return sql + ") RETURNING " + std::string(kTaskColumns);
  });
}

// Results of tasks (not replicas) completed `rows` at a time (a power of two
// up to kCompleteChunk): $1 the time, then per row the task, node, lease,
// output, proof, history line and operator. Only a row whose node holds the
// lease and is the operator's changes. The status test
// names v.column1 (a task id, never a status) so that PostgreSQL cannot use
// the partial indexes of active tasks, whose statistics go stale under churn
// (it scanned one per statement), and looks each task up by its key.
constexpr size_t kCompleteChunk = 32;
constexpr size_t kCompleteColumns = 7;
const std::string& CompleteTasks(size_t rows) {
  return ByChunk<kCompleteChunk>(rows, [](size_t n) {
    return "UPDATE tasks SET status = 'completed', output = v.column4, proof_hash = v.column5, progress = 100, "
           "updated_ms = $1, completed_ms = $1, lease_expires_ms = 0, history = history || v.column6 FROM (VALUES " +
           store::ValuesRows(n, kCompleteColumns, 2, "(?1, ?2, CAST(?3 AS BIGINT), ?4, ?5, ?6, ?7)") +
           ") AS v WHERE tasks.id = v.column1 AND tasks.node_id = v.column2 AND tasks.attempt = v.column3 AND "
           "tasks.status IN ('assigned', 'in_progress', v.column1) AND tasks.parent_id IS NULL AND EXISTS (SELECT 1 "
           "FROM nodes WHERE nodes.id = v.column2 AND nodes.operator_id = v.column7) RETURNING " +
           std::string(kTaskColumns);
  });
}

// Claims go to better nodes first: reputation, then lower load.
int64_t Score(const Node& n) { return int64_t{n.reputation} * 1000 + (100 - n.load); }

ledger::AccountRef Account(std::string owner, std::string_view kind, const std::string& asset) {
  return {std::move(owner), std::string(kind), asset};
}

std::string Fingerprint(const SubmitRequest& r) {
  std::string s;
  for (const std::string& f :
       {r.type, r.input, std::string(r.input_is_json ? "json" : "text"), r.parameters,
        std::string(ToString(r.priority)), r.max_cost ? ledger::FormatAmount(*r.max_cost) : std::string("-"),
        r.timeout_s ? std::to_string(*r.timeout_s) : std::string("-"), std::to_string(r.max_attempts),
        std::to_string(r.not_before_ms), std::to_string(r.deadline_ms)}) {
    s += std::to_string(f.size()) + ":" + f + ";";
  }
  if (r.replicas > 0) s += "replicas:" + std::to_string(r.replicas) + ";";  // (earlier keys stay valid)
  return crypto::Sha256Hex(s);
}

}  // namespace

Result<ledger::Amount> Coordinator::Estimate(std::string_view type, size_t input_bytes) const {
  if (std::find(config_.types.begin(), config_.types.end(), type) == config_.types.end()) {
    return Error::Invalid("unknown_task_type", "type: '" + std::string(type) + "' is not a task type here");
  }
  auto it = config_.prices.find(std::string(type));
  ledger::Amount price = it != config_.prices.end() ? it->second : config_.prices.at("other");
  // price per started 1,000 bytes, at least one unit
  ledger::Amount units = std::max<ledger::Amount>(1, (input_bytes + 999) / 1000);
  return price * units;
}

Result<Coordinator::Prepared> Coordinator::Prepare(const SubmitRequest& req) const {
  auto cost = Estimate(req.type, req.input.size());
  if (!cost) return cost.take_error();
  if (req.input.size() > config_.max_input_bytes) {
    return Error::Invalid("input_too_large", "input: at most " + std::to_string(config_.max_input_bytes) + " bytes");
  }
  if (!req.input_is_json && !IsValidUtf8(req.input)) return Error::Invalid("invalid_input", "input: not UTF-8 text");
  if (!IsJsonObject(req.parameters, kMaxParameters)) {
    return Error::Invalid("invalid_parameters", "parameters: a JSON object of at most 64 KiB");
  }
  if (req.max_attempts < 1 || req.max_attempts > 10) {
    return Error::Invalid("invalid_max_attempts", "max_attempts: 1 to 10");
  }
  if (req.replicas != 0 && (req.replicas < 2 || req.replicas > 3)) {
    return Error::Invalid("invalid_replicas", "replicas: 2 or 3 (or none)");
  }
  const ledger::Amount price = *cost;
  if (req.replicas > 0) *cost = price * static_cast<unsigned>(req.replicas + 1);  // the replicas and a tie-breaker
  if (req.max_cost && *cost > *req.max_cost) {
    return Error::Invalid("cost_exceeds_max", "max_cost: the task costs " + ledger::FormatAmount(*cost) + " " +
                                                  config_.asset + ", more than " + ledger::FormatAmount(*req.max_cost));
  }
  if (req.weight < 1 || req.weight > 100) return Error::Invalid("invalid_weight", "weight: 1 to 100");
  {
    int64_t now = clock_.NowMs();
    if (req.not_before_ms != 0 && req.not_before_ms > now + kMaxScheduleMs) {
      return Error::Invalid("invalid_not_before", "not_before: at most 30 days ahead");
    }
    if (req.deadline_ms != 0 &&
        (req.deadline_ms <= std::max(now, req.not_before_ms) || req.deadline_ms > now + kMaxScheduleMs)) {
      return Error::Invalid("invalid_deadline", "deadline: after now and after not_before, at most 30 days ahead");
    }
  }
  return Prepared{.cost = *cost, .price = price, .fingerprint = Fingerprint(req)};
}

Result<void> Coordinator::SubmitIn(store::Tx& tx, std::string_view requester, std::span<const SubmitRequest> reqs,
                                   std::span<const Prepared> prepared, std::span<const std::string> keys,
                                   std::span<const std::string> ids, std::span<Task> out) {
  const size_t n = reqs.size();
  // A batch names the task an error is about.
  auto about = [n](size_t i, Error e) {
    if (n > 1) e.message = "tasks[" + std::to_string(i) + "]: " + e.message;
    return e;
  };
  // Replays of an idempotent submission first: they hold and write nothing.
  std::vector<size_t> fresh;
  for (size_t i = 0; i < n; ++i) {
    if (!keys[i].empty()) {
      auto existing = tx.QueryOne("SELECT id, fingerprint FROM tasks WHERE idem_key = $1", {Value{keys[i]}});
      if (!existing) return existing.take_error();
      if (*existing) {
        if ((*existing)->Text(1) != prepared[i].fingerprint) {
          return about(i, Error::Conflict("idempotency_key_reused", "Idempotency-Key: already used for task " +
                                                                        (*existing)->Text(0) + " with another body"));
        }
        auto t = LoadTask(tx, (*existing)->Text(0));
        if (!t) return t.take_error();
        out[i] = std::move(t).value();
        out[i].replayed = true;
        continue;
      }
    }
    fresh.push_back(i);
  }
  if (fresh.empty()) return Ok();
  auto settings = LoadSettings(tx);
  if (!settings) return settings.take_error();
  if (settings->paused) return Error::Conflict("submissions_paused", "the network is not taking new tasks now");
  std::vector<int64_t> timeouts(n);
  std::array<int64_t, kPriorities> steps{};  // per priority: each is a lane of its own
  ledger::Amount total = 0;
  std::vector<ledger::TransferRequest> holds;
  for (size_t i : fresh) {
    timeouts[i] = reqs[i].timeout_s.value_or(
        std::clamp(config_.default_timeout_s, settings->min_timeout_s, settings->max_timeout_s));
    if (timeouts[i] < settings->min_timeout_s || timeouts[i] > settings->max_timeout_s) {
      return about(i, Error::Invalid("invalid_timeout", "timeout_s: " + std::to_string(settings->min_timeout_s) +
                                                            " to " + std::to_string(settings->max_timeout_s)));
    }
    steps[static_cast<size_t>(reqs[i].priority)] += FairStep(reqs[i].weight, reqs[i].priority);
    total += prepared[i].cost;
    holds.push_back({.key = "task/" + ids[i] + "/escrow",
                     .type = ledger::TransferType::kPending,
                     .debit = Account(std::string(requester), ledger::kind::kAvailable, config_.asset),
                     .credit = Account(std::string(ledger::kPlatform), ledger::kind::kEscrow, config_.asset),
                     .amount = prepared[i].cost,
                     .code = "task_escrow",
                     .metadata = JsonObject({{"task_id", ids[i]}}),
                     .new_key = true});  // the task is new in this transaction
  }
  // Places in fair queueing, one after another in each lane, and the
  // escrows: one statement each for the lot (and each lane used).
  std::array<int64_t, kPriorities> fair_keys{};
  for (size_t p = 0; p < steps.size(); ++p) {
    if (steps[p] == 0) continue;
    auto last_key = FairKey(tx, requester, static_cast<Priority>(p), steps[p]);
    if (!last_key) return last_key.take_error();
    fair_keys[p] = *last_key - steps[p];
  }
  auto held = ledger_.ExecuteIn(tx, holds);
  if (!held) {
    Error e = held.take_error();
    if (e.code == "insufficient_funds") {
      e.message = (fresh.size() == 1 ? "the task costs " : "the " + std::to_string(fresh.size()) + " tasks cost ") +
                  ledger::FormatAmount(total) + " " + config_.asset + (fresh.size() == 1 ? "" : " in all") +
                  " (base units); hold that much in your available balance";
    }
    return e;
  }
  // The rows in chunks of 64, 32, ... 1 tasks: one statement per chunk, each
  // size's text prepared once, sent without waiting for it (PostgreSQL's
  // pipeline; a failed insert fails the transaction). The answers are the
  // rows as written, made here rather than read back.
  const int64_t now = clock_.NowMs();
  std::vector<Value> params;
  for (size_t h = 0; h < fresh.size();) {
    const size_t rows = std::bit_floor(std::min(fresh.size() - h, kInsertChunk));
    params.clear();
    params.reserve(rows * kInsertColumns);
    for (size_t k = h; k < h + rows; ++k) {
      const size_t i = fresh[k];
      const SubmitRequest& req = reqs[i];
      int64_t& fair_key = fair_keys[static_cast<size_t>(req.priority)];
      fair_key += FairStep(req.weight, req.priority);
      Task& t = out[i];
      t = Task{.id = ids[i],
               .requester = std::string(requester),
               .type = req.type,
               .input = req.input,
               .input_is_json = req.input_is_json,
               .parameters = req.parameters,
               .priority = req.priority,
               .status = "pending",
               .asset = config_.asset,
               .cost = prepared[i].cost,
               .max_cost = req.max_cost,
               .timeout_s = timeouts[i],
               .max_attempts = req.max_attempts,
               .escrow_id = (*held)[k],
               .created_ms = now,
               .updated_ms = now,
               .not_before_ms = req.not_before_ms,
               .deadline_ms = req.deadline_ms,
               .replicas = req.replicas};
      std::string cost = ledger::FormatAmount(t.cost);
      std::string history = HistoryLine(now, "pending", "", JsonObject({{"cost", cost}}));
      params.emplace_back(t.id);
      params.emplace_back(t.requester);
      params.emplace_back(t.type);
      params.emplace_back(t.input);
      params.emplace_back(int64_t{t.input_is_json});
      params.emplace_back(t.parameters);
      params.emplace_back(static_cast<int64_t>(t.priority));
      params.emplace_back(t.asset);
      params.emplace_back(std::move(cost));
      if (t.max_cost) {  // (not a conditional expression of two Values: GCC 12 warns of one uninitialized)
        params.emplace_back(ledger::FormatAmount(*t.max_cost));
      } else {
        params.emplace_back();
      }
      params.emplace_back(t.timeout_s);
      params.emplace_back(int64_t{t.max_attempts});
      params.emplace_back(t.escrow_id);
      params.push_back(keys[i].empty() ? Value{} : Value{keys[i]});
      params.emplace_back(prepared[i].fingerprint);
      params.emplace_back(now);
      params.emplace_back(fair_key);
      params.emplace_back(t.not_before_ms);
      params.emplace_back(t.deadline_ms);
      params.emplace_back(int64_t{t.replicas});
      params.emplace_back(std::move(history));
    }
    SMART_TRY(tx.ExecLater(InsertTasks(rows), params));
    h += rows;
  }
  for (size_t i : fresh) {
    for (int r = 0; r < reqs[i].replicas; ++r) SMART_TRY(AddReplica(tx, ids[i], prepared[i].price, now));
  }
  return Ok();
}

// A requester's single submissions taken by one writer job, in arrays for
// SubmitIn (moved from their items once, as the job may run more than once).
struct Coordinator::SubmitRun {
  std::string requester;
  std::vector<SubmitRequest> reqs;
  std::vector<Prepared> prepared;
  std::vector<std::string> keys, ids;
  std::vector<Callback<Task>> done;
  std::vector<Task> out;
  bool taken = false;
};

Result<Task> Coordinator::Submit(std::string_view requester, const SubmitRequest& req,
                                 std::string_view idempotency_key) {
  return Wait<Task>([&](Callback<Task> done) { SubmitAsync(requester, req, idempotency_key, std::move(done)); });
}

void Coordinator::SubmitAsync(std::string_view requester, const SubmitRequest& req, std::string_view idempotency_key,
                              Callback<Task> done) {
  auto prepared = Prepare(req);
  if (!prepared) return done(prepared.take_error());
  SubmitItem item{.req = req,
                  .prepared = std::move(prepared).value(),
                  .key = idempotency_key.empty() ? "" : std::string(requester) + "/" + std::string(idempotency_key),
                  .id = MakeId("task"),
                  .done = std::move(done)};
  bool first = false;
  {
    std::lock_guard lk(submits_mu_);
    auto& waiting = submits_[std::string(requester)];
    first = waiting.empty();  // else the job queued for them takes this too
    waiting.push_back(std::move(item));
  }
  if (first) QueueSubmits(std::string(requester));
}

void Coordinator::QueueSubmits(const std::string& requester) {
  // Taken when the job first runs (it may run again, after a refusal
  // elsewhere in its group), or when it is answered without running (the
  // writer is stopping).
  auto run = std::make_shared<SubmitRun>();
  run->requester = requester;
  auto take = [this, run] {
    if (run->taken) return;
    std::vector<SubmitItem> items;
    {
      std::lock_guard lk(submits_mu_);
      auto it = submits_.find(run->requester);
      items.swap(it->second);
      submits_.erase(it);
    }
    for (SubmitItem& item : items) {
      run->reqs.push_back(std::move(item.req));
      run->prepared.push_back(std::move(item.prepared));
      run->keys.push_back(std::move(item.key));
      run->ids.push_back(std::move(item.id));
      run->done.push_back(std::move(item.done));
    }
    run->out.resize(items.size());
    run->taken = true;
  };
  writer_.TransactAsync(
      [this, run, take](store::Tx& tx) -> Result<void> {
        take();
        return SubmitIn(tx, run->requester, run->reqs, run->prepared, run->keys, run->ids, run->out);
      },
      [this, run, take](Result<void> r) {
        take();
        const size_t n = run->reqs.size();
        if (!r && n > 1) {
          for (size_t i = 0; i < n; ++i) SubmitAlone(run, i);  // each for its own answer
          return;
        }
        if (r) {
          if (n > 1) submitted_together_.fetch_add(n);
          WakeClaimers();
        }
        for (size_t i = 0; i < n; ++i) AnswerSubmit(*run, i, r);
      });
}

void Coordinator::AnswerSubmit(SubmitRun& run, size_t i, const Result<void>& r) {
  if (!r) return run.done[i](r.error());
  if (!run.out[i].replayed) Notify(run.out[i]);
  run.done[i](std::move(run.out[i]));
}

void Coordinator::SubmitAlone(std::shared_ptr<SubmitRun> run, size_t i) {
  writer_.TransactAsync(
      [this, run, i](store::Tx& tx) -> Result<void> {
        return SubmitIn(tx, run->requester, std::span(&run->reqs[i], 1), std::span(&run->prepared[i], 1),
                        std::span(&run->keys[i], 1), std::span(&run->ids[i], 1), std::span(&run->out[i], 1));
      },
      [this, run, i](Result<void> r) {
        if (r && !run->out[i].replayed) WakeClaimers();
        AnswerSubmit(*run, i, r);
      });
}

Result<std::vector<Task>> Coordinator::SubmitBatch(std::string_view requester, const std::vector<SubmitRequest>& reqs,
                                                   std::string_view idempotency_key) {
  return Wait<std::vector<Task>>(
      [&](Callback<std::vector<Task>> done) { SubmitBatchAsync(requester, reqs, idempotency_key, std::move(done)); });
}

void Coordinator::SubmitBatchAsync(std::string_view requester, std::vector<SubmitRequest> reqs,
                                   std::string_view idempotency_key, Callback<std::vector<Task>> done) {
  if (reqs.empty() || reqs.size() > kMaxBatch) {
    return done(Error::Invalid("invalid_batch", "tasks: 1 to " + std::to_string(kMaxBatch) + " tasks"));
  }
  auto run = std::make_shared<SubmitRun>();
  run->requester = requester;
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto p = Prepare(reqs[i]);
    if (!p) {
      Error e = p.take_error();
      e.message = "tasks[" + std::to_string(i) + "]." + e.message;  // "tasks[3].type: ..."
      return done(std::move(e));
    }
    run->prepared.push_back(std::move(p).value());
    run->ids.push_back(MakeId("task"));
    run->keys.push_back(idempotency_key.empty()
                            ? ""
                            : std::string(requester) + "/" + std::string(idempotency_key) + "/" + std::to_string(i));
  }
  run->out.resize(reqs.size());
  run->reqs = std::move(reqs);
  writer_.TransactAsync(
      [this, run](store::Tx& tx) -> Result<void> {  // all of them or none
        return SubmitIn(tx, run->requester, run->reqs, run->prepared, run->keys, run->ids, run->out);
      },
      [this, run, done = std::move(done)](Result<void> r) {
        if (!r) return done(r.error());
        WakeClaimers();
        for (const auto& t : run->out) {
          if (!t.replayed) Notify(t);
        }
        done(std::move(run->out));
      });
}

Result<Task> Coordinator::Get(std::string_view requester, std::string_view id, std::vector<TaskEvent>* history) {
  Task out;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto t = LoadTask(tx, id, requester);
    if (!t) return t.take_error();
    out = std::move(t).value();
    if (!history) return Ok();
    auto row = tx.QueryOne("SELECT history FROM tasks WHERE id = $1", {Value{out.id}});
    if (!row) return row.take_error();
    auto events = ParseHistory(*row ? std::string_view((*row)->Text(0)) : std::string_view());
    if (!events) return events.take_error();
    *history = std::move(events).value();
    return Ok();
  }));
  return out;
}

Result<Page<Task>> Coordinator::List(std::string_view requester, const TaskFilter& filter, int limit,
                                     std::string_view cursor) {
  Page<Task> page;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    page = {};
    std::string sql = "SELECT ";
    sql += kTaskColumns;
    sql += " FROM tasks WHERE requester = $1 AND parent_id IS NULL";
    std::vector<Value> params{Value{std::string(requester)}};
    if (!cursor.empty()) {
      params.emplace_back(std::string(cursor));
      sql += " AND id < $" + std::to_string(params.size());
    }
    if (filter.status) {
      params.emplace_back(*filter.status);
      sql += " AND status = $" + std::to_string(params.size());
    }
    if (filter.type) {
      params.emplace_back(*filter.type);
      sql += " AND type = $" + std::to_string(params.size());
    }
    if (filter.dead_letters) sql += " AND status IN ('failed', 'timed_out')";
    params.emplace_back(int64_t{limit} + 1);
    sql += " ORDER BY id DESC LIMIT $" + std::to_string(params.size());
    auto rows = tx.Query(sql, params);
    if (!rows) return rows.take_error();
    for (const auto& r : *rows) {
      auto t = TaskFromRow(r);
      if (!t) return t.take_error();
      page.items.push_back(std::move(t).value());
    }
    if (page.items.size() > static_cast<size_t>(limit)) {
      page.items.pop_back();
      page.next_cursor = page.items.back().id;
    }
    return Ok();
  }));
  return page;
}

Result<Task> Coordinator::Cancel(std::string_view requester, std::string_view id) {
  Task out;
  std::vector<std::string> replicas;  // cancelled with it: their nodes hear of it too
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    replicas.clear();
    auto t = LoadTask(tx, id, requester);
    if (!t) return t.take_error();
    if (t->Final()) return Error::Conflict("task_final", "task " + t->id + " is already " + t->status);
    if (!t->parent_id.empty()) {
      return Error::Conflict("task_is_replica", "task " + t->id + " is a replica; cancel task " + t->parent_id);
    }
    int64_t now = clock_.NowMs();
    if (t->replicas > 0) {  // its replicas end with it
      auto ended = tx.Query(
          "UPDATE tasks SET status = 'cancelled', updated_ms = $2, completed_ms = $2, lease_expires_ms = 0 "
          "WHERE parent_id = $1 AND status IN ('pending', 'assigned', 'in_progress') RETURNING id",
          {Value{t->id}, Value{now}});
      if (!ended) return ended.take_error();
      for (const auto& row : *ended) replicas.push_back(row.Text(0));
    }
    ledger::TransferRequest release{.key = EscrowKey(*t, "void"),
                                    .type = ledger::TransferType::kVoid,
                                    .pending_id = t->escrow_id,
                                    .code = "task_refund"};
    SMART_TRY(ledger_.ExecuteIn(tx, std::span(&release, 1)));
    SMART_TRY(tx.Exec(
        "UPDATE tasks SET status = 'cancelled', updated_ms = $2, completed_ms = $2, lease_expires_ms = 0 WHERE id = $1",
        {Value{t->id}, Value{now}}));
    SMART_TRY(AddEvent(tx, t->id, now, "cancelled", t->node_id));
    auto done = LoadTask(tx, id);
    if (!done) return done.take_error();
    out = std::move(done).value();
    return Ok();
  }));
  FreedPlace();  // it may have been running
  Notify(out);
  for (const auto& replica : replicas) NotifyById(replica);
  return out;
}

Result<void> Coordinator::ClaimIn(store::Tx& tx, std::string_view operator_id, std::string_view node_id, int max,
                                  const std::vector<std::string>* holding, std::vector<Task>& claimed, Node& claimer,
                                  std::set<std::string>* capped, Fence* fence) {
  const bool postgres = db_.backend() == "postgresql";
  claimed.clear();
  auto node = LoadOwnNode(tx, node_id, operator_id);
  if (!node) return node.take_error();
  claimer = *node;
  if (node->state == "deactivated") return Error::Conflict("node_deactivated", "node " + node->id + " is deactivated");
  int64_t now = clock_.NowMs();
  if (!fence) {
    SMART_TRY(tx.Exec("UPDATE nodes SET last_heartbeat_ms = $2 WHERE id = $1", {Value{node->id}, Value{now}}));
  } else if (fence->take) {
    auto epoch = tx.QueryOne(
        "UPDATE nodes SET last_heartbeat_ms = $2, attach_epoch = attach_epoch + 1 WHERE id = $1 RETURNING attach_epoch",
        {Value{node->id}, Value{now}});
    if (!epoch) return epoch.take_error();
    fence->epoch = (*epoch)->Int(0);
  } else {
    // The writers of every instance run one at a time (PostgreSQL: their
    // advisory lock), so a newer attachment's first claim is wholly before or
    // after this one: before, and this one stops here; after, and it sees
    // what this one assigns (and sends it again, not being in its `holding`).
    auto still = tx.Exec("UPDATE nodes SET last_heartbeat_ms = $2 WHERE id = $1 AND attach_epoch = $3",
                         {Value{node->id}, Value{now}, Value{fence->epoch}});
    if (!still) return still.take_error();
    if (*still == 0) return Reattached(node->id);
  }
  if (node->state != "active") return Ok();
  auto settings = LoadSettings(tx);
  if (!settings) return settings.take_error();
  auto held = tx.QueryOne("SELECT COUNT(*) FROM tasks WHERE node_id = $1 AND status IN ('assigned', 'in_progress')",
                          {Value{node->id}});
  if (!held) return held.take_error();
  if (holding) {
    std::string sql = "SELECT ";
    sql += kTaskColumns;
    sql += " FROM tasks WHERE node_id = $1 AND status = 'assigned'";
    auto mine = tx.Query(sql, {Value{node->id}});
    if (!mine) return mine.take_error();
    for (const auto& r : *mine) {
      auto t = TaskFromRow(r);
      if (!t) return t.take_error();
      if (std::find(holding->begin(), holding->end(), t->id) != holding->end()) continue;
      SMART_TRY(AddEvent(tx, t->id, now, "redelivered", node->id, "{\"lease\":" + std::to_string(t->attempt) + "}"));
      claimed.push_back(std::move(t).value());
    }
    if (!claimed.empty()) return Ok();  // the lost ones first, alone
  }
  int free = std::min(node->capacity, settings->max_tasks_per_node) - static_cast<int>((*held)->Int(0));
  int want = std::min(max, free);
  if (want <= 0 || node->capabilities.empty()) return Ok();
  // The head of the queue of each type the node runs (the tasks_ready index
  // is by type first, so a backlog of other types is never walked), merged
  // in queue order: fair-queueing key, then priority, then age; chosen in
  // that order within the per-requester cap, then assigned by one statement.
  const int64_t limit = int64_t{want} * 4 + 8;
  std::string sql =
      "SELECT id, requester, fair_key, parent_id, priority, created_ms, type FROM tasks WHERE status = 'pending' "
      "AND type = $1 AND replicas = 0 AND not_before_ms <= $2 ORDER BY fair_key, priority DESC, created_ms LIMIT $3";
  if (postgres) sql += " FOR UPDATE SKIP LOCKED";  // instances claiming at once take different tasks
  const std::set<std::string> types(node->capabilities.begin(), node->capabilities.end());
  auto in_queue_order = [](std::vector<store::Row>& rows) {
    std::stable_sort(rows.begin(), rows.end(), [](const store::Row& a, const store::Row& b) {
      if (a.Int(2) != b.Int(2)) return a.Int(2) < b.Int(2);
      if (a.Int(4) != b.Int(4)) return a.Int(4) > b.Int(4);
      return a.Int(5) < b.Int(5);
    });
  };
  std::vector<store::Row> head;
  for (const auto& type : types) {
    auto rows = tx.Query(sql, {Value{type}, Value{now}, Value{limit}});
    if (!rows) return rows.take_error();
    for (auto& r : *rows) head.push_back(std::move(r));
  }
  if (types.size() > 1) {
    in_queue_order(head);
    if (static_cast<int64_t>(head.size()) > limit) head.erase(head.begin() + limit, head.end());
  }
  std::map<std::string, int64_t> in_flight;  // per requester
  auto requester_in_flight = [&](const std::string& requester) -> Result<int64_t*> {
    auto [it, fresh] = in_flight.try_emplace(requester, 0);
    if (fresh) {
      auto n = tx.QueryOne("SELECT COUNT(*) FROM tasks WHERE requester = $1 AND status IN ('assigned', 'in_progress')",
                           {Value{requester}});
      if (!n) return n.take_error();
      it->second = (*n)->Int(0);
    }
    return &it->second;
  };
  std::set<std::string> parents;  // replicas chosen: never two of one task on the same node
  std::vector<const store::Row*> chosen;
  std::set<std::string> at_cap;  // types with a task skipped for its requester's cap
  bool for_others = false;       // a task skipped that another node could take
  auto choose = [&](const std::vector<store::Row>& rows) -> Result<void> {
    for (const auto& c : rows) {
      if (static_cast<int>(chosen.size()) >= want) break;
      auto n = requester_in_flight(c.Text(1));
      if (!n) return n.take_error();
      if (**n >= config_.max_per_requester) {
        at_cap.insert(c.Text(6));
        continue;
      }
      if (!c.IsNull(3)) {
        bool sibling_here = parents.contains(c.Text(3));
        if (!sibling_here) {
          auto sibling = tx.QueryOne("SELECT 1 FROM tasks WHERE parent_id = $1 AND node_id = $2 LIMIT 1",
                                     {c.at(3), Value{node->id}});
          if (!sibling) return sibling.take_error();
          sibling_here = sibling->has_value();
        }
        if (sibling_here) {
          for_others = true;
          continue;
        }
        auto started =
            tx.Exec("UPDATE tasks SET status = 'in_progress', updated_ms = $2 WHERE id = $1 AND status = 'pending'",
                    {c.at(3), Value{now}});
        if (!started) return started.take_error();
        if (*started == 1) SMART_TRY(AddEvent(tx, c.Text(3), now, "in_progress", node->id));
        parents.insert(c.Text(3));
      }
      ++**n;
      chosen.push_back(&c);
    }
    return Ok();
  };
  SMART_TRY(choose(head));
  // A full head that gave less than wanted for requesters at their cap may
  // hide others' tasks: a capped requester's backlog stays at the head while
  // the others are served and the virtual time moves on, so a page of it can
  // stand before every task submitted since. Then the claim looks past it:
  // one statement lists up to kHeadsRead requesters with pending tasks of
  // the type (an index seek each, tasks_backlog), each with its running count
  // and its first claimable key, in turn from where the last such claim of
  // the type stopped (heads_from_); the heads of the `left` best not at
  // their cap are read (no other requester's task can be among the `left`
  // best), and chosen from in queue order. What a claim costs is bounded,
  // not the number of requesters waiting, and each is looked at in turn.
  std::vector<store::Row> others;
  if (static_cast<int>(chosen.size()) < want && static_cast<int64_t>(head.size()) >= limit && !at_cap.empty()) {
    std::set<std::string_view> seen;
    for (const store::Row* c : chosen) seen.insert(c->Text(0));
    const int64_t left = want - static_cast<int64_t>(chosen.size());
    std::string heads =
        "SELECT id, requester, fair_key, parent_id, priority, created_ms, type FROM tasks WHERE status = 'pending' "
        "AND type = $1 AND requester = $2 AND replicas = 0 AND not_before_ms <= $3 "
        "ORDER BY fair_key, priority DESC, created_ms LIMIT $4";
    if (postgres) heads += " FOR UPDATE SKIP LOCKED";
    for (const auto& type : types) {
      auto list = [&](const std::string& after, int64_t n) {
        return tx.Query(
            "WITH RECURSIVE r (requester, n) AS ("
            " SELECT (SELECT requester FROM tasks WHERE status = 'pending' AND type = $1 AND requester > $2"
            "  ORDER BY requester LIMIT 1), 1"
            " UNION ALL"
            " SELECT (SELECT t.requester FROM tasks t WHERE t.status = 'pending' AND t.type = $1"
            "  AND t.requester > r.requester ORDER BY t.requester LIMIT 1), r.n + 1"
            " FROM r WHERE r.requester IS NOT NULL AND r.n < $3) "
            "SELECT r.requester,"
            " (SELECT COUNT(*) FROM tasks a WHERE a.requester = r.requester AND a.status IN ('assigned', "
            "'in_progress')),"
            " (SELECT MIN(h.fair_key) FROM tasks h WHERE h.status = 'pending' AND h.type = $1"
            "  AND h.requester = r.requester AND h.replicas = 0 AND h.not_before_ms <= $4) "
            "FROM r WHERE r.requester IS NOT NULL",
            {Value{type}, Value{after}, Value{n}, Value{now}});
      };
      // From where the last claim stopped to the end, then from the start to there.
      std::string& from = heads_from_[type];
      auto listed = list(from, kHeadsRead);
      if (!listed) return listed.take_error();
      std::vector<store::Row> waiting = std::move(listed).value();
      const size_t to_end = waiting.size();
      if (!from.empty() && to_end < static_cast<size_t>(kHeadsRead)) {
        auto again = list("", kHeadsRead - static_cast<int64_t>(to_end));
        if (!again) return again.take_error();
        for (auto& r : *again) {
          if (r.Text(0) > from) break;
          waiting.push_back(std::move(r));
        }
      }
      from = waiting.size() >= static_cast<size_t>(kHeadsRead) ? waiting.back().Text(0) : std::string();
      std::vector<std::pair<int64_t, const std::string*>> best;  // first claimable key, requester
      for (const auto& w : waiting) {
        auto it = in_flight.try_emplace(w.Text(0), w.Int(1)).first;
        if (w.IsNull(2) || it->second >= config_.max_per_requester) continue;
        best.emplace_back(w.Int(2), &w.Text(0));
      }
      std::sort(best.begin(), best.end());
      if (static_cast<int64_t>(best.size()) > left) best.resize(static_cast<size_t>(left));
      for (const auto& [key, requester] : best) {
        auto rows = tx.Query(heads, {Value{type}, Value{*requester}, Value{now}, Value{left}});
        if (!rows) return rows.take_error();
        for (auto& r : *rows) {
          if (!seen.contains(r.Text(0))) others.push_back(std::move(r));
        }
      }
    }
    in_queue_order(others);
    SMART_TRY(choose(others));
  }
  if (capped && static_cast<int>(chosen.size()) < want && !for_others) *capped = std::move(at_cap);
  if (chosen.empty()) return Ok();
  // As many placeholders as the next power of two (the last id repeated), so
  // that a handful of statement texts serve every claim size.
  const size_t slots = std::bit_ceil(chosen.size());
  if (slots > kClaimChunk) return Error::Internal("claim_too_large", "a claim chose more tasks than a node may hold");
  std::vector<Value> params{Value{node->id}, Value{now}};
  for (size_t i = 0; i < slots; ++i) params.push_back(chosen[std::min(i, chosen.size() - 1)]->at(0));
  const std::string& sql_assign = AssignTasks(slots);
  auto rows = tx.Query(sql_assign, params);
  if (!rows) return rows.take_error();
  std::map<std::string_view, Task> assigned;
  for (const auto& r : *rows) {
    auto t = TaskFromRow(r);
    if (!t) return t.take_error();
    std::string_view id = r.Text(0);
    assigned.emplace(id, std::move(t).value());
  }
  int64_t max_key = 0;
  for (const store::Row* c : chosen) {  // in queue order
    auto it = assigned.find(c->Text(0));
    if (it == assigned.end()) continue;
    Task& t = it->second;
    max_key = std::max(max_key, c->Int(2));
    claimed.push_back(std::move(t));
  }
  // Virtual time advances to the work handed out: later submissions queue from here.
  if (max_key > 0) {
    SMART_TRY(tx.Exec("UPDATE task_clock SET vtime = $1 WHERE id = 1 AND vtime < $1", {Value{max_key}}));
  }
  return Ok();
}

Result<std::vector<Task>> Coordinator::Claim(std::string_view operator_id, std::string_view node_id, int max,
                                             int64_t wait_ms, const std::vector<std::string>* holding) {
  return Wait<std::vector<Task>>([&](Callback<std::vector<Task>> done) {
    ClaimAsync(std::string(operator_id), std::string(node_id), max, wait_ms,
               holding ? std::optional(*holding) : std::nullopt, std::move(done));
  });
}

void Coordinator::ClaimAsync(std::string operator_id, std::string node_id, int max, int64_t wait_ms,
                             std::optional<std::vector<std::string>> holding, Callback<std::vector<Task>> done) {
  if (max < 1 || max > 100) return done(Error::Invalid("invalid_max", "max: 1 to 100"));
  if (wait_ms < 0 || wait_ms > 60'000) return done(Error::Invalid("invalid_wait", "wait_s: 0 to 60"));
  struct State {
    std::string operator_id, node_id;
    std::optional<std::vector<std::string>> holding;
    std::vector<Task> claimed;
    Node node;
  };
  auto st = std::make_shared<State>(std::move(operator_id), std::move(node_id), std::move(holding));
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  writer_.TransactAsync(
      [this, st, max](store::Tx& tx) -> Result<void> {
        st->claimed.clear();
        return ClaimIn(tx, st->operator_id, st->node_id, max, st->holding ? &*st->holding : nullptr, st->claimed,
                       st->node);
      },
      [this, st, max, until, done = std::move(done)](Result<void> r) mutable {
        if (!r) return done(r.take_error());
        NotifyClaimed(st->claimed);
        if (!st->claimed.empty() || std::chrono::steady_clock::now() >= until) return done(std::move(st->claimed));
        // Nothing yet: wait as a one-time attachment. Its credit wakes the
        // dispatcher, whose round counts what is claimable then, so work
        // that arrived since this claim's transaction is not missed.
        bool waiting = false;
        {
          std::lock_guard lk(push_mu_);
          if (!push_stopping_) {
            waiting = true;
            uint64_t id = next_attachment_++;
            Attachment& a = attached_[id];
            a = Attachment{.operator_id = std::move(st->operator_id),
                           .node_id = std::move(st->node_id),
                           .first = false,
                           .push = std::move(done),
                           .credit = max,
                           .score = Score(st->node),
                           .capabilities = st->node.capabilities,
                           .until = until};
            claims_until_.insert({until, id});
            Ready(id, a);
            push_wake_ = true;
          }
        }
        if (!waiting) return done(std::vector<Task>{});  // stopping: answered at once
        push_cv_.notify_one();
      });
}

struct Coordinator::ResultItem {
  std::string operator_id, node_id, task_id;
  int lease = 0;
  std::shared_ptr<const std::string> output;
  std::string proof_hash;
  Callback<Task> done;
  LeaseChange change;  // for CompleteAlone, once the task is read
};

void Coordinator::OnLease(std::string operator_id, std::string node_id, std::string task_id, int lease,
                          LeaseChange change, Callback<Task> done, LeaseFirst first) {
  auto out = std::make_shared<Task>();
  writer_.TransactAsync(
      [this, operator_id = std::move(operator_id), node_id = std::move(node_id), task_id = std::move(task_id), lease,
       change = std::move(change), first = std::move(first), out](store::Tx& tx) -> Result<void> {
        if (first) {
          std::optional<Task> after;
          auto made = first(tx, clock_.NowMs(), after);
          if (!made) return made.take_error();
          if (*made) {
            *out = std::move(*after);
            return Ok();
          }
        }
        auto node = LoadOwnNode(tx, node_id, operator_id);
        if (!node) return node.take_error();
        auto t = LoadTask(tx, task_id);
        if (!t) return t.take_error();
        if (t->node_id != node_id || t->attempt != lease || (t->status != "assigned" && t->status != "in_progress")) {
          return Error::Conflict("lease_stale", "task " + t->id + ": this node does not hold lease " +
                                                    std::to_string(lease) + " (status " + t->status + ")");
        }
        std::optional<Task> after;
        SMART_TRY(change(tx, *t, *node, clock_.NowMs(), after));
        if (!after) {
          auto again = LoadTask(tx, task_id);
          if (!again) return again.take_error();
          after = std::move(again).value();
        }
        *out = std::move(*after);
        return Ok();
      },
      [this, out, done = std::move(done)](Result<void> r) {
        if (!r) return done(r.take_error());
        if (out->status == "pending") {
          WakeClaimers();  // given back: claimable again
        } else if (out->status != "assigned" && out->status != "in_progress") {
          FreedPlace();
        }
        Notify(*out);
        if (!out->parent_id.empty()) {
          NotifyById(out->parent_id);
          if (out->status == "completed") NotifyAgreedReplicas(out->parent_id);
          WakeClaimers();  // a dispute may have added a replica
        }
        done(std::move(*out));
      });
}

void Coordinator::Apply(std::string operator_id, std::string node_id, LeaseOp op, Callback<Task> done) {
  using Kind = LeaseOp::Kind;
  LeaseChange change;
  switch (op.kind) {
    case Kind::kStart:
      change = [](store::Tx& tx, const Task& t, const Node& n, int64_t now, std::optional<Task>&) -> Result<void> {
        if (t.status != "assigned") return Ok();  // started already: the same answer again
        SMART_TRY(tx.Exec("UPDATE tasks SET status = 'in_progress', updated_ms = $2 WHERE id = $1",
                          {Value{t.id}, Value{now}}));
        return AddEvent(tx, t.id, now, "in_progress", n.id);
      };
      break;
    case Kind::kProgress:
      if (op.percent < 0 || op.percent > 100) return done(Error::Invalid("invalid_percent", "percent: 0 to 100"));
      if (op.message.size() > kMaxMessage || !IsValidUtf8(op.message)) {
        return done(Error::Invalid("invalid_message", "message: at most 256 bytes of UTF-8"));
      }
      {
        // Reports of one lease not yet written are one write, the latest, each
        // answered with it: a node reporting very often costs at most one write
        // per commit of the writer.
        std::string key = operator_id + '\n' + node_id + '\n' + op.task_id + '\n' + std::to_string(op.lease);
        std::shared_ptr<ProgressReport> report;
        {
          std::lock_guard lk(progress_mu_);
          auto [it, added] = progress_.try_emplace(key);
          if (!added) {
            it->second->percent = op.percent;
            it->second->message = std::move(op.message);
            it->second->waiting.push_back(std::move(done));
            return;
          }
          report = it->second = std::make_shared<ProgressReport>();
          report->percent = op.percent;
          report->message = std::move(op.message);
          report->waiting.push_back(std::move(done));
        }
        // Taken out of the map when first written (or answered): later reports start another write.
        auto take = [this, key, report] {
          std::lock_guard lk(progress_mu_);
          auto it = progress_.find(key);
          if (it != progress_.end() && it->second == report) progress_.erase(it);
          return std::pair{report->percent, report->message};
        };
        change = [take](store::Tx& tx, const Task& t, const Node& n, int64_t now,
                        std::optional<Task>&) -> Result<void> {
          auto [percent, message] = take();
          SMART_TRY(
              tx.Exec("UPDATE tasks SET status = 'in_progress', progress = $2, progress_message = $3, updated_ms = $4 "
                      "WHERE id = $1",
                      {Value{t.id}, Value{int64_t{percent}}, Value{message}, Value{now}}));
          if (t.status == "assigned") SMART_TRY(AddEvent(tx, t.id, now, "in_progress", n.id));
          return Ok();
        };
        done = [take, report](Result<Task> r) {
          take();  // no report joins it any more
          for (auto& answer : report->waiting) answer(r);
        };
        break;
      }
    case Kind::kResult: {
      if (op.output.size() > config_.max_input_bytes) {
        return done(Error::Invalid("output_too_large",
                                   "output: at most " + std::to_string(config_.max_input_bytes) + " bytes"));
      }
      if (!IsValidUtf8(op.output)) return done(Error::Invalid("invalid_output", "output: not UTF-8 text"));
      if (op.proof_hash != crypto::Sha256Hex(op.output)) {
        return done(Error::Invalid("invalid_proof", "proof_hash: must be the lowercase hex SHA-256 of output"));
      }
      auto output = std::make_shared<const std::string>(std::move(op.output));
      // CompleteAlone tries CompleteResults first; the task is read only for
      // a replica's result or a refusal.
      change = [this, output, proof = op.proof_hash](store::Tx& tx, const Task& t, const Node& n, int64_t now,
                                                     std::optional<Task>&) -> Result<void> {
        if (!t.parent_id.empty()) return CompleteReplica(tx, t, n, *output, proof, now);
        // The lease was checked on the same snapshot that CompleteResults' statement saw.
        return Error::Internal("completion_inconsistent", "task " + t.id + " was neither completed nor a replica");
      };
      // A retry of a result whose answer was lost (the same lease, the same
      // proof) gets the same answer again.
      done = [this, node_id, task_id = op.task_id, lease = op.lease, proof = op.proof_hash,
              done = std::move(done)](Result<Task> r) {
        if (r || r.error().code != "lease_stale") return done(std::move(r));
        Task again;
        auto read = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
          auto t = LoadTask(tx, task_id);
          if (!t) return t.take_error();
          again = std::move(t).value();
          return Ok();
        });
        if (read && again.status == "completed" && again.node_id == node_id && again.attempt == lease &&
            again.proof_hash == proof) {
          return done(std::move(again));
        }
        done(std::move(r));
      };
      auto item = std::make_shared<ResultItem>(ResultItem{.operator_id = std::move(operator_id),
                                                          .node_id = std::move(node_id),
                                                          .task_id = std::move(op.task_id),
                                                          .lease = op.lease,
                                                          .output = std::move(output),
                                                          .proof_hash = std::move(op.proof_hash),
                                                          .done = std::move(done),
                                                          .change = std::move(change)});
      bool alone = false, queue = false;
      {
        std::lock_guard lk(results_mu_);
        alone = ops_.contains(item->task_id);  // behind that operation, in order
        if (!alone) {
          results_.push_back(item);
          queue = !std::exchange(results_queued_, true);
        }
      }
      if (alone) return CompleteAlone(item);
      if (queue) QueueResults();
      return;
    }
    case Kind::kFail:
      if (op.error.size() > 4096 || !IsValidUtf8(op.error)) {
        return done(Error::Invalid("invalid_error", "error: at most 4 KiB of UTF-8"));
      }
      change = [this, error = op.error](store::Tx& tx, const Task& t, const Node& n, int64_t now,
                                        std::optional<Task>&) -> Result<void> {
        SMART_TRY(tx.Exec("UPDATE nodes SET failed = failed + 1 WHERE id = $1", {Value{n.id}}));
        SMART_TRY(AddEvent(tx, t.id, now, "failed", n.id, JsonObject({{"error", error}})));
        return Requeue(tx, t, "failed", error, /*counts=*/true, now);
      };
      break;
    case Kind::kRelease:
      change = [this](store::Tx& tx, const Task& t, const Node& n, int64_t now, std::optional<Task>&) -> Result<void> {
        SMART_TRY(AddEvent(tx, t.id, now, "released", n.id));
        return Requeue(tx, t, "failed", "", /*counts=*/false, now);
      };
      break;
  }
  auto tracked = Tracked(op.task_id, std::move(done));
  OnLease(std::move(operator_id), std::move(node_id), std::move(op.task_id), op.lease, std::move(change),
          std::move(tracked));
}

Callback<Task> Coordinator::Tracked(const std::string& task_id, Callback<Task> done) {
  {
    std::lock_guard lk(results_mu_);
    ++ops_[task_id];
  }
  return [this, task_id, done = std::move(done)](Result<Task> r) {
    {
      std::lock_guard lk(results_mu_);
      auto it = ops_.find(task_id);
      if (it != ops_.end() && --it->second == 0) ops_.erase(it);
    }
    done(std::move(r));
  };
}

void Coordinator::CompleteAlone(std::shared_ptr<ResultItem> item) {
  results_alone_.fetch_add(1);
  // The one statement first (CompleteResults for this result alone); the node
  // and the task are read only when it completes nothing.
  LeaseFirst first = [this, item](store::Tx& tx, int64_t, std::optional<Task>& after) -> Result<bool> {
    std::vector<std::optional<Task>> done;
    SMART_TRY(CompleteResults(tx, std::span(&item, 1), done));
    if (!done[0]) return false;
    after = std::move(done[0]);
    return true;
  };
  OnLease(item->operator_id, item->node_id, item->task_id, item->lease, item->change,
          Tracked(item->task_id, item->done), std::move(first));
}

void Coordinator::QueueResults() {
  // What one writer job completes: taken from results_ when the job first
  // runs (it may run again, after a refusal elsewhere in its group), or when
  // it is answered without running (the writer is stopping).
  struct Run {
    std::vector<std::shared_ptr<ResultItem>> items;
    std::vector<std::optional<Task>> after;
    bool taken = false;
  };
  auto run = std::make_shared<Run>();
  auto take = [this, run] {
    if (run->taken) return;
    std::lock_guard lk(results_mu_);
    run->items.swap(results_);
    results_queued_ = false;
    run->taken = true;
  };
  writer_.TransactAsync(
      [this, run, take](store::Tx& tx) -> Result<void> {
        take();
        return CompleteResults(tx, run->items, run->after);
      },
      [this, run, take](Result<void> r) {
        take();
        bool freed = false;
        for (size_t i = 0; i < run->items.size(); ++i) {
          if (r && run->after[i]) {
            completed_together_.fetch_add(1);
            freed = true;
            Notify(*run->after[i]);
            run->items[i]->done(std::move(*run->after[i]));
          } else {
            CompleteAlone(run->items[i]);  // not completed here (a replica's, a refusal) or the job failed: on its own
          }
        }
        if (freed) FreedPlace();
      });
}

namespace {

// The transfers that settle a chunk of completed tasks (none a replica): each
// task's escrow posted, then per operator and asset one payment of what its
// tasks earned (cost less fee, each) and per asset one fee. Their keys name the
// chunk's first task, which completes once, so each is made once; their
// metadata lists the tasks they pay for.
// A lot's metadata lists at most kCompleteChunk task ids (31 characters,
// quoted, a comma): well within the ledger's 4 KiB.
static_assert(kCompleteChunk * (31 + 3) + 16 <= 4096);

class Settlement {
 public:
  explicit Settlement(int fee_pct) : fee_pct_(static_cast<unsigned>(fee_pct)) {}

  void Add(const Task& t, const std::string& operator_id) {
    if (posts_.empty()) first_ = t.id;
    posts_.push_back({.key = EscrowKey(t, "post"),
                      .type = ledger::TransferType::kPost,
                      .pending_id = t.escrow_id,
                      .code = "task_settle",
                      .new_key = true});
    const ledger::Amount fee = t.cost * fee_pct_ / 100;
    Earn(pays_[{operator_id, t.asset}], t.cost - fee, t.id);
    Earn(fees_[t.asset], fee, t.id);
  }

  bool Empty() const { return posts_.empty(); }

  // The chunk's transfers, the posts first (they fund the escrow the rest
  // draws on); empties this for the next chunk.
  std::vector<ledger::TransferRequest> Take() {
    std::vector<ledger::TransferRequest> out = std::move(posts_);
    const std::string prefix = "results/" + first_;
    for (auto& [to, e] : pays_) {
      if (e.amount == 0) continue;
      out.push_back({.key = prefix + "/pay/" + to.first + "/" + to.second,
                     .debit = Account(std::string(ledger::kPlatform), ledger::kind::kEscrow, to.second),
                     .credit = Account(to.first, ledger::kind::kAvailable, to.second),
                     .amount = e.amount,
                     .code = "task_reward",
                     .metadata = std::move(e.tasks) + "]}",
                     .new_key = true});
    }
    for (auto& [asset, e] : fees_) {
      if (e.amount == 0) continue;
      out.push_back({.key = prefix + "/fee/" + asset,
                     .debit = Account(std::string(ledger::kPlatform), ledger::kind::kEscrow, asset),
                     .credit = Account(std::string(ledger::kPlatform), ledger::kind::kFees, asset),
                     .amount = e.amount,
                     .code = "task_fee",
                     .metadata = std::move(e.tasks) + "]}",
                     .new_key = true});
    }
    posts_.clear();
    pays_.clear();
    fees_.clear();
    return out;
  }

 private:
  struct Earned {
    ledger::Amount amount = 0;
    std::string tasks = "{\"task_ids\":[";  // the metadata, less its closing
  };

  static void Earn(Earned& e, ledger::Amount amount, const std::string& task_id) {
    if (amount == 0) return;
    e.amount += amount;
    if (e.tasks.back() != '[') e.tasks += ',';
    AppendJsonString(e.tasks, task_id);
  }

  unsigned fee_pct_;
  std::string first_;
  std::vector<ledger::TransferRequest> posts_;
  std::map<std::pair<std::string, std::string>, Earned> pays_;  // by operator and asset
  std::map<std::string, Earned> fees_;                          // by asset
};

}  // namespace

Result<void> Coordinator::CompleteResults(store::Tx& tx, std::span<const std::shared_ptr<ResultItem>> items,
                                          std::vector<std::optional<Task>>& after) {
  after.assign(items.size(), std::nullopt);
  const int64_t now = clock_.NowMs();
  Settlement settlement(config_.fee_pct);
  std::map<std::string, int64_t> completed;  // by node
  std::vector<Value> params;
  for (size_t h = 0; h < items.size();) {
    const size_t rows = std::bit_floor(std::min(items.size() - h, kCompleteChunk));
    params.clear();
    params.reserve(1 + rows * kCompleteColumns);
    params.emplace_back(now);
    for (size_t k = h; k < h + rows; ++k) {
      const ResultItem& item = *items[k];
      params.emplace_back(item.task_id);
      params.emplace_back(item.node_id);
      params.emplace_back(int64_t{item.lease});
      params.emplace_back(*item.output);
      params.emplace_back(item.proof_hash);
      params.emplace_back(HistoryLine(now, "completed", item.node_id, JsonObject({{"proof_hash", item.proof_hash}})));
      params.emplace_back(item.operator_id);
    }
    auto rows_done = tx.Query(CompleteTasks(rows), params);
    if (!rows_done) return rows_done.take_error();
    for (const store::Row& row : *rows_done) {
      auto t = TaskFromRow(row);
      if (!t) return t.take_error();
      // The result it records (a task named twice is completed once, by one of them).
      size_t k = h;
      while (k < h + rows && (after[k] || items[k]->task_id != t->id || items[k]->proof_hash != t->proof_hash)) ++k;
      if (k == h + rows) return Error::Internal("completion_inconsistent", "task " + t->id + " completed unasked");
      settlement.Add(*t, items[k]->operator_id);
      ++completed[items[k]->node_id];
      after[k] = std::move(t).value();
    }
    if (!settlement.Empty()) SMART_TRY(ledger_.ExecuteIn(tx, settlement.Take()));  // within the ledger's batch limit
    h += rows;
  }
  for (const auto& [node_id, n] : completed) {
    SMART_TRY(
        tx.ExecLater("UPDATE nodes SET completed = completed + $3, last_heartbeat_ms = $2, "
                     "reputation = CASE WHEN reputation + $4 > 1000 THEN 1000 ELSE reputation + $4 END WHERE id = $1",
                     {Value{node_id}, Value{now}, Value{n}, Value{10 * n}}));
  }
  return Ok();
}

Result<Task> Coordinator::Start(std::string_view operator_id, std::string_view node_id, std::string_view task_id,
                                int lease) {
  return Wait<Task>([&](Callback<Task> done) {
    Apply(std::string(operator_id), std::string(node_id),
          {.kind = LeaseOp::Kind::kStart, .task_id = std::string(task_id), .lease = lease}, std::move(done));
  });
}

Result<Task> Coordinator::Progress(std::string_view operator_id, std::string_view node_id, std::string_view task_id,
                                   int lease, int percent, std::string_view message) {
  return Wait<Task>([&](Callback<Task> done) {
    Apply(std::string(operator_id), std::string(node_id),
          {.kind = LeaseOp::Kind::kProgress,
           .task_id = std::string(task_id),
           .lease = lease,
           .percent = percent,
           .message = std::string(message)},
          std::move(done));
  });
}

Result<Task> Coordinator::Complete(std::string_view operator_id, std::string_view node_id, std::string_view task_id,
                                   int lease, std::string_view output, std::string_view proof_hash) {
  return Wait<Task>([&](Callback<Task> done) {
    Apply(std::string(operator_id), std::string(node_id),
          {.kind = LeaseOp::Kind::kResult,
           .task_id = std::string(task_id),
           .lease = lease,
           .output = std::string(output),
           .proof_hash = std::string(proof_hash)},
          std::move(done));
  });
}

Result<Task> Coordinator::Fail(std::string_view operator_id, std::string_view node_id, std::string_view task_id,
                               int lease, std::string_view error) {
  return Wait<Task>([&](Callback<Task> done) {
    Apply(std::string(operator_id), std::string(node_id),
          {.kind = LeaseOp::Kind::kFail, .task_id = std::string(task_id), .lease = lease, .error = std::string(error)},
          std::move(done));
  });
}

Result<Task> Coordinator::Release(std::string_view operator_id, std::string_view node_id, std::string_view task_id,
                                  int lease) {
  return Wait<Task>([&](Callback<Task> done) {
    Apply(std::string(operator_id), std::string(node_id),
          {.kind = LeaseOp::Kind::kRelease, .task_id = std::string(task_id), .lease = lease}, std::move(done));
  });
}

Result<void> Coordinator::Requeue(store::Tx& tx, const Task& t, std::string_view final_status, std::string error,
                                  bool counts, int64_t now) {
  int failures = t.failures + (counts ? 1 : 0);
  bool past_deadline = t.deadline_ms > 0 && now >= t.deadline_ms;
  if (past_deadline && error.empty()) error = "the deadline passed";
  if (failures < t.max_attempts && !past_deadline) {
    SMART_TRY(
        tx.Exec("UPDATE tasks SET status = 'pending', node_id = NULL, lease_expires_ms = 0, failures = $2, error = $3, "
                "progress = 0, progress_message = '', updated_ms = $4 WHERE id = $1",
                {Value{t.id}, Value{int64_t{failures}}, Value{std::move(error)}, Value{now}}));
    return AddEvent(tx, t.id, now, "pending", "");
  }
  if (t.parent_id.empty()) {  // a replica holds nothing: its redundant task does
    ledger::TransferRequest release{.key = EscrowKey(t, "void"),
                                    .type = ledger::TransferType::kVoid,
                                    .pending_id = t.escrow_id,
                                    .code = "task_refund"};
    SMART_TRY(ledger_.ExecuteIn(tx, std::span(&release, 1)));
  }
  SMART_TRY(tx.Exec(
      "UPDATE tasks SET status = $2, failures = $3, error = $4, lease_expires_ms = 0, updated_ms = $5, "
      "completed_ms = $5 WHERE id = $1",
      {Value{t.id}, Value{std::string(final_status)}, Value{int64_t{failures}}, Value{std::move(error)}, Value{now}}));
  if (!t.parent_id.empty()) return EvaluateReplicas(tx, t.parent_id, now);
  return Ok();
}

Result<int64_t> Coordinator::FairKey(store::Tx& tx, std::string_view requester, Priority priority, int64_t steps) {
  // max(virtual time, the lane's last key) + the steps, in one statement
  // (SQLite's upsert needs the WHERE before ON CONFLICT).
  auto key = tx.QueryOne(
      "INSERT INTO task_lanes (requester, priority, last_key) "
      "SELECT $1, $2, CASE WHEN c.vtime > COALESCE(r.last_key, 0) THEN c.vtime ELSE COALESCE(r.last_key, 0) END + $3 "
      "FROM task_clock c LEFT JOIN task_lanes r ON r.requester = $1 AND r.priority = $2 WHERE c.id = 1 "
      "ON CONFLICT (requester, priority) DO UPDATE SET last_key = excluded.last_key RETURNING last_key",
      {Value{std::string(requester)}, Value{static_cast<int64_t>(priority)}, Value{steps}});
  if (!key) return key.take_error();
  if (!*key) return Error::Internal("task_clock_missing", "the task clock row is missing");
  return (*key)->Int(0);
}

Result<Page<Task>> Coordinator::DeadLetters(std::string_view requester, int limit, std::string_view cursor) {
  return List(requester, {.dead_letters = true}, limit, cursor);
}

Result<Task> Coordinator::Retry(std::string_view requester, std::string_view id) {
  Task out;
  SMART_TRY(writer_.Transact([&](store::Tx& tx) -> Result<void> {
    auto t = LoadTask(tx, id, requester);
    if (!t) return t.take_error();
    if (t->replicas > 0 || !t->parent_id.empty()) {
      return Error::Conflict("not_retriable", "task " + t->id + " runs on replicas; submit it again instead");
    }
    if (t->status != "failed" && t->status != "timed_out") {
      return Error::Conflict("not_dead_lettered", "task " + t->id + " is " + t->status +
                                                      "; only failed or timed-out "
                                                      "tasks can be retried");
    }
    auto settings = LoadSettings(tx);
    if (!settings) return settings.take_error();
    if (settings->paused) return Error::Conflict("submissions_paused", "the network is not taking new tasks now");
    int64_t now = clock_.NowMs();
    if (t->deadline_ms > 0 && now >= t->deadline_ms) {
      return Error::Conflict("deadline_passed", "task " + t->id + "'s deadline has passed");
    }
    Task next = *t;
    next.retries = t->retries + 1;
    ledger::TransferRequest hold{.key = EscrowKey(next, "escrow"),
                                 .type = ledger::TransferType::kPending,
                                 .debit = Account(std::string(requester), ledger::kind::kAvailable, t->asset),
                                 .credit = Account(std::string(ledger::kPlatform), ledger::kind::kEscrow, t->asset),
                                 .amount = t->cost,
                                 .code = "task_escrow",
                                 .metadata = JsonObject({{"task_id", t->id}})};
    auto held = ledger_.ExecuteIn(tx, std::span(&hold, 1));
    if (!held) return held.take_error();
    auto fair_key = FairKey(tx, requester, t->priority, FairStep(1, t->priority));
    if (!fair_key) return fair_key.take_error();
    SMART_TRY(tx.Exec(
        "UPDATE tasks SET status = 'pending', retries = $2, escrow_id = $3, failures = 0, error = NULL, node_id = "
        "NULL, "
        "lease_expires_ms = 0, progress = 0, progress_message = '', completed_ms = 0, fair_key = $4, updated_ms = $5 "
        "WHERE id = $1",
        {Value{t->id}, Value{int64_t{next.retries}}, Value{(*held)[0]}, Value{*fair_key}, Value{now}}));
    SMART_TRY(AddEvent(tx, t->id, now, "pending", "", "{\"retry\":" + std::to_string(next.retries) + "}"));
    auto done = LoadTask(tx, id);
    if (!done) return done.take_error();
    out = std::move(done).value();
    return Ok();
  }));
  WakeClaimers();
  Notify(out);
  return out;
}

void Coordinator::NotifyClaimed(const std::vector<Task>& claimed) {
  for (const auto& t : claimed) {
    Notify(t);
    if (!t.parent_id.empty()) NotifyById(t.parent_id);  // a replica's parent is in progress from its first claim
  }
}

// A replica's result settled its task: the replicas still running were
// cancelled, and their nodes hear of it (task_update events).
void Coordinator::NotifyAgreedReplicas(std::string_view parent_id) {
  if (!on_update_) return;
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    std::string sql = "SELECT ";
    sql += kTaskColumns;
    sql += " FROM tasks WHERE parent_id = $1 AND status = 'cancelled' AND node_id IS NOT NULL";
    auto rows = tx.Query(sql, {Value{std::string(parent_id)}});
    if (!rows) return rows.take_error();
    for (const auto& row : *rows) {
      auto t = TaskFromRow(row);
      if (t) Notify(*t);
    }
    return Ok();
  });
  (void)r;  // as NotifyById: an event lost to a failed read does not fail the transition
}

void Coordinator::NotifyById(std::string_view task_id) {
  if (!on_update_) return;
  auto t = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto loaded = LoadTask(tx, task_id);
    if (!loaded) return loaded.take_error();
    Notify(*loaded);
    return Ok();
  });
  (void)t;  // an event lost to a failed read is not worth failing the transition for
}

size_t Coordinator::WaitingClaims() {
  std::lock_guard lk(push_mu_);
  return claims_until_.size();
}

void Coordinator::WakeClaimers() {
  WakeHere();
  db_.Signal(kWorkChannel);
}

void Coordinator::FreedPlace() {
  FreedPlaceHere();
  db_.Signal(kFreedChannel);  // other instances may hold claims waiting at this requester's cap
}

void Coordinator::FreedPlaceHere() {
  if (capped_waiting_.load(std::memory_order_relaxed)) WakeHere();
}

void Coordinator::WakeHere() {
  {
    std::lock_guard lk(push_mu_);
    if (attached_.empty()) return;
    push_wake_ = true;
  }
  push_cv_.notify_one();
}

void Coordinator::Ready(uint64_t id, const Attachment& a) {
  if (a.credit <= 0) return;
  if (a.first) {
    ready_first_.insert(id);
    return;
  }
  for (const auto& c : a.capabilities) ready_[c].insert({-a.score, id});
}

void Coordinator::Unready(uint64_t id, const Attachment& a) {
  ready_first_.erase(id);
  for (const auto& c : a.capabilities) {
    auto it = ready_.find(c);
    if (it == ready_.end()) continue;
    it->second.erase({-a.score, id});
    if (it->second.empty()) ready_.erase(it);
  }
}

void Coordinator::EndAttachment(std::map<uint64_t, Attachment>::iterator it) {
  Unready(it->first, it->second);
  if (it->second.until) claims_until_.erase({*it->second.until, it->first});
  auto node = attached_nodes_.find(it->second.operator_id + '\n' + it->second.node_id);
  if (node != attached_nodes_.end() && node->second == it->first) attached_nodes_.erase(node);
  attached_.erase(it);
}

uint64_t Coordinator::Attach(std::string operator_id, std::string node_id, std::vector<std::string> holding,
                             Push push) {
  uint64_t id;
  Push replaced;
  std::string node_name = node_id;
  {
    std::lock_guard lk(push_mu_);
    id = next_attachment_++;
    auto& slot = attached_nodes_[operator_id + '\n' + node_id];
    if (auto old = attached_.find(slot); slot != 0 && old != attached_.end()) {
      replaced = std::move(old->second.push);
      EndAttachment(old);
    }
    attached_nodes_[operator_id + '\n' + node_id] = id;
    attached_[id] = Attachment{.operator_id = std::move(operator_id),
                               .node_id = std::move(node_id),
                               .holding = std::move(holding),
                               .push = std::move(push)};
  }
  if (replaced) replaced(Reattached(node_name));
  return id;
}

void Coordinator::Credit(uint64_t attachment, int n) {
  {
    std::lock_guard lk(push_mu_);
    auto it = attached_.find(attachment);
    if (it == attached_.end() || n <= 0) return;
    Unready(it->first, it->second);
    it->second.credit = std::min(it->second.credit + n, kMaxCredit);
    Ready(it->first, it->second);
    push_wake_ = true;
  }
  push_cv_.notify_one();
}

void Coordinator::Detach(uint64_t attachment) {
  std::lock_guard lk(push_mu_);
  auto it = attached_.find(attachment);
  if (it != attached_.end()) EndAttachment(it);
}

size_t Coordinator::Attached() {
  std::lock_guard lk(push_mu_);
  return attached_.size() - claims_until_.size();
}

std::vector<Coordinator::Push> Coordinator::ExpireClaims(std::chrono::steady_clock::time_point now) {
  std::vector<Push> answers;
  while (!claims_until_.empty() && claims_until_.begin()->first <= now) {
    auto it = attached_.find(claims_until_.begin()->second);
    answers.push_back(std::move(it->second.push));
    EndAttachment(it);
  }
  return answers;
}

void Coordinator::RunDispatcher() {
  std::unique_lock lk(push_mu_);
  while (!push_stopping_) {
    // Work arrived, credit arrived, or a second passed (another instance's
    // submissions, scheduled tasks coming due), or a waiting claim's
    // deadline. Rounds run here one at a time, each to its end, so a claim
    // that expires is in no round's transaction.
    auto wake = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    if (!claims_until_.empty()) wake = std::min(wake, claims_until_.begin()->first);
    push_cv_.wait_until(lk, wake, [&] { return push_wake_ || push_stopping_; });
    if (push_stopping_) break;
    if (auto expired = ExpireClaims(std::chrono::steady_clock::now()); !expired.empty()) {
      lk.unlock();
      for (auto& answer : expired) answer(std::vector<Task>{});
      lk.lock();
      continue;  // the wake-up, if any, is still due
    }
    push_wake_ = false;
    if (ready_first_.empty() && ready_.empty()) continue;  // no node has credit
    lk.unlock();
    DispatchRound();
    lk.lock();
  }
  // Stopping: the claims still waiting get their answer (none) now.
  auto waiting = ExpireClaims(std::chrono::steady_clock::time_point::max());
  lk.unlock();
  for (auto& answer : waiting) answer(std::vector<Task>{});
}

void Coordinator::DispatchRound() {
  // What is claimable now, for each type some node with credit runs
  // (bounded per type: a deep backlog needs no exact count).
  constexpr int64_t kLook = 2000;
  std::map<std::string, int64_t> claimable;
  {
    std::lock_guard lk(push_mu_);
    for (const auto& [type, nodes] : ready_) claimable[type] = 0;
  }
  bool more = false;  // some type has more than was counted
  auto read = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    more = false;
    for (auto& [type, n] : claimable) {
      auto row = tx.QueryOne(
          "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE status = 'pending' AND type = $1 AND not_before_ms <= $2 "
          "LIMIT $3) AS head",
          {Value{type}, Value{clock_.NowMs()}, Value{kLook}});
      if (!row) return row.take_error();
      n = (*row)->Int(0);
      more = more || n == kLook;
    }
    return Ok();
  });
  if (!read) return;  // tried again at the next wake-up or tick
  int64_t seen = 0;
  for (const auto& [type, n] : claimable) {
    seen += n;
    if (n == 0) stalled_.erase(type);
  }
  capped_waiting_.store(!stalled_.empty(), std::memory_order_relaxed);
  bool probed = false;  // a stalled type had more than its one node was given
  // Which attached nodes get a claim this round, best first: every node on
  // its first claim (it may have lost assignments to receive again), then
  // the best nodes that can take some of what is claimable, until it is all
  // spoken for. A round visits the nodes it gives work to (through the
  // ready_ index), however many others are attached.
  struct Want {
    uint64_t id;
    std::string operator_id, node_id;
    std::vector<std::string> holding;
    bool first;
    int quota;
    int64_t score;
    std::vector<std::string> types;  // those it was given some of (none on a first claim)
    std::optional<Fence> fence;      // a node's attachment (not a waiting claim)
  };
  auto fence = [](const Attachment& a) {
    return a.until ? std::nullopt : std::optional<Fence>(Fence{.take = a.first, .epoch = a.epoch});
  };
  std::vector<Want> wants;
  {
    std::lock_guard lk(push_mu_);
    for (uint64_t id : ready_first_) {
      const Attachment& a = attached_.at(id);
      wants.push_back({id, a.operator_id, a.node_id, a.holding, true, a.credit, a.score, {}, fence(a)});
    }
    // The capable nodes of every claimable type, merged best first; a type
    // whose tasks are all spoken for is not looked at again.
    struct Cursor {
      std::set<std::pair<int64_t, uint64_t>>::const_iterator at, end;
      const int64_t* left;
    };
    std::vector<Cursor> cursors;
    for (const auto& [type, n] : claimable) {
      if (auto r = ready_.find(type); r != ready_.end()) cursors.push_back({r->second.begin(), r->second.end(), &n});
    }
    std::set<uint64_t> visited;
    int64_t left = seen;
    while (left > 0) {
      Cursor* best = nullptr;
      for (auto& c : cursors) {
        if (c.at != c.end && *c.left > 0 && (!best || *c.at < *best->at)) best = &c;
      }
      if (!best) break;
      uint64_t id = (best->at++)->second;
      if (!visited.insert(id).second) continue;  // capable of two claimable types
      const Attachment& a = attached_.at(id);
      int quota = 0;
      std::vector<std::string> types;
      for (const auto& type : a.capabilities) {
        auto it = claimable.find(type);
        if (it == claimable.end()) continue;
        int64_t take = std::min<int64_t>(it->second, a.credit - quota);
        if (take <= 0) continue;
        it->second -= take;
        left -= take;
        quota += static_cast<int>(take);
        types.push_back(type);
        // A stalled type is probed by this one node: the others would find
        // only requesters at their cap too, a transaction each.
        if (stalled_.contains(type) && it->second > 0) {
          probed = true;
          left -= it->second;
          it->second = 0;
        }
      }
      if (quota > 0) {
        wants.push_back({id, a.operator_id, a.node_id, {}, false, quota, a.score, std::move(types), fence(a)});
      }
    }
  }
  std::sort(wants.begin(), wants.end(),
            [](const Want& a, const Want& b) { return a.score != b.score ? a.score > b.score : a.id < b.id; });
  struct Round {
    std::mutex mu;
    std::condition_variable cv;
    int open = 0;
    bool assigned = false;               // some claim of the round got tasks
    std::map<std::string, bool> capped;  // per type, what its last claim found
  };
  auto round = std::make_shared<Round>();
  for (auto& w : wants) {
    {
      std::lock_guard lk(round->mu);
      ++round->open;
    }
    auto claimed = std::make_shared<std::vector<Task>>();
    auto node = std::make_shared<Node>();
    auto holding = std::make_shared<std::vector<std::string>>(std::move(w.holding));
    auto capped = std::make_shared<std::set<std::string>>();
    auto fenced = std::make_shared<std::optional<Fence>>(w.fence);
    writer_.TransactAsync(
        [this, w, claimed, node, holding, capped, fenced](store::Tx& tx) -> Result<void> {
          capped->clear();
          return ClaimIn(tx, w.operator_id, w.node_id, w.quota, w.first ? holding.get() : nullptr, *claimed, *node,
                         capped.get(), *fenced ? &**fenced : nullptr);
        },
        [this, id = w.id, types = w.types, claimed, node, capped, fenced, round](Result<void> r) {
          Push push;
          bool transient = !r && (r.error().kind == ErrorKind::kUnavailable || r.error().kind == ErrorKind::kRetryable);
          {
            std::lock_guard lk(push_mu_);
            auto it = attached_.find(id);
            // The attachment ends on node_deactivated, node_not_found...; a
            // waiting claim also with its first tasks (until then it is not told).
            if (it != attached_.end() && (r ? it->second.until && !claimed->empty() : !transient)) {
              push = std::move(it->second.push);
              EndAttachment(it);
            } else if (it != attached_.end()) {
              Unready(it->first, it->second);
              if (r) {
                it->second.credit -= static_cast<int>(claimed->size());
                it->second.first = false;
                if (*fenced) it->second.epoch = (*fenced)->epoch;
                it->second.holding.clear();
                it->second.capabilities = node->capabilities;
                it->second.score = Score(*node);
                if (!it->second.until) push = it->second.push;
              }
              // Transient (the database unreachable, retries used up): the
              // node is not told and keeps its credit; tried again at the next
              // wake-up or tick, not at once (which would spin while it lasts).
              Ready(it->first, it->second);
            }
          }
          // Assigned to a connection that is gone: delivered again when it
          // reconnects with `holding`, or released when it stays offline.
          if (push) push(r ? Result<std::vector<Task>>(*claimed) : Result<std::vector<Task>>(r.take_error()));
          NotifyClaimed(*claimed);
          std::lock_guard lk(round->mu);
          round->assigned = round->assigned || !claimed->empty();
          if (r) {
            for (const auto& type : types) round->capped[type] = capped->contains(type);
          }
          if (--round->open == 0) round->cv.notify_all();
        });
  }
  std::unique_lock lk(round->mu);
  round->cv.wait(lk, [&] { return round->open == 0; });
  for (const auto& [type, stalled] : round->capped) {
    if (stalled) {
      stalled_.insert(type);
    } else {
      stalled_.erase(type);
    }
  }
  capped_waiting_.store(!stalled_.empty(), std::memory_order_relaxed);
  // More than was counted or given: another round at once, while rounds
  // assign something. One that assigned nothing (the claimable tasks'
  // requesters at their cap, the nodes at theirs) waits for the next wake-up
  // or tick: trying again at once would spin, a write transaction a round.
  if ((more || probed) && round->assigned) {
    std::lock_guard plk(push_mu_);
    push_wake_ = true;
  }
}

}  // namespace smart::tasks
