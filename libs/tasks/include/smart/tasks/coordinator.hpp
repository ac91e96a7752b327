// The task network's coordinator: paid tasks, staked nodes, leases with
// fencing tokens, rewards and slashing. All state is in the database, so any
// number of smartd instances may share it and a restart loses nothing: every
// transition commits (with its ledger movements and its event) before it is
// acknowledged.
//
// Money (docs/ledger.md): submitting holds the cost on the requester's
// balance (pending requester/available -> platform/escrow); completion posts
// the hold and pays the node's operator cost minus the platform fee, the fee
// going to platform/fees; a final failure or a cancel voids the hold. A node's
// stake is a hold on its operator's balance; a timeout slashes part of it to
// platform/treasury.
//
// Redundant execution (replicas 2 or 3): the task holds (replicas + 1) x its
// price and is run by as many child tasks on different nodes (the +1 pays a
// tie-breaker). As soon as two results agree (proof hash) and outnumber the
// rest, the task completes with that output: every agreeing node is paid,
// nodes that returned another result are slashed, unfinished replicas are
// cancelled, and only what was paid is charged. Replicas that finish without
// such a majority make the task `disputed` and one more node breaks the tie;
// still none (or no result at all): the task fails and the hold is voided.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "smart/core/clock.hpp"
#include "smart/core/page.hpp"
#include "smart/core/result.hpp"
#include "smart/ledger/ledger.hpp"
#include "smart/store/group_commit.hpp"
#include "smart/store/migrations.hpp"

namespace smart::tasks {

enum class Priority { kLow = 0, kNormal = 1, kHigh = 2, kUrgent = 3 };
std::optional<Priority> ParsePriority(std::string_view s);
std::string_view ToString(Priority p);

struct TasksConfig {
  std::string asset = "USDC";
  // Price per task type in base units of `asset`, for each 1,000 bytes of
  // input (at least one unit); types not listed cost prices["other"].
  std::vector<std::string> types = {"inference", "text_generation", "classification", "embedding", "echo", "sha256"};
  std::map<std::string, ledger::Amount> prices = {{"inference", 10000},
                                                  {"text_generation", 50000},
                                                  {"classification", 20000},
                                                  {"embedding", 15000},
                                                  {"other", 25000}};
  int fee_pct = 10;              // of a task's cost, to platform/fees
  int slash_pct = 10;            // of a node's stake, per timeout
  int64_t offline_after_s = 15;  // no heartbeat for this long: offline, leases lost
  int64_t heartbeat_s = 5;       // what nodes are told to use
  int max_per_requester = 100;   // tasks of one requester assigned or running at once
  size_t max_input_bytes = 1 << 20;
  int64_t sweep_interval_ms = 500;  // lease and liveness checks; 0: never (tests call Sweep)
  // Initial values of the settings admins change at run time.
  ledger::Amount min_stake = 10'000'000;
  int max_tasks_per_node = 10;
  int64_t min_timeout_s = 300, max_timeout_s = 86400, default_timeout_s = 600;
};

// Settings admins change while the network runs (stored, shared by instances).
struct Settings {
  bool paused = false;  // submissions refused
  ledger::Amount min_stake = 0;
  int max_tasks_per_node = 10;  // 1..100: caps every node's capacity
  int64_t min_timeout_s = 300, max_timeout_s = 86400;
};

struct SubmitRequest {
  std::string type;
  std::string input;  // as given: JSON text or plain text
  bool input_is_json = false;
  std::string parameters = "{}";  // a JSON object
  Priority priority = Priority::kNormal;
  std::optional<ledger::Amount> max_cost;
  std::optional<int64_t> timeout_s;
  int max_attempts = 3;       // 1..10
  int weight = 1;             // the requester's share in fair queueing, 1..100 (from its tier)
  int64_t not_before_ms = 0;  // not claimed before this time (0: at once)
  int64_t deadline_ms = 0;    // not completed by then: failed and refunded (0: none)
  // Redundant execution: 0 (none) or 2..3 nodes run it; see Coordinator.
  int replicas = 0;
};

struct Task {
  std::string id;  // "task_…"
  std::string requester;
  std::string type;
  std::string input;
  bool input_is_json = false;
  std::string parameters;
  Priority priority = Priority::kNormal;
  std::string status;  // pending | assigned | in_progress | completed | failed | timed_out | cancelled
  std::string asset;
  ledger::Amount cost = 0;
  std::optional<ledger::Amount> max_cost;
  int64_t timeout_s = 0;
  int max_attempts = 0;
  int attempt = 0;   // claims so far; the current lease's fencing token
  int failures = 0;  // failed or timed-out attempts
  std::string node_id;
  int64_t lease_expires_ms = 0;
  int progress = 0;
  std::string progress_message;
  std::string output, proof_hash, error;
  std::string escrow_id;
  int64_t created_ms = 0, updated_ms = 0, completed_ms = 0;
  int64_t not_before_ms = 0, deadline_ms = 0;
  int retries = 0;        // times its owner retried it from the dead-letter list
  int replicas = 0;       // a redundant task: how many nodes run it (its replicas are child tasks)
  std::string parent_id;  // a replica: the redundant task it runs for
  bool replayed = false;  // Submit found it by its idempotency key
  bool Final() const;
};

struct TaskEvent {
  int seq = 0;
  int64_t ts_ms = 0;
  std::string status;  // the status entered, or "progress"
  std::string node_id;
  std::string detail;  // a JSON object
};

struct Node {
  std::string id;  // "node_…"
  std::string operator_id;
  std::string name;
  std::vector<std::string> capabilities;
  int capacity = 1;
  std::string hardware;  // a JSON object
  std::string endpoint;
  std::string state;   // active | maintenance | deactivated (stored)
  std::string status;  // online | offline | maintenance | deactivated (derived with heartbeats)
  ledger::Amount stake = 0, slashed = 0;
  std::string stake_id;
  int reputation = 100;
  int load = 0, running = 0;  // as last reported
  int assigned = 0;           // tasks it holds now
  int64_t last_heartbeat_ms = 0, created_ms = 0;
  int64_t completed = 0, failed = 0, timed_out = 0;
};

struct RegisterNodeRequest {
  std::string name;
  std::vector<std::string> capabilities;
  int capacity = 1;
  std::string hardware = "{}";
  std::string endpoint;
};

// An operation of the node holding a task's lease (HTTP or the node WebSocket).
struct LeaseOp {
  enum class Kind { kStart, kProgress, kResult, kFail, kRelease };
  Kind kind = Kind::kStart;
  std::string task_id;
  int lease = 0;
  int percent = 0;                 // kProgress
  std::string message;             // kProgress
  std::string output, proof_hash;  // kResult
  std::string error;               // kFail
};

template <class T>
using Callback = std::function<void(Result<T>)>;

struct TaskFilter {
  std::optional<std::string> status, type;
  bool dead_letters = false;  // only tasks that used up their attempts (failed, timed_out)
};

struct Stats {
  int64_t nodes_online = 0, nodes_total = 0;
  int64_t pending = 0, running = 0, completed = 0, failed = 0;
};

using smart::Page;  // smart/core/page.hpp

class Coordinator {
 public:
  // Starts the sweeper; `db` must be migrated with Migrations() and the ledger's.
  Coordinator(store::Database& db, ledger::Ledger& ledger, TasksConfig config, const Clock& clock);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Tasks. Errors: kInvalid (unknown_task_type, input_too_large, invalid_*),
  // kConflict submissions_paused / cost_exceeds_max / too_many_tasks /
  // idempotency_key_reused, kPermissionDenied... and insufficient_funds
  // (kConflict, message with the amount needed).
  Result<Task> Submit(std::string_view requester, const SubmitRequest& req, std::string_view idempotency_key);
  // Up to 100 tasks at once, all or none (a refusal names the task: "tasks[3]...");
  // with an idempotency key, task i uses "<key>/<i>" (a replay answers them all again).
  Result<std::vector<Task>> SubmitBatch(std::string_view requester, const std::vector<SubmitRequest>& reqs,
                                        std::string_view idempotency_key);
  // The two without waiting: `done` gets the answer on the committer's
  // thread (keep it quick) or, for a refused request, at once.
  void SubmitAsync(std::string_view requester, const SubmitRequest& req, std::string_view idempotency_key,
                   Callback<Task> done);
  void SubmitBatchAsync(std::string_view requester, std::vector<SubmitRequest> reqs, std::string_view idempotency_key,
                        Callback<std::vector<Task>> done);
  Result<ledger::Amount> Estimate(std::string_view type, size_t input_bytes) const;
  // task_not_found unless the requester's (an empty requester: anyone's).
  // With `history`, the task's events too, from the same snapshot.
  Result<Task> Get(std::string_view requester, std::string_view id, std::vector<TaskEvent>* history = nullptr);
  Result<Page<Task>> List(std::string_view requester, const TaskFilter& filter, int limit, std::string_view cursor);
  Result<Task> Cancel(std::string_view requester, std::string_view id);
  // The dead-letter list: tasks that used up their attempts (failed,
  // timed_out), newest first; Retry queues one again with a new escrow hold.
  Result<Page<Task>> DeadLetters(std::string_view requester, int limit, std::string_view cursor);
  Result<Task> Retry(std::string_view requester, std::string_view id);

  // Nodes. `operator_id` is the user behind the credential.
  Result<Node> RegisterNode(std::string_view operator_id, const RegisterNodeRequest& req);
  Result<Node> GetNode(std::string_view id);
  Result<Page<Node>> ListNodes(int limit, std::string_view cursor);
  // Records a heartbeat and answers the node's status (online or maintenance).
  Result<std::string> Heartbeat(std::string_view operator_id, std::string_view node_id, int load, int running);
  Result<Node> Deactivate(std::string_view operator_id, std::string_view node_id);
  // Maintenance: the node keeps its stake and its tasks but gets no new ones.
  Result<Node> SetMaintenance(std::string_view operator_id, std::string_view node_id, bool on);
  Result<Stats> GetStats();

  // Leasing: only the node holding the current lease (node id and fencing
  // token) may act on a task; anything else is kConflict lease_stale.
  // Claim waits up to `wait_ms` for work; it returns at most `max` new tasks.
  // With `holding` (the tasks the node knows it holds), tasks assigned to it
  // that it does not know of are delivered again with their lease: the
  // answer that carried them was lost (smartd died before sending it).
  Result<std::vector<Task>> Claim(std::string_view operator_id, std::string_view node_id, int max, int64_t wait_ms,
                                  const std::vector<std::string>* holding = nullptr);
  // Claim without a waiting thread: `done` gets the tasks on the committer's
  // or the dispatcher's thread. A claim that finds nothing waits as a
  // one-time attachment (pushed work, below) that ends with the first tasks
  // it is given or at its deadline, which the dispatcher keeps: nothing is
  // assigned to a claim after it was answered.
  void ClaimAsync(std::string operator_id, std::string node_id, int max, int64_t wait_ms,
                  std::optional<std::vector<std::string>> holding, Callback<std::vector<Task>> done);
  Result<Task> Start(std::string_view operator_id, std::string_view node_id, std::string_view task_id, int lease);
  Result<Task> Progress(std::string_view operator_id, std::string_view node_id, std::string_view task_id, int lease,
                        int percent, std::string_view message);
  Result<Task> Complete(std::string_view operator_id, std::string_view node_id, std::string_view task_id, int lease,
                        std::string_view output, std::string_view proof_hash);
  Result<Task> Fail(std::string_view operator_id, std::string_view node_id, std::string_view task_id, int lease,
                    std::string_view error);
  // The lease holder gives the task back unstarted or unfinished (a node
  // shutting down): pending again, no attempt used, nothing slashed.
  Result<Task> Release(std::string_view operator_id, std::string_view node_id, std::string_view task_id, int lease);
  // Any of the five without waiting: `done` gets the task as it is afterwards,
  // on the committer's thread (keep it quick) or, for a refused request, at once.
  void Apply(std::string operator_id, std::string node_id, LeaseOp op, Callback<Task> done);
  // Heartbeats are written in batches, one transaction for all that arrived
  // meanwhile: thousands of nodes cost one commit. A batch waits up to 500 ms
  // for company, or 50 ms once it holds a beat whose answer someone awaits.
  enum class BeatAnswer { kAwaited, kUnawaited };
  void HeartbeatAsync(std::string operator_id, std::string node_id, int load, int running, BeatAnswer answer,
                      Callback<std::string> done);

  // Pushed work (the node WebSocket): while attached with credit, a node is
  // given tasks the moment they are claimable, best nodes first; `push` gets
  // them (or the error that ends the attachment: node_deactivated, ...) on the
  // committer's thread. `holding` as for Claim, checked on the first claim.
  // A node attached again by its operator (a reconnect while the old socket
  // still looks open) ends the older attachment with node_reattached: at once
  // on this instance; on another sharing the database, at the older one's
  // next claim, which finds the node taken by the newer one's first (the
  // nodes' attach_epoch), so no task is pushed to the older one after that.
  using Push = std::function<void(Result<std::vector<Task>>)>;
  uint64_t Attach(std::string operator_id, std::string node_id, std::vector<std::string> holding, Push push);
  // The node can take `n` more tasks (its credit grows by n, to at most 100).
  void Credit(uint64_t attachment, int n);
  void Detach(uint64_t attachment);
  size_t Attached();

  // Called after every committed transition of a task (on the thread that
  // made it: keep it quick). Set before serving; events/WebSocket fan-out.
  void OnUpdate(std::function<void(const Task&)> fn) { on_update_ = std::move(fn); }
  // Called when a node's status changes: it registers, goes offline (seen by
  // the sweep), comes back online, enters or leaves maintenance, is deactivated.
  void OnNodeUpdate(std::function<void(const Node&)> fn) { on_node_update_ = std::move(fn); }

  // Claims waiting for work on this instance now.
  size_t WaitingClaims();
  // Results completed together with others (one statement and one ledger
  // call for many) since the start, and those sent on their own (a replica's,
  // a refused one, one behind another operation on its task, or one whose
  // run failed).
  uint64_t ResultsCompletedTogether() const { return completed_together_.load(); }
  uint64_t ResultsAlone() const { return results_alone_.load(); }
  // Single submissions written together with others of their requester.
  uint64_t SubmittedTogether() const { return submitted_together_.load(); }

  // Waiting claims return at once and the sweeper stops: call before the
  // server drains its requests.
  void StopWaiting();

  // Admin.
  Result<Settings> GetSettings();
  Result<Settings> UpdateSettings(const Settings& s);

  // Expires leases (timeouts: slash, requeue or fail), releases the leases
  // of offline nodes and announces the nodes that went offline since the last
  // sweep. Runs every sweep_interval_ms; tests call it directly.
  Result<void> Sweep();

  const TasksConfig& config() const { return config_; }
  static std::vector<store::Migration> Migrations();

 private:
  // Runs `change` on a task under the lease of `node_id` (run by
  // `operator_id`; else node_not_found, node_not_yours, lease_stale), then
  // answers the task as it is afterwards and publishes it. A change that read
  // the task back as it left it (RETURNING) puts it in `after`; else it is read again.
  // `first`, when given, runs before the node and the task are read: true
  // when it made the change itself (the task in `after`), false to go on
  // with both read, checked and given to `change`.
  using LeaseChange =
      std::function<Result<void>(store::Tx& tx, const Task& t, const Node& n, int64_t now, std::optional<Task>& after)>;
  using LeaseFirst = std::function<Result<bool>(store::Tx& tx, int64_t now, std::optional<Task>& after)>;
  void OnLease(std::string operator_id, std::string node_id, std::string task_id, int lease, LeaseChange change,
               Callback<Task> done, LeaseFirst first = nullptr);
  // One claim's transaction: `claimed` gets the tasks, `node` the claimer.
  // `capped`, when given, gets the types whose claimable head the claim left
  // to requesters at their cap: it took fewer than it wanted, and skipped
  // tasks of those types only for the cap (so no other node would take them).
  // `fence`, for a node's attachment (pushed work): its first claim takes
  // the node (attach_epoch moves on, `epoch` gets it); a later one goes on
  // only while the node is still its, else node_reattached: the node attached
  // again since, maybe on another instance sharing the database.
  struct Fence {
    bool take = true;
    int64_t epoch = 0;
  };
  Result<void> ClaimIn(store::Tx& tx, std::string_view operator_id, std::string_view node_id, int max,
                       const std::vector<std::string>* holding, std::vector<Task>& claimed, Node& node,
                       std::set<std::string>* capped = nullptr, Fence* fence = nullptr);
  // Pushed work: rounds that match claimable tasks to attached nodes with
  // credit, best first, and claim for all of them in one group commit.
  void RunDispatcher();
  void DispatchRound();
  void RunSweeper();
  // New work (submitted, given back, queued again): the dispatcher here is
  // woken and the other instances sharing the database are told
  // (kWorkChannel), whose dispatchers wake (WakeHere).
  void WakeClaimers();
  void WakeHere();
  static constexpr std::string_view kWorkChannel = "smart_tasks_work";
  void Notify(const Task& t) const {
    if (on_update_) on_update_(t);
  }
  void NotifyById(std::string_view task_id);
  void NotifyAgreedReplicas(std::string_view parent_id);
  void NotifyClaimed(const std::vector<Task>& claimed);
  // Back to pending if attempts remain (a failure `counts` against them),
  // else final with `final_status` and the escrow voided.
  Result<void> Requeue(store::Tx& tx, const Task& t, std::string_view final_status, std::string error, bool counts,
                       int64_t now);
  // A submission checked before its transaction: what it holds, what each run costs.
  struct Prepared {
    ledger::Amount cost = 0, price = 0;
    std::string fingerprint;
  };
  Result<Prepared> Prepare(const SubmitRequest& req) const;
  // Submits reqs[i] as ids[i] with the idempotency key keys[i] (empty: none)
  // into out[i]: replays first, then one fair-queue update and one ledger call
  // for all the new ones. A batch's errors name the task (tasks[i]).
  Result<void> SubmitIn(store::Tx& tx, std::string_view requester, std::span<const SubmitRequest> reqs,
                        std::span<const Prepared> prepared, std::span<const std::string> keys,
                        std::span<const std::string> ids, std::span<Task> out);
  // A replica's result: recorded, then its redundant task is settled if it can be.
  Result<void> CompleteReplica(store::Tx& tx, const Task& t, const Node& n, const std::string& output,
                               const std::string& proof_hash, int64_t now);
  // Settles, disputes (one more replica) or fails a redundant task from its replicas' results.
  Result<void> EvaluateReplicas(store::Tx& tx, std::string_view parent_id, int64_t now);
  // Takes slash_pct of the node's stake to platform/treasury; the rest stays held.
  Result<void> Slash(store::Tx& tx, const Node& node);
  Result<void> ExpireLease(std::string_view task_id);
  Result<void> ExpireDeadline(std::string_view task_id);
  // Places in fair queueing: after the previous tasks of the requester's
  // lane of that priority and no earlier than the work being handed out now.
  // Advances the lane by `steps` (the sum of its new tasks' steps) and
  // returns where it ends: the last new task's key.
  Result<int64_t> FairKey(store::Tx& tx, std::string_view requester, Priority priority, int64_t steps);
  Result<void> ReleaseLease(std::string_view task_id);

  store::Database& db_;
  ledger::Ledger& ledger_;
  TasksConfig config_;
  const Clock& clock_;

  std::mutex wake_mu_;
  std::condition_variable sweep_cv_;  // the sweeper, between sweeps (not woken by new work)
  bool stopping_ = false;
  struct Attachment {
    std::string operator_id, node_id;
    std::vector<std::string> holding;
    bool first = true;  // `holding` is checked on the first claim only
    Push push;
    int credit = 0;
    int64_t score = 0;
    std::vector<std::string> capabilities;  // known after the first claim
    int64_t epoch = 0;                      // the node's attach_epoch its first claim took
    // A waiting claim (ClaimAsync): ends with the first tasks it is given, or
    // at this time with none; not the node's attachment (attached_nodes_).
    std::optional<std::chrono::steady_clock::time_point> until;
  };
  struct Beat {
    std::string operator_id, node_id;
    int load = 0, running = 0;
    Callback<std::string> done;
  };
  void RunBeatWriter();
  // Progress reports waiting for the writer, by operator, node, task and lease.
  struct ProgressReport {
    int percent = 0;
    std::string message;
    std::vector<Callback<Task>> waiting;
  };
  std::mutex progress_mu_;
  std::map<std::string, std::shared_ptr<ProgressReport>> progress_;
  // Single submissions waiting for the writer, by requester: each
  // requester's are written together (SubmitIn for all of them: one
  // fair-queue update, one ledger call, multi-row inserts); if that fails,
  // each goes again on its own, which gives it its own answer.
  struct SubmitItem {
    SubmitRequest req;
    Prepared prepared;
    std::string key, id;
    Callback<Task> done;
  };
  struct SubmitRun;
  std::mutex submits_mu_;
  std::map<std::string, std::vector<SubmitItem>, std::less<>> submits_;
  std::atomic<uint64_t> submitted_together_{0};
  void QueueSubmits(const std::string& requester);
  void SubmitAlone(std::shared_ptr<SubmitRun> run, size_t i);
  // Answers run's submission i (its task, announced unless replayed; or r's error).
  void AnswerSubmit(SubmitRun& run, size_t i, const Result<void>& r);
  // Results waiting for the writer, completed together (CompleteResults: one
  // multi-row statement and one ledger call for all of them). A result for a
  // task with another lease operation on its way goes on its own, after it.
  struct ResultItem;
  std::mutex results_mu_;
  std::vector<std::shared_ptr<ResultItem>> results_;
  bool results_queued_ = false;  // a writer job will take results_
  std::atomic<uint64_t> completed_together_{0}, results_alone_{0};
  std::map<std::string, int> ops_;  // lease operations on their way, by task id
  void QueueResults();
  // A result on its own: OnLease with CompleteResults for it alone first
  // (the path that says why a result is refused).
  void CompleteAlone(std::shared_ptr<ResultItem> item);
  // `done` of a lease operation on `task_id` now on its way.
  Callback<Task> Tracked(const std::string& task_id, Callback<Task> done);
  // Completes every result whose task is not a replica and whose node holds
  // the lease and is the operator's, in one statement per 32 (after[i] the
  // task, or nullopt for those to go on their own), and settles them: each
  // escrow posted; per chunk each operator paid and the fee, one transfer
  // each; the nodes' counters.
  Result<void> CompleteResults(store::Tx& tx, std::span<const std::shared_ptr<ResultItem>> items,
                               std::vector<std::optional<Task>>& after);
  std::mutex beat_mu_;
  std::condition_variable beat_cv_;
  std::vector<Beat> beats_;
  bool beats_awaited_ = false;  // beats_ holds one whose answer is awaited
  bool beats_stopping_ = false;

  std::mutex push_mu_;
  std::condition_variable push_cv_;
  std::map<uint64_t, Attachment> attached_;
  std::map<std::string, uint64_t> attached_nodes_;                  // operator_id + '\n' + node_id -> its attachment
  void EndAttachment(std::map<uint64_t, Attachment>::iterator it);  // under push_mu_
  std::set<std::pair<std::chrono::steady_clock::time_point, uint64_t>> claims_until_;  // waiting claims' deadlines
  // Ends the waiting claims whose deadline has passed (under push_mu_); their answers, to call without it.
  std::vector<Push> ExpireClaims(std::chrono::steady_clock::time_point now);
  // The attachments with credit, indexed so that a dispatch round visits the
  // nodes it gives work to, not every node attached: those on their first
  // claim, and the others by capability, best first (-score, id). Kept by
  // Unready before and Ready after every change to an attachment.
  std::set<uint64_t> ready_first_;
  std::map<std::string, std::set<std::pair<int64_t, uint64_t>>, std::less<>> ready_;
  void Ready(uint64_t id, const Attachment& a);
  void Unready(uint64_t id, const Attachment& a);
  uint64_t next_attachment_ = 1;
  bool push_wake_ = false, push_stopping_ = false;
  // The types whose last claim found only requesters at their cap (the
  // dispatcher thread's own): a round probes them with one node, not all.
  std::set<std::string> stalled_;
  // Some are (stalled_ not empty): a task leaving the active states, which
  // frees a place under its requester's cap, wakes the dispatcher (FreedPlace),
  // and those of the other instances sharing the database whose own are
  // (kFreedChannel; signals close together are sent as one).
  std::atomic<bool> capped_waiting_{false};
  void FreedPlace();
  void FreedPlaceHere();
  static constexpr std::string_view kFreedChannel = "smart_tasks_freed";
  // Per type, the requester a claim that read past requesters at their cap
  // stopped after (the writer's own, ClaimIn): the next one goes on from there.
  std::map<std::string, std::string> heads_from_;

  std::function<void(const Task&)> on_update_;
  std::function<void(const Node&)> on_node_update_;
  std::atomic<int64_t> last_sweep_ms_{0};  // nodes silent since before it were announced offline then
  store::GroupCommitter writer_;  // every write: concurrent transitions share a commit; its callbacks use the above
  std::unique_ptr<store::Database::Listening> listening_;        // kWorkChannel: set once the threads run
  std::unique_ptr<store::Database::Listening> freed_listening_;  // kFreedChannel, likewise
  std::thread sweeper_;                                          // last: stop first
  std::thread dispatcher_;
  std::thread beat_writer_;
};

}  // namespace smart::tasks
