// Shared by the coordinator's sources: row formats, events and validation.
#pragma once

#include <future>
#include <string>
#include <string_view>

#include "smart/store/store.hpp"
#include "smart/tasks/coordinator.hpp"

namespace smart::tasks {

inline constexpr std::string_view kTaskColumns =
    "id, requester, type, input, input_is_json, parameters, priority, status, asset, cost, max_cost, timeout_s, "
    "max_attempts, attempt, failures, node_id, lease_expires_ms, progress, progress_message, output, proof_hash, "
    "error, escrow_id, created_ms, updated_ms, completed_ms, fingerprint, fair_key, not_before_ms, deadline_ms, "
    "retries, replicas, parent_id";
Result<Task> TaskFromRow(const store::Row& r);

inline constexpr std::string_view kNodeColumns =
    "id, operator_id, name, capabilities, capacity, hardware, endpoint, state, stake, stake_id, slashed, reputation, "
    "load, running, last_heartbeat_ms, created_ms, completed, failed, timed_out, slashes";
Result<Node> NodeFromRow(const store::Row& r);

// Loads a task (optionally only if `requester` owns it); task_not_found otherwise.
Result<Task> LoadTask(store::Tx& tx, std::string_view id, std::string_view requester = {});
// Loads a node that `operator_id` runs: node_not_found, node_not_yours.
Result<Node> LoadOwnNode(store::Tx& tx, std::string_view node_id, std::string_view operator_id);
// Read once per transaction; ForgetSettings after changing them in it.
Result<Settings> LoadSettings(store::Tx& tx);
void ForgetSettings(store::Tx& tx);

// The ledger key of one step of a task's escrow; a retried task's escrow is a new one.
std::string EscrowKey(const Task& t, std::string_view step);

// Adds a replica (a child task costing `price`) to the redundant task `parent_id`.
Result<void> AddReplica(store::Tx& tx, std::string_view parent_id, ledger::Amount price, int64_t now);

// A task's history is the column tasks.history, one line per event:
// [ts_ms, status, node_id or null, detail object] and a newline; an event's
// seq is its line's number. The transitions every task makes (submitted,
// assigned, completed) append their line in the statement that changes the
// row; the others with AddEvent.
std::string HistoryLine(int64_t ts_ms, std::string_view status, std::string_view node_id,
                        std::string_view detail_json = "{}");
Result<void> AddEvent(store::Tx& tx, std::string_view task_id, int64_t ts_ms, std::string_view status,
                      std::string_view node_id, std::string detail_json = "{}");
Result<std::vector<TaskEvent>> ParseHistory(std::string_view history);

// Runs an asynchronous operation and waits for its callback.
template <class T, class Start>
Result<T> Wait(Start start) {
  std::promise<Result<T>> promise;
  auto result = promise.get_future();
  start([&promise](Result<T> r) { promise.set_value(std::move(r)); });
  return result.get();
}

bool IsJsonObject(std::string_view text, size_t max_bytes);
std::string JsonObject(std::initializer_list<std::pair<std::string_view, std::string>> string_fields);

}  // namespace smart::tasks
