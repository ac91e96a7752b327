// Redundant execution: replicas are child tasks of the redundant task; their
// proofs decide who is paid, who is slashed, and what the owner gets.
#include <map>

#include "internal.hpp"
#include "smart/core/ids.hpp"
#include "smart/core/json_text.hpp"

namespace smart::tasks {
namespace {

using store::Value;

ledger::AccountRef Account(std::string owner, std::string_view kind, const std::string& asset) {
  return {std::move(owner), std::string(kind), asset};
}

}  // namespace

Result<void> AddReplica(store::Tx& tx, std::string_view parent_id, ledger::Amount price, int64_t now) {
  const std::string id = MakeId("task");
  SMART_TRY(tx.Exec(
      "INSERT INTO tasks (id, requester, type, input, input_is_json, parameters, priority, status, asset, cost, "
      "max_cost, timeout_s, max_attempts, attempt, failures, node_id, lease_expires_ms, progress, progress_message, "
      "escrow_id, idem_key, fingerprint, created_ms, updated_ms, completed_ms, fair_key, not_before_ms, deadline_ms, "
      "retries, replicas, parent_id) "
      "SELECT $1, requester, type, input, input_is_json, parameters, priority, 'pending', asset, $3, NULL, timeout_s, "
      "max_attempts, 0, 0, NULL, 0, 0, '', '', NULL, fingerprint, $4, $4, 0, fair_key, not_before_ms, deadline_ms, 0, "
      "0, id FROM tasks WHERE id = $2",
      {Value{id}, Value{std::string(parent_id)}, Value{ledger::FormatAmount(price)}, Value{now}}));
  return AddEvent(tx, parent_id, now, "replica", "", JsonObject({{"task_id", id}}));
}

Result<void> Coordinator::CompleteReplica(store::Tx& tx, const Task& t, const Node& n, const std::string& output,
                                          const std::string& proof_hash, int64_t now) {
  SMART_TRY(
      tx.Exec("UPDATE tasks SET status = 'completed', output = $2, proof_hash = $3, progress = 100, updated_ms = $4, "
              "completed_ms = $4, lease_expires_ms = 0 WHERE id = $1",
              {Value{t.id}, Value{output}, Value{proof_hash}, Value{now}}));
  SMART_TRY(tx.Exec("UPDATE nodes SET completed = completed + 1, last_heartbeat_ms = $2 WHERE id = $1",
                    {Value{n.id}, Value{now}}));
  SMART_TRY(AddEvent(tx, t.id, now, "completed", n.id, JsonObject({{"proof_hash", proof_hash}})));
  return EvaluateReplicas(tx, t.parent_id, now);
}

Result<void> Coordinator::EvaluateReplicas(store::Tx& tx, std::string_view parent_id, int64_t now) {
  auto parent = LoadTask(tx, parent_id);
  if (!parent) return parent.take_error();
  if (parent->Final()) return Ok();  // cancelled, or settled already
  std::string sql = "SELECT ";
  sql += kTaskColumns;
  sql += " FROM tasks WHERE parent_id = $1 ORDER BY created_ms, id";
  auto rows = tx.Query(sql, {Value{parent->id}});
  if (!rows) return rows.take_error();
  std::vector<Task> replicas;
  for (const auto& r : *rows) {
    auto t = TaskFromRow(r);
    if (!t) return t.take_error();
    replicas.push_back(std::move(t).value());
  }
  if (replicas.empty()) return Error::Internal("replicas_missing", "task " + parent->id + " has no replicas");
  std::map<std::string, int> votes;  // proof hash -> replicas that returned it
  bool all_final = true;
  for (const auto& r : replicas) {
    if (r.status == "completed") ++votes[r.proof_hash];
    all_final = all_final && r.Final();
  }
  std::string winner;
  int best = 0, second = 0;
  for (const auto& [proof, n] : votes) {
    if (n > best) {
      second = best;
      best = n;
      winner = proof;
    } else if (n > second) {
      second = n;
    }
  }
  const bool tie_broken = static_cast<int>(replicas.size()) > parent->replicas;

  if (best >= 2 && best > second) {
    // Agreement: pay the agreeing nodes, slash the others, stop the rest.
    ledger::Amount price = replicas.front().cost;
    std::vector<const Task*> agreeing, minority;
    for (const auto& r : replicas) {
      if (r.status == "completed") (r.proof_hash == winner ? agreeing : minority).push_back(&r);
    }
    ledger::Amount charged = price * static_cast<unsigned>(agreeing.size());
    ledger::Amount fee = price * static_cast<unsigned>(config_.fee_pct) / 100;
    std::vector<ledger::TransferRequest> settle{{.key = EscrowKey(*parent, "post"),
                                                 .type = ledger::TransferType::kPost,
                                                 .amount = charged,  // the rest of the hold goes back
                                                 .pending_id = parent->escrow_id,
                                                 .code = "task_settle"}};
    for (const Task* r : agreeing) {
      auto row = tx.QueryOne("SELECT operator_id FROM nodes WHERE id = $1", {Value{r->node_id}});
      if (!row) return row.take_error();
      if (!*row) return Error::Internal("node_missing", "replica " + r->id + " names no node");
      const std::string operator_id = (*row)->Text(0);
      std::string meta = JsonObject({{"task_id", parent->id}, {"replica_id", r->id}, {"node_id", r->node_id}});
      if (price - fee > 0) {
        settle.push_back({.key = EscrowKey(*parent, "pay/" + r->id),
                          .debit = Account(std::string(ledger::kPlatform), ledger::kind::kEscrow, parent->asset),
                          .credit = Account(operator_id, ledger::kind::kAvailable, parent->asset),
                          .amount = price - fee,
                          .code = "task_reward",
                          .metadata = meta});
      }
      if (fee > 0) {
        settle.push_back({.key = EscrowKey(*parent, "fee/" + r->id),
                          .debit = Account(std::string(ledger::kPlatform), ledger::kind::kEscrow, parent->asset),
                          .credit = Account(std::string(ledger::kPlatform), ledger::kind::kFees, parent->asset),
                          .amount = fee,
                          .code = "task_fee",
                          .metadata = meta});
      }
      SMART_TRY(
          tx.Exec("UPDATE nodes SET reputation = CASE WHEN reputation + 10 > 1000 THEN 1000 ELSE reputation + 10 END "
                  "WHERE id = $1",
                  {Value{r->node_id}}));
    }
    SMART_TRY(ledger_.ExecuteIn(tx, settle));
    for (const Task* r : minority) {
      std::string nsql = "SELECT ";
      nsql += kNodeColumns;
      nsql += " FROM nodes WHERE id = $1";
      auto row = tx.QueryOne(nsql, {Value{r->node_id}});
      if (!row) return row.take_error();
      if (!*row) continue;
      auto node = NodeFromRow(**row);
      if (!node) return node.take_error();
      SMART_TRY(
          tx.Exec("UPDATE nodes SET reputation = CASE WHEN reputation >= 50 THEN reputation - 50 ELSE 0 END "
                  "WHERE id = $1",
                  {Value{node->id}}));
      SMART_TRY(Slash(tx, *node));
      SMART_TRY(AddEvent(tx, parent->id, now, "slashed", node->id,
                         JsonObject({{"replica_id", r->id}, {"proof_hash", r->proof_hash}})));
    }
    SMART_TRY(tx.Exec(
        "UPDATE tasks SET status = 'cancelled', error = 'the other replicas agreed first', lease_expires_ms = 0, "
        "updated_ms = $2, completed_ms = $2 WHERE parent_id = $1 AND status IN ('pending', 'assigned', 'in_progress')",
        {Value{parent->id}, Value{now}}));
    const Task* first = agreeing.front();
    SMART_TRY(tx.Exec(
        "UPDATE tasks SET status = 'completed', output = $2, proof_hash = $3, cost = $4, progress = 100, "
        "updated_ms = $5, completed_ms = $5, error = NULL WHERE id = $1",
        {Value{parent->id}, Value{first->output}, Value{winner}, Value{ledger::FormatAmount(charged)}, Value{now}}));
    return AddEvent(tx, parent->id, now, "completed", "",
                    "{\"proof_hash\":\"" + winner + "\",\"agreeing\":" + std::to_string(agreeing.size()) +
                        ",\"minority\":" + std::to_string(minority.size()) + "}");
  }
  if (!all_final) return Ok();  // more results to come

  // Every replica is done and none won.
  if (best >= 1 && !tie_broken) {
    SMART_TRY(tx.Exec("UPDATE tasks SET status = 'disputed', updated_ms = $2 WHERE id = $1",
                      {Value{parent->id}, Value{now}}));
    SMART_TRY(AddEvent(tx, parent->id, now, "disputed", "", "{\"results\":" + std::to_string(votes.size()) + "}"));
    return AddReplica(tx, parent->id, replicas.front().cost, now);  // one more node breaks the tie
  }
  std::string error = best == 0 ? "every replica failed" : "the replicas did not agree";
  ledger::TransferRequest release{.key = EscrowKey(*parent, "void"),
                                  .type = ledger::TransferType::kVoid,
                                  .pending_id = parent->escrow_id,
                                  .code = "task_refund"};
  SMART_TRY(ledger_.ExecuteIn(tx, std::span(&release, 1)));
  SMART_TRY(tx.Exec("UPDATE tasks SET status = 'failed', error = $2, updated_ms = $3, completed_ms = $3 WHERE id = $1",
                    {Value{parent->id}, Value{error}, Value{now}}));
  return AddEvent(tx, parent->id, now, "failed", "", JsonObject({{"error", error}}));
}

}  // namespace smart::tasks
