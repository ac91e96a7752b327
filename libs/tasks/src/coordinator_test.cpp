// The coordinator against a real database (SQLite, or the fixture's PostgreSQL
// as tasks_pgtest) with the real ledger and a fake clock.
#include "smart/tasks/coordinator.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

#include "smart/core/crypto.hpp"
#include "smart/testing/postgres.hpp"
#include "smart/testing/process.hpp"

namespace smart::tasks {
namespace {

using namespace std::chrono_literals;
using ledger::Amount;
using ledger::FormatAmount;

// Holds the database's writer with a transaction of the test's until it goes
// out of scope, so that what the coordinator is asked meanwhile waits for it
// together (on PostgreSQL, what touches the tasks table waits).
class WriterHold {
 public:
  explicit WriterHold(store::Database& db)
      : holder_([this, &db] {
          (void)db.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
            if (db.backend() == "postgresql") SMART_TRY(tx.Exec("LOCK TABLE tasks IN EXCLUSIVE MODE"));
            holding_.set_value();
            release_.get_future().wait();
            return Ok();
          });
        }) {
    holding_.get_future().wait();
  }
  ~WriterHold() {
    release_.set_value();
    holder_.join();
  }

 private:
  std::promise<void> holding_, release_;
  std::thread holder_;
};

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = std::getenv("SMART_TEST_PG_URL_FILE") ? testing::FreshPostgresDatabase() : "sqlite:" + dir_.path() + "/t.db";
    ASSERT_FALSE(url_.empty());
    db_ = std::move(store::Open(url_)).value();
    auto ms = ledger::Ledger::Migrations();
    for (auto& m : Coordinator::Migrations()) ms.push_back(m);
    ASSERT_TRUE(store::Migrate(*db_, ms).ok());
    ledger_ = std::make_unique<ledger::Ledger>(
        *db_, ledger::LedgerConfig{.assets = {{"USDC", 6}}, .sweep_interval_ms = 0}, clock_);
    config_.sweep_interval_ms = 0;
    config_.min_timeout_s = 10;
    config_.min_stake = 1'000'000;
    coord_ = std::make_unique<Coordinator>(*db_, *ledger_, config_, clock_);
  }
  void TearDown() override {
    coord_.reset();
    if (ledger_) {
      auto v = ledger::Verify(*db_);
      ASSERT_TRUE(v.ok());
      EXPECT_TRUE(v->ok) << v->divergence;  // every test leaves a ledger that verifies
    }
  }

  // The task's history, as GET /tasks/{id} reads it.
  Result<std::vector<TaskEvent>> History(const std::string& who, const std::string& id) {
    std::vector<TaskEvent> history;
    auto t = coord_->Get(who, id, &history);
    if (!t) return t.take_error();
    return history;
  }

  void Fund(const std::string& user, Amount amount) {
    ASSERT_TRUE(ledger_
                    ->Execute({{.key = "fund/" + user + "/" + std::to_string(++funds_),
                                .debit = {"platform", "issuer", "USDC"},
                                .credit = {user, "available", "USDC"},
                                .amount = amount,
                                .code = "mint"}})
                    .ok());
  }
  ledger::Account Acc(const std::string& owner, std::string_view kind = "available") {
    return *ledger_->GetAccount({owner, std::string(kind), "USDC"});
  }
  std::string Balance(const std::string& owner, std::string_view kind = "available") {
    return Acc(owner, kind).Balance();
  }
  Node MakeNode(const std::string& op, const std::string& name, std::vector<std::string> caps = {"echo"},
                int capacity = 4) {
    Fund(op, 1'000'000);
    auto n = coord_->RegisterNode(op, {.name = name, .capabilities = std::move(caps), .capacity = capacity});
    EXPECT_TRUE(n.ok()) << n.error().message;
    return n.ok() ? *n : Node{};
  }
  // The coordinator again, with another per-requester cap.
  void CapRequesters(int cap) {
    coord_.reset();
    config_.max_per_requester = cap;
    coord_ = std::make_unique<Coordinator>(*db_, *ledger_, config_, clock_);
  }
  // usr_a with `queued` echo tasks and a cap of 2 per requester, both places
  // held by node x (usr_x's); y (usr_y's) runs echo too.
  struct AtCap {
    Node x, y;
    std::vector<Task> held;
  };
  AtCap FillTheCap(size_t queued) {
    CapRequesters(2);
    Fund("usr_a", 1'000'000'000);
    EXPECT_TRUE(
        coord_->SubmitBatch("usr_a", std::vector<SubmitRequest>(queued, {.type = "echo", .timeout_s = 60}), "").ok());
    AtCap at{.x = MakeNode("usr_x", "x", {"echo"}, 10), .y = MakeNode("usr_y", "y", {"echo"}, 10)};
    auto held = coord_->Claim("usr_x", at.x.id, 10, 0);
    EXPECT_TRUE(held.ok());
    if (held.ok()) at.held = *held;
    EXPECT_EQ(at.held.size(), 2u) << "usr_a's cap";
    return at;
  }
  // The queue's next task: claimed alone by `n` and completed at once (a
  // claim that finds none throws, failing the test).
  Task TakeOne(const Node& n) {
    auto got = coord_->Claim(n.operator_id, n.id, 1, 0);
    EXPECT_TRUE(got.ok()) << got.error().message;
    Task t = got->at(0);
    EXPECT_TRUE(coord_->Complete(n.operator_id, n.id, t.id, t.attempt, "x", crypto::Sha256Hex("x")).ok());
    return t;
  }
  Task Submit(const std::string& who, std::string input = "hello", Priority p = Priority::kNormal,
              std::string type = "echo", int attempts = 3) {
    auto t = coord_->Submit(
        who,
        {.type = std::move(type), .input = std::move(input), .priority = p, .timeout_s = 60, .max_attempts = attempts},
        "");
    EXPECT_TRUE(t.ok()) << t.error().message;
    return t.ok() ? *t : Task{};
  }

  testing::TempDir dir_;
  std::string url_;
  FakeClock clock_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<ledger::Ledger> ledger_;
  TasksConfig config_;
  std::unique_ptr<Coordinator> coord_;
  int funds_ = 0;
};

TEST_F(CoordinatorTest, TheWholeFlowMovesMoneyExactlyOnce) {
  Fund("usr_req", 1'000'000);
  Node node = MakeNode("usr_op", "n1");
  EXPECT_EQ(node.status, "online");
  EXPECT_EQ(FormatAmount(node.stake), "1000000");
  EXPECT_EQ(FormatAmount(Acc("usr_op").Spendable()), "0") << "the stake is held";

  Task t = Submit("usr_req", std::string(1500, 'x'));  // 2 started kB of "other" (25000)
  EXPECT_EQ(t.status, "pending");
  EXPECT_EQ(FormatAmount(t.cost), "50000");
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "950000");

  auto claimed = coord_->Claim("usr_op", node.id, 5, 0);
  ASSERT_TRUE(claimed.ok()) << claimed.error().message;
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].attempt, 1);
  EXPECT_EQ((*claimed)[0].status, "assigned");
  ASSERT_TRUE(coord_->Start("usr_op", node.id, t.id, 1).ok());
  ASSERT_TRUE(coord_->Progress("usr_op", node.id, t.id, 1, 50, "half").ok());
  EXPECT_EQ(coord_->Get("usr_req", t.id)->progress, 50);

  std::string out = "result text";
  EXPECT_EQ(coord_->Complete("usr_op", node.id, t.id, 1, out, std::string(64, '0')).error().code, "invalid_proof");
  clock_.Advance(1s);
  auto done = coord_->Complete("usr_op", node.id, t.id, 1, out, crypto::Sha256Hex(out));
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->status, "completed");
  EXPECT_EQ(done->output, out);
  // The answer is the task as stored.
  Task stored = *coord_->Get("usr_req", t.id);
  EXPECT_EQ(done->status, stored.status);
  EXPECT_EQ(done->output, stored.output);
  EXPECT_EQ(done->proof_hash, stored.proof_hash);
  EXPECT_EQ(done->progress, stored.progress);
  EXPECT_EQ(done->updated_ms, stored.updated_ms);
  EXPECT_EQ(done->completed_ms, stored.completed_ms);
  EXPECT_GT(done->completed_ms, t.created_ms);
  EXPECT_EQ(done->lease_expires_ms, stored.lease_expires_ms);
  EXPECT_EQ(done->attempt, stored.attempt);
  EXPECT_EQ(done->node_id, stored.node_id);
  // A retry of the same result is answered the same; nothing moves again.
  ASSERT_TRUE(coord_->Complete("usr_op", node.id, t.id, 1, out, crypto::Sha256Hex(out)).ok());

  EXPECT_EQ(Balance("usr_req"), "950000");
  EXPECT_EQ(Balance("usr_op"), "1045000");  // funded 1,000,000 + 90% of 50,000 (the stake is still held)
  EXPECT_EQ(Balance("platform", "fees"), "5000");
  EXPECT_EQ(Balance("platform", "escrow"), "0");
  EXPECT_EQ(coord_->GetNode(node.id)->reputation, 110);
  auto events = History("usr_req", t.id);
  ASSERT_TRUE(events.ok());
  std::vector<std::string> statuses;
  for (const auto& e : *events) statuses.push_back(e.status);
  EXPECT_EQ(statuses, (std::vector<std::string>{"pending", "assigned", "in_progress", "completed"}));
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].seq, static_cast<int>(i) + 1);
  EXPECT_EQ((*events)[0].detail, R"({"cost":"50000"})");
  EXPECT_EQ((*events)[0].node_id, "");
  EXPECT_EQ((*events)[0].ts_ms, t.created_ms);
  EXPECT_EQ((*events)[1].detail, R"({"lease":1})");
  EXPECT_EQ((*events)[1].node_id, node.id);
  EXPECT_EQ((*events)[3].detail, "{\"proof_hash\":\"" + crypto::Sha256Hex(out) + "\"}");
  EXPECT_EQ((*events)[3].node_id, node.id);
  EXPECT_EQ((*events)[3].ts_ms, done->completed_ms);
  EXPECT_EQ(History("usr_other", t.id).error().code, "task_not_found");
  EXPECT_EQ(coord_->Get("usr_other", t.id).error().code, "task_not_found") << "others' tasks are invisible";
}

// Migration 306 moves the history of tasks made before it into their rows.
TEST(CoordinatorMigration, EarlierTasksKeepTheirHistoryAndPlaces) {
  smart::testing::TempDir dir;
  std::string url =
      std::getenv("SMART_TEST_PG_URL_FILE") ? testing::FreshPostgresDatabase() : "sqlite:" + dir.path() + "/t.db";
  auto db = std::move(store::Open(url)).value();
  auto all = ledger::Ledger::Migrations();
  for (auto& m : Coordinator::Migrations()) all.push_back(m);
  std::vector<store::Migration> before;
  for (const auto& m : all) {
    if (m.version < 306 || m.version >= 400) before.push_back(m);
  }
  ASSERT_TRUE(store::Migrate(*db, before).ok());
  ASSERT_TRUE(db->Transact(store::TxMode::kWrite, [](store::Tx& tx) -> Result<void> {
                  SMART_TRY(tx.Exec(
                      "INSERT INTO tasks (id, requester, type, input, input_is_json, parameters, priority, status, "
                      "asset, cost, timeout_s, max_attempts, attempt, failures, lease_expires_ms, progress, "
                      "progress_message, escrow_id, fingerprint, created_ms, updated_ms, completed_ms) VALUES "
                      "('task_old', 'usr_req', 'echo', 'x', 0, '{}', 1, 'assigned', 'USDC', '10', 60, 3, 1, 0, 0, "
                      "0, '', 'tr_1', 'f', 5, 7, 0)"));
                  SMART_TRY(
                      tx.Exec("INSERT INTO task_events (task_id, seq, ts_ms, status, node_id, detail) VALUES "
                              "('task_old', 2, 7, 'assigned', 'node_a', '{\"lease\":1}'), "
                              "('task_old', 1, 5, 'pending', NULL, '{\"cost\":\"10\"}')"));
                  SMART_TRY(tx.Exec("INSERT INTO task_requesters (requester, last_key) VALUES ('usr_req', 42000000)"));
                  return Ok();
                }).ok());
  auto migrated = store::Migrate(*db, all);
  ASSERT_TRUE(migrated.ok()) << migrated.error().message;
  FakeClock clock;
  ledger::Ledger ledger(*db, ledger::LedgerConfig{.assets = {{"USDC", 6}}, .sweep_interval_ms = 0}, clock);
  TasksConfig config;
  config.sweep_interval_ms = 0;
  Coordinator coord(*db, ledger, config, clock);
  std::vector<TaskEvent> history;
  auto migrated_task = coord.Get("usr_req", "task_old", &history);
  ASSERT_TRUE(migrated_task.ok()) << migrated_task.error().message;
  EXPECT_EQ(migrated_task->status, "assigned");
  auto events = Result<std::vector<TaskEvent>>(std::move(history));
  ASSERT_TRUE(events.ok()) << events.error().message;
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].seq, 1);
  EXPECT_EQ((*events)[0].status, "pending");
  EXPECT_EQ((*events)[0].ts_ms, 5);
  EXPECT_EQ((*events)[0].node_id, "");
  EXPECT_EQ((*events)[0].detail, R"({"cost":"10"})");
  EXPECT_EQ((*events)[1].seq, 2);
  EXPECT_EQ((*events)[1].status, "assigned");
  EXPECT_EQ((*events)[1].node_id, "node_a");
  EXPECT_EQ((*events)[1].detail, R"({"lease":1})");
  // The requester's place in fair queueing becomes each of its priority lanes' (307).
  auto lanes = db->Transact(store::TxMode::kRead, [](store::Tx& tx) -> Result<void> {
    auto row = tx.QueryOne("SELECT COUNT(*), MIN(last_key), MAX(last_key) FROM task_lanes WHERE requester = 'usr_req'");
    if (!row) return row.take_error();
    EXPECT_EQ((*row)->Int(0), 4);
    EXPECT_EQ((*row)->Int(1), 42000000);
    EXPECT_EQ((*row)->Int(2), 42000000);
    return Ok();
  });
  EXPECT_TRUE(lanes.ok()) << lanes.error().message;
}

TEST_F(CoordinatorTest, InsufficientFundsCreatesNothing) {
  Fund("usr_poor", 10);
  auto t = coord_->Submit("usr_poor", {.type = "echo", .input = "x"}, "");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code, "insufficient_funds");
  EXPECT_NE(t.error().message.find("25000"), std::string::npos) << t.error().message;
  EXPECT_TRUE(coord_->List("usr_poor", {}, 50, "")->items.empty());
  auto n = coord_->RegisterNode("usr_poor", {.name = "broke", .capabilities = {"echo"}});
  EXPECT_EQ(n.error().code, "insufficient_funds");
}

TEST_F(CoordinatorTest, TimeoutSlashesRequeuesAndFencesTheOldLease) {
  Fund("usr_req", 1'000'000);
  Node a = MakeNode("usr_a", "a"), b = MakeNode("usr_b", "b");
  Task t = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_a", a.id, 1, 0)->size(), 1u);
  EXPECT_TRUE(coord_->Claim("usr_b", b.id, 1, 0)->empty());
  clock_.Advance(61s);
  ASSERT_TRUE(coord_->Heartbeat("usr_a", a.id, 10, 1).ok());  // alive, but too slow
  ASSERT_TRUE(coord_->Heartbeat("usr_b", b.id, 0, 0).ok());
  ASSERT_TRUE(coord_->Sweep().ok());
  Task after = *coord_->Get("usr_req", t.id);
  EXPECT_EQ(after.status, "pending");
  EXPECT_EQ(after.failures, 1);
  Node slashed = *coord_->GetNode(a.id);
  EXPECT_EQ(FormatAmount(slashed.stake), "900000");
  EXPECT_EQ(FormatAmount(slashed.slashed), "100000");
  EXPECT_EQ(slashed.reputation, 50);
  EXPECT_EQ(Balance("platform", "treasury"), "100000");
  EXPECT_EQ(FormatAmount(Acc("usr_a").debits_pending), "900000");

  auto again = coord_->Claim("usr_b", b.id, 1, 0);
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].attempt, 2);
  std::string out = "late";
  auto stale = coord_->Complete("usr_a", a.id, t.id, 1, out, crypto::Sha256Hex(out));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, "lease_stale");
  EXPECT_EQ(coord_->Start("usr_b", b.id, t.id, 1).error().code, "lease_stale") << "the old token, the new node";
  EXPECT_EQ(coord_->Complete("usr_b", a.id, t.id, 2, out, crypto::Sha256Hex(out)).error().code, "node_not_yours");
  auto intruder = coord_->Complete("usr_a", b.id, t.id, 2, out, crypto::Sha256Hex(out));
  ASSERT_FALSE(intruder.ok()) << "the lease's node and token, but another operator";
  EXPECT_EQ(intruder.error().code, "node_not_yours");
  ASSERT_TRUE(coord_->Complete("usr_b", b.id, t.id, 2, out, crypto::Sha256Hex(out)).ok());
  EXPECT_EQ(Balance("usr_b"), "1022500");
  EXPECT_EQ(Balance("usr_a"), "900000") << "the slash left; nothing was paid to the slow node";
}

TEST_F(CoordinatorTest, ADeadNodesLeaseIsReleasedWithoutSlashing) {
  Fund("usr_req", 1'000'000);
  Node a = MakeNode("usr_a", "a"), b = MakeNode("usr_b", "b");
  Task t = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_a", a.id, 1, 0)->size(), 1u);
  clock_.Advance(16s);
  ASSERT_TRUE(coord_->Heartbeat("usr_b", b.id, 0, 0).ok());
  EXPECT_EQ(coord_->GetNode(a.id)->status, "offline");
  ASSERT_TRUE(coord_->Sweep().ok());
  EXPECT_EQ(coord_->Get("usr_req", t.id)->status, "pending");
  EXPECT_EQ(coord_->Get("usr_req", t.id)->failures, 0);
  EXPECT_EQ(FormatAmount(coord_->GetNode(a.id)->stake), "1000000");
  ASSERT_EQ(coord_->Claim("usr_b", b.id, 1, 0)->size(), 1u);
}

// New work wakes waiting claims, not the sweeper: it sweeps once per interval.
TEST_F(CoordinatorTest, TheSweeperKeepsItsIntervalWhenWorkArrives) {
  coord_.reset();
  config_.sweep_interval_ms = 3'600'000;
  coord_ = std::make_unique<Coordinator>(*db_, *ledger_, config_, clock_);
  Fund("usr_req", 1'000'000);
  Node a = MakeNode("usr_a", "a");
  Task t = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_a", a.id, 1, 0)->size(), 1u);
  clock_.Advance(61s);  // the lease has run out; only a sweep notices
  ASSERT_TRUE(coord_->Heartbeat("usr_a", a.id, 1, 1).ok());
  for (int i = 0; i < 5; ++i) Submit("usr_req");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(coord_->Get("usr_req", t.id)->status, "assigned") << "no sweep before the interval";
  ASSERT_TRUE(coord_->Sweep().ok());
  EXPECT_EQ(coord_->Get("usr_req", t.id)->status, "pending");
}

// node_status: a node that stops beating is announced offline by the next sweep, once.
TEST_F(CoordinatorTest, TheSweepAnnouncesANodeGoneOfflineOnce) {
  Node a = MakeNode("usr_a", "a"), b = MakeNode("usr_b", "b");
  auto seen = std::make_shared<std::vector<std::string>>();  // the sweeps run on this thread
  coord_->OnNodeUpdate([seen](const Node& n) { seen->push_back(n.name + " " + n.status); });
  ASSERT_TRUE(coord_->Sweep().ok());
  clock_.Advance(10s);
  ASSERT_TRUE(coord_->Heartbeat("usr_b", b.id, 0, 0).ok());
  clock_.Advance(6s);  // a: silent for 16 s, offline after 15; b: 6 s
  ASSERT_TRUE(coord_->Sweep().ok());
  EXPECT_EQ(*seen, std::vector<std::string>{"a offline"});
  clock_.Advance(1s);
  ASSERT_TRUE(coord_->Sweep().ok());
  EXPECT_EQ(seen->size(), 1u) << "announced once";
  ASSERT_TRUE(coord_->SetMaintenance("usr_b", b.id, true).ok());
  seen->clear();
  clock_.Advance(60s);
  ASSERT_TRUE(coord_->Sweep().ok());
  EXPECT_TRUE(seen->empty()) << "a node in maintenance is not online to begin with";
}

// Every instance sharing the database sweeps (a second coordinator here);
// each silence is announced by one of them, and a node that comes back and
// falls silent again is announced again.
TEST_F(CoordinatorTest, ANodeGoneOfflineIsAnnouncedByOneInstance) {
  Node a = MakeNode("usr_a", "a");
  Coordinator other(*db_, *ledger_, config_, clock_);
  struct Seen {  // the beat's announcement comes from the beat writer's thread
    std::mutex mu;
    std::vector<std::string> offline;
  };
  auto seen = std::make_shared<Seen>();
  auto heard = [seen](std::string instance) {
    return [seen, instance](const Node& n) {
      std::lock_guard lk(seen->mu);
      if (n.status == "offline") seen->offline.push_back(instance + " " + n.name);
    };
  };
  coord_->OnNodeUpdate(heard("first"));
  other.OnNodeUpdate(heard("other"));
  auto sweep_both = [&](bool other_first) {
    for (Coordinator* c : other_first ? std::vector{&other, coord_.get()} : std::vector{coord_.get(), &other}) {
      ASSERT_TRUE(c->Sweep().ok());
    }
  };
  sweep_both(false);
  clock_.Advance(16s);  // offline after 15
  sweep_both(true);
  sweep_both(false);
  {
    std::lock_guard lk(seen->mu);
    EXPECT_EQ(seen->offline, std::vector<std::string>{"other a"});
  }
  ASSERT_TRUE(coord_->Heartbeat("usr_a", a.id, 0, 0).ok());
  clock_.Advance(16s);
  sweep_both(false);
  sweep_both(true);
  std::lock_guard lk(seen->mu);
  EXPECT_EQ(seen->offline, (std::vector<std::string>{"other a", "first a"}));
}

TEST_F(CoordinatorTest, FailuresUseUpAttemptsThenRefund) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req", "x", Priority::kNormal, "echo", 2);
  for (int lease = 1; lease <= 2; ++lease) {
    ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
    ASSERT_TRUE(coord_->Fail("usr_op", n.id, t.id, lease, "boom").ok());
  }
  Task failed = *coord_->Get("usr_req", t.id);
  EXPECT_EQ(failed.status, "failed");
  EXPECT_EQ(failed.error, "boom");
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "1000000") << "refunded";
  EXPECT_TRUE(coord_->Claim("usr_op", n.id, 1, 0)->empty());
}

TEST_F(CoordinatorTest, ReleaseGivesTheTaskBackWithoutUsingAnAttempt) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req", "x", Priority::kNormal, "echo", 1);
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
  auto r = coord_->Release("usr_op", n.id, t.id, 1);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, "pending");
  EXPECT_EQ(r->failures, 0);
  EXPECT_EQ(coord_->Release("usr_op", n.id, t.id, 1).error().code, "lease_stale");
  auto again = coord_->Claim("usr_op", n.id, 1, 0);
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].attempt, 2);
}

TEST_F(CoordinatorTest, CancelRefundsAndFinalTasksStayFinal) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
  auto c = coord_->Cancel("usr_req", t.id);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->status, "cancelled");
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "1000000");
  EXPECT_EQ(coord_->Cancel("usr_req", t.id).error().code, "task_final");
  std::string out = "x";
  EXPECT_EQ(coord_->Complete("usr_op", n.id, t.id, 1, out, crypto::Sha256Hex(out)).error().code, "lease_stale");
  EXPECT_EQ(coord_->Cancel("usr_other", t.id).error().code, "task_not_found");
}

TEST_F(CoordinatorTest, PriorityThenAgeCapabilitiesAndCapacity) {
  Fund("usr_req", 10'000'000);
  Submit("usr_req", "1", Priority::kLow);
  Submit("usr_req", "2", Priority::kNormal);
  Task urgent = Submit("usr_req", "3", Priority::kUrgent);
  Task high = Submit("usr_req", "4", Priority::kHigh);
  Task other_type = Submit("usr_req", "5", Priority::kUrgent, "sha256");
  Node n = MakeNode("usr_op", "n", {"echo"}, 2);
  auto first = coord_->Claim("usr_op", n.id, 10, 0);
  ASSERT_EQ(first->size(), 2u) << "capacity 2";
  EXPECT_EQ((*first)[0].id, urgent.id);
  EXPECT_EQ((*first)[1].id, high.id);
  EXPECT_TRUE(coord_->Claim("usr_op", n.id, 10, 0)->empty()) << "full";
  ASSERT_TRUE(coord_->Fail("usr_op", n.id, urgent.id, 1, "x").ok());
  auto next = coord_->Claim("usr_op", n.id, 10, 0);
  ASSERT_EQ(next->size(), 1u);
  EXPECT_EQ((*next)[0].id, urgent.id) << "requeued, still the most urgent";
  EXPECT_EQ(coord_->Get("usr_req", other_type.id)->status, "pending") << "never given to a node without the type";
}

TEST_F(CoordinatorTest, PerRequesterCapLetsOthersThrough) {
  CapRequesters(2);
  Fund("usr_big", 10'000'000);
  Fund("usr_small", 1'000'000);
  for (int i = 0; i < 5; ++i) Submit("usr_big", std::to_string(i));
  Task mine = Submit("usr_small");
  Node n = MakeNode("usr_op", "n", {"echo"}, 10);
  auto got = coord_->Claim("usr_op", n.id, 10, 0);
  ASSERT_EQ(got->size(), 3u) << "two of the big requester's, then the cap";
  int big = 0;
  for (const auto& t : *got) big += t.requester == "usr_big";
  EXPECT_EQ(big, 2);
  EXPECT_TRUE(std::any_of(got->begin(), got->end(), [&](const Task& t) { return t.id == mine.id; }));
}

// Two requesters with deep backlogs at higher priorities, each at its cap
// after two: a claim takes two of each and a third requester's low task,
// last in queue order (its lane's step is eight urgent ones).
TEST_F(CoordinatorTest, CappedRequestersAtHigherPrioritiesLeaveRoomForOthers) {
  CapRequesters(2);
  Fund("usr_urgent", 1'000'000'000);
  Fund("usr_high", 1'000'000'000);
  Fund("usr_small", 1'000'000);
  ASSERT_TRUE(
      coord_
          ->SubmitBatch("usr_urgent",
                        std::vector<SubmitRequest>(
                            100, {.type = "echo", .input = "u", .priority = Priority::kUrgent, .timeout_s = 60}),
                        "")
          .ok());
  ASSERT_TRUE(coord_
                  ->SubmitBatch("usr_high",
                                std::vector<SubmitRequest>(
                                    100, {.type = "echo", .input = "h", .priority = Priority::kHigh, .timeout_s = 60}),
                                "")
                  .ok());
  Task mine = Submit("usr_small", "s", Priority::kLow);
  Node n = MakeNode("usr_op", "n", {"echo"}, 10);
  auto got = coord_->Claim("usr_op", n.id, 10, 0);
  ASSERT_TRUE(got.ok()) << got.error().message;
  std::map<std::string, int> by;
  for (const auto& t : *got) ++by[t.requester];
  EXPECT_EQ(by["usr_urgent"], 2);
  EXPECT_EQ(by["usr_high"], 2);
  EXPECT_EQ(by["usr_small"], 1);
  EXPECT_EQ(got->back().id, mine.id) << "in queue order";
  // At their caps and nothing else queued: a claim finds nothing, and says so.
  EXPECT_TRUE(coord_->Claim("usr_op", n.id, 10, 0)->empty());
}

// A requester at its cap keeps its backlog at the head of the queue while
// the others are served and the virtual time moves on past it, so after a
// while a whole claim's page of it stands before every newer task. Another
// requester's tasks are still taken at once (here 60 of them, one claim of one
// each: the page is 12 tasks), and the capped one's still run first in,
// first out, when a place frees.
TEST_F(CoordinatorTest, ARequesterAtItsCapHidesNoOneElsesTasks) {
  CapRequesters(2);
  Fund("usr_a", 1'000'000'000);
  Fund("usr_b", 1'000'000'000);
  std::vector<Task> a;
  for (int b = 0; b < 5; ++b) {
    auto made = coord_->SubmitBatch("usr_a", std::vector<SubmitRequest>(100, {.type = "echo", .timeout_s = 60}), "");
    ASSERT_TRUE(made.ok()) << made.error().message;
    a.insert(a.end(), made->begin(), made->end());
  }
  Node n = MakeNode("usr_op", "n", {"echo"}, 10);
  auto first = coord_->Claim("usr_op", n.id, 10, 0);
  ASSERT_EQ(first->size(), 2u) << "usr_a's cap";
  for (int i = 0; i < 60; ++i) {
    Task t = Submit("usr_b", "b");
    auto got = coord_->Claim("usr_op", n.id, 1, 0);
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_EQ(got->size(), 1u) << "usr_b's task " << i;
    EXPECT_EQ(got->at(0).id, t.id);
    ASSERT_TRUE(coord_->Complete("usr_op", n.id, t.id, 1, "b", crypto::Sha256Hex("b")).ok());
  }
  ASSERT_TRUE(coord_->Complete("usr_op", n.id, a[0].id, 1, "a", crypto::Sha256Hex("a")).ok());
  auto next = coord_->Claim("usr_op", n.id, 10, 0);
  ASSERT_EQ(next->size(), 1u) << "one place freed";
  EXPECT_EQ(next->at(0).id, a[2].id) << "usr_a's oldest waiting task";
}

// Past a requester at its cap, a claim reads at most 256 other requesters'
// heads, in turn from where the last one stopped: with 300 requesters of two
// tasks each behind a capped backlog, every one has its first task taken
// within 320 claims of one (reading from the start each time, the last 44
// would wait for the first 256's second tasks: 512 claims).
TEST_F(CoordinatorTest, ReadingPastACapTakesRequestersInTurn) {
  CapRequesters(2);
  Fund("usr_a", 1'000'000'000);
  Fund("usr_b", 1'000'000'000);
  ASSERT_TRUE(
      coord_->SubmitBatch("usr_a", std::vector<SubmitRequest>(100, {.type = "echo", .timeout_s = 60}), "").ok());
  Node n = MakeNode("usr_op", "n", {"echo"}, 10);
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 2, 0)->size(), 2u) << "usr_a's cap";
  for (int i = 0; i < 20; ++i) {  // the virtual time moves on past usr_a's head
    Submit("usr_b", "b");
    TakeOne(n);
  }
  std::set<std::string> waiting;
  for (int i = 0; i < 300; ++i) {
    char who[16];
    std::snprintf(who, sizeof who, "usr_%03d", i);
    Fund(who, 1'000'000);
    ASSERT_TRUE(coord_->SubmitBatch(who, std::vector<SubmitRequest>(2, {.type = "echo", .timeout_s = 60}), "").ok());
    waiting.insert(who);
  }
  int claims = 0;
  while (!waiting.empty() && claims < 320) {
    ++claims;
    waiting.erase(TakeOne(n).requester);
  }
  EXPECT_TRUE(waiting.empty()) << waiting.size() << " requesters not served in 320 claims, the first "
                               << *waiting.begin();
}

TEST_F(CoordinatorTest, IdempotentSubmit) {
  Fund("usr_req", 1'000'000);
  SubmitRequest r{.type = "echo", .input = "same"};
  auto a = coord_->Submit("usr_req", r, "k1");
  auto b = coord_->Submit("usr_req", r, "k1");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->id, b->id);
  EXPECT_TRUE(b->replayed);
  r.input = "different";
  EXPECT_EQ(coord_->Submit("usr_req", r, "k1").error().code, "idempotency_key_reused");
  EXPECT_TRUE(coord_->Submit("usr_other", {.type = "echo", .input = "same"}, "k1").error().code == "insufficient_funds")
      << "keys are per requester";
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "975000") << "held once";
}

TEST_F(CoordinatorTest, BadInputIsRefused) {
  Fund("usr_req", 1'000'000);
  struct Case {
    SubmitRequest req;
    std::string code;
  };
  std::vector<Case> cases = {
      {{.type = "mining", .input = "x"}, "unknown_task_type"},
      {{.type = "echo", .input = std::string((1 << 20) + 1, 'x')}, "input_too_large"},
      {{.type = "echo", .input = "bad \xff"}, "invalid_input"},
      {{.type = "echo", .input = "x", .parameters = "[]"}, "invalid_parameters"},
      {{.type = "echo", .input = "x", .max_attempts = 0}, "invalid_max_attempts"},
      {{.type = "echo", .input = "x", .max_attempts = 11}, "invalid_max_attempts"},
      {{.type = "echo", .input = "x", .timeout_s = 5}, "invalid_timeout"},
      {{.type = "echo", .input = "x", .timeout_s = 100000}, "invalid_timeout"},
      {{.type = "echo", .input = "x", .max_cost = 100}, "cost_exceeds_max"},
  };
  for (const auto& c : cases) EXPECT_EQ(coord_->Submit("usr_req", c.req, "").error().code, c.code) << c.code;
  Settings s = *coord_->GetSettings();
  s.paused = true;
  ASSERT_TRUE(coord_->UpdateSettings(s).ok());
  EXPECT_EQ(coord_->Submit("usr_req", {.type = "echo", .input = "x"}, "").error().code, "submissions_paused");
  s.max_tasks_per_node = 0;
  EXPECT_EQ(coord_->UpdateSettings(s).error().code, "invalid_settings");
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "1000000");

  Node n = MakeNode("usr_op", "n");
  EXPECT_EQ(coord_->RegisterNode("usr_op", {.name = "n", .capabilities = {"echo"}}).error().code, "node_name_taken");
  EXPECT_EQ(coord_->RegisterNode("usr_op", {.name = "bad name!", .capabilities = {"echo"}}).error().code,
            "invalid_name");
  EXPECT_EQ(coord_->RegisterNode("usr_op", {.name = "m", .capabilities = {"mining"}}).error().code,
            "unknown_task_type");
  EXPECT_EQ(coord_->RegisterNode("usr_op", {.name = "m", .capabilities = {"echo"}, .capacity = 0}).error().code,
            "invalid_capacity");
  EXPECT_EQ(coord_->RegisterNode("usr_op", {.name = "m", .capabilities = {"echo"}, .endpoint = "ftp://x"}).error().code,
            "invalid_endpoint");
  EXPECT_EQ(coord_->Heartbeat("usr_op", n.id, 101, 0).error().code, "invalid_load");
  EXPECT_EQ(coord_->Heartbeat("usr_intruder", n.id, 1, 0).error().code, "node_not_yours");
  EXPECT_EQ(coord_->Claim("usr_op", "node_missing", 1, 0).error().code, "node_not_found");
  EXPECT_EQ(coord_->Claim("usr_op", n.id, 0, 0).error().code, "invalid_max");
}

TEST_F(CoordinatorTest, HeartbeatsRecordLoadAndAnnounceOnlyAReturn) {
  Node n = MakeNode("usr_op", "n");
  struct Seen {  // shared: the coordinator may announce after this test's body
    std::mutex mu;
    std::vector<std::string> statuses;
  };
  auto seen = std::make_shared<Seen>();
  coord_->OnNodeUpdate([seen](const Node& u) {
    std::lock_guard lk(seen->mu);
    seen->statuses.push_back(u.status);
  });
  auto beat = coord_->Heartbeat("usr_op", n.id, 40, 2);
  ASSERT_TRUE(beat.ok()) << beat.error().message;
  EXPECT_EQ(*beat, "online");
  EXPECT_EQ(coord_->GetNode(n.id)->load, 40);
  EXPECT_EQ(coord_->GetNode(n.id)->running, 2);
  clock_.Advance(61s);
  EXPECT_EQ(coord_->GetNode(n.id)->status, "offline");
  beat = coord_->Heartbeat("usr_op", n.id, 10, 0);
  ASSERT_TRUE(beat.ok());
  EXPECT_EQ(*beat, "online");
  EXPECT_EQ(coord_->GetNode(n.id)->last_heartbeat_ms, clock_.NowMs());
  ASSERT_TRUE(coord_->Heartbeat("usr_op", n.id, 10, 0).ok());
  // In maintenance a node is "maintenance" before and after a beat: no news either.
  ASSERT_TRUE(coord_->SetMaintenance("usr_op", n.id, true).ok());
  beat = coord_->Heartbeat("usr_op", n.id, 10, 0);
  ASSERT_TRUE(beat.ok());
  EXPECT_EQ(*beat, "maintenance");
  ASSERT_TRUE(coord_->Heartbeat("usr_op", n.id, 10, 0).ok());
  std::lock_guard lk(seen->mu);
  EXPECT_EQ(seen->statuses, (std::vector<std::string>{"online", "maintenance"}))
      << "the return from offline and the switch to maintenance are news; beats that change nothing are not";
}

// A node's beats arriving together are one write, its latest; another
// node's and a wrong operator's stay their own.
TEST_F(CoordinatorTest, BeatsOfOneNodeTogetherAreOneWriteOfTheLatest) {
  Node a = MakeNode("usr_op", "a");
  Node b = MakeNode("usr_op", "b");
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Result<std::string>> answers;
  auto beat = [&](const std::string& name, const std::string& op, const std::string& node, int load) {
    coord_->HeartbeatAsync(op, node, load, 0, Coordinator::BeatAnswer::kUnawaited, [&, name](Result<std::string> r) {
      std::lock_guard lk(mu);
      answers.emplace(name, std::move(r));
      cv.notify_all();
    });
  };
  // Within one linger (500 ms when no answer is awaited) of each other: one batch.
  beat("a1", "usr_op", a.id, 10);
  beat("b1", "usr_op", b.id, 70);
  beat("a2", "usr_op", a.id, 20);
  beat("wrong", "usr_other", a.id, 99);
  beat("a3", "usr_op", a.id, 30);
  std::unique_lock lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return answers.size() == 5; }));
  for (const char* name : {"a1", "a2", "a3", "b1"}) {
    ASSERT_TRUE(answers.at(name).ok()) << name;
    EXPECT_EQ(*answers.at(name), "online") << name;
  }
  EXPECT_EQ(answers.at("wrong").error().code, "node_not_yours") << "another operator's beat for the node";
  lk.unlock();
  EXPECT_EQ(coord_->GetNode(a.id)->load, 30) << "the latest beat's";
  EXPECT_EQ(coord_->GetNode(b.id)->load, 70);
}

// Unawaited beats wait long for company (fewer commits); a beat whose answer
// someone awaits takes the batch along after a short linger.
TEST_F(CoordinatorTest, AnAwaitedBeatDoesNotWaitForTheLongLinger) {
  Node a = MakeNode("usr_op", "a");
  Node b = MakeNode("usr_op", "b");
  struct Answers {  // shared: answered on the committer's thread
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<std::string>> quiet, awaited;
  };
  auto got = std::make_shared<Answers>();
  coord_->HeartbeatAsync("usr_op", a.id, 10, 0, Coordinator::BeatAnswer::kUnawaited, [got](Result<std::string> r) {
    std::lock_guard lk(got->mu);
    got->quiet = std::move(r);
    got->cv.notify_all();
  });
  std::this_thread::sleep_for(60ms);
  {
    std::lock_guard lk(got->mu);
    EXPECT_FALSE(got->quiet) << "an unawaited beat lingers for others";
  }
  const auto sent = std::chrono::steady_clock::now();
  coord_->HeartbeatAsync("usr_op", b.id, 20, 0, Coordinator::BeatAnswer::kAwaited, [got](Result<std::string> r) {
    std::lock_guard lk(got->mu);
    got->awaited = std::move(r);
    got->cv.notify_all();
  });
  std::unique_lock lk(got->mu);
  ASSERT_TRUE(got->cv.wait_for(lk, 5s, [&] { return got->quiet && got->awaited; }));
  // The batch was 60 ms old: flushed at once (the long linger would end ~440 ms later).
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 300ms);
  EXPECT_EQ(got->quiet->value(), "online");
  EXPECT_EQ(got->awaited->value(), "online");
}

TEST_F(CoordinatorTest, LeaseOperationsNameWhatIsMissing) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
  EXPECT_EQ(coord_->Start("usr_op", "node_missing", t.id, 1).error().code, "node_not_found");
  EXPECT_EQ(coord_->Start("usr_op", "node_missing", "task_missing", 1).error().code, "node_not_found");
  EXPECT_EQ(coord_->Start("usr_other", n.id, "task_missing", 1).error().code, "node_not_yours") << "the node first";
  EXPECT_EQ(coord_->Start("usr_op", n.id, "task_missing", 1).error().code, "task_not_found");
  EXPECT_EQ(coord_->Start("usr_op", n.id, t.id, 2).error().code, "lease_stale");
  auto started = coord_->Start("usr_op", n.id, t.id, 1);
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_EQ(started->status, "in_progress");
  EXPECT_EQ(started->node_id, n.id);
}

TEST_F(CoordinatorTest, ProgressReportsWaitingTogetherAreOneWriteOfTheLatest) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
  // Hold the writer (on PostgreSQL: the nodes table, which the write reads first).
  std::mutex mu;
  std::condition_variable cv;
  bool holding = false, release = false;
  std::thread holder([&] {
    (void)db_->Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
      if (db_->backend() == "postgresql") SMART_TRY(tx.Exec("LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE"));
      std::unique_lock lk(mu);
      holding = true;
      cv.notify_all();
      cv.wait(lk, [&] { return release; });
      return Ok();
    });
  });
  std::map<std::string, Result<Task>> answers;
  auto report = [&](const std::string& name, int lease, int percent) {
    coord_->Apply("usr_op", n.id,
                  {.kind = LeaseOp::Kind::kProgress, .task_id = t.id, .lease = lease, .percent = percent},
                  [&, name](Result<Task> r) {
                    std::lock_guard lk(mu);
                    answers.emplace(name, std::move(r));
                    cv.notify_all();
                  });
  };
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return holding; });
  }
  report("p1", 1, 10);
  report("p2", 1, 20);
  report("stale", 2, 90);
  report("p3", 1, 30);
  {
    std::lock_guard lk(mu);
    release = true;
    cv.notify_all();
  }
  holder.join();
  std::unique_lock lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return answers.size() == 4; }));
  for (const char* name : {"p1", "p2", "p3"}) {
    ASSERT_TRUE(answers.at(name).ok()) << name;
    EXPECT_EQ(answers.at(name)->progress, 30) << name << ": answered with the latest";
  }
  EXPECT_EQ(answers.at("stale").error().code, "lease_stale") << "another lease's report is its own";
  lk.unlock();
  EXPECT_EQ(coord_->Get("usr_req", t.id)->progress, 30);
  // Once written, the next report is a write of its own.
  EXPECT_EQ(coord_->Progress("usr_op", n.id, t.id, 1, 40, "")->progress, 40);
}

TEST_F(CoordinatorTest, DeactivationNeedsAnIdleNodeAndReleasesTheStake) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
  EXPECT_EQ(coord_->Deactivate("usr_op", n.id).error().code, "node_busy");
  std::string out = "ok";
  ASSERT_TRUE(coord_->Complete("usr_op", n.id, t.id, 1, out, crypto::Sha256Hex(out)).ok());
  auto d = coord_->Deactivate("usr_op", n.id);
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->status, "deactivated");
  EXPECT_EQ(FormatAmount(Acc("usr_op").debits_pending), "0") << "stake released";
  EXPECT_EQ(coord_->Heartbeat("usr_op", n.id, 0, 0).error().code, "node_deactivated");
  EXPECT_EQ(coord_->Claim("usr_op", n.id, 1, 0).error().code, "node_deactivated");
  auto stats = coord_->GetStats();
  EXPECT_EQ(stats->completed, 1);
  EXPECT_EQ(stats->nodes_total, 0);
}

TEST_F(CoordinatorTest, AWaitingClaimWakesOnSubmit) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  std::vector<Task> got;
  std::thread waiter([&] { got = *coord_->Claim("usr_op", n.id, 1, 20'000); });
  std::this_thread::sleep_for(100ms);
  auto t0 = std::chrono::steady_clock::now();
  Task t = Submit("usr_req");
  waiter.join();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, t.id);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

// Waiting claims hold no thread: many wait at once, each task goes to one of
// them, the rest end with none at their deadline, and nothing is assigned to
// a claim after it was answered.
TEST_F(CoordinatorTest, ManyClaimsWaitWithoutThreadsAndEndAtTheirDeadline) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n", {"echo"}, 100);
  constexpr int kClaims = 200;
  std::mutex mu;
  std::condition_variable cv;
  int answered = 0;
  std::vector<std::string> got;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kClaims; ++i) {
    coord_->ClaimAsync("usr_op", n.id, 1, 3000, std::nullopt, [&](Result<std::vector<Task>> r) {
      std::lock_guard lk(mu);
      EXPECT_TRUE(r.ok()) << r.error().message;
      if (r) {
        EXPECT_LE(r->size(), 1u);
        for (const Task& t : *r) got.push_back(t.id);
      }
      ++answered;
      cv.notify_all();
    });
  }
  for (int i = 0; i < 300 && coord_->WaitingClaims() < kClaims; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(coord_->WaitingClaims(), static_cast<size_t>(kClaims));
  EXPECT_EQ(coord_->Attached(), 0u) << "waiting claims are not nodes' attachments";
  Task a = Submit("usr_req", "a"), b = Submit("usr_req", "b");
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 5s, [&] { return got.size() == 2; }));
    EXPECT_EQ(answered, 2) << "the others wait on";
    ASSERT_TRUE(cv.wait_for(lk, 10s, [&] { return answered == kClaims; }));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 3s) << "not before their deadline";
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, (std::vector<std::string>{std::min(a.id, b.id), std::max(a.id, b.id)}));
  }
  EXPECT_EQ(coord_->WaitingClaims(), 0u);
  Task c = Submit("usr_req", "c");
  std::this_thread::sleep_for(1200ms);  // the dispatcher looks every second
  EXPECT_EQ(coord_->Get("usr_req", c.id)->status, "pending") << "given to a claim that was answered";
}

TEST_F(CoordinatorTest, StoppingAnswersWaitingClaimsAtOnce) {
  Node n = MakeNode("usr_op", "n");
  auto claim = [&] {
    auto answer = std::make_shared<std::promise<Result<std::vector<Task>>>>();
    coord_->ClaimAsync("usr_op", n.id, 1, 30'000, std::nullopt,
                       [answer](Result<std::vector<Task>> r) { answer->set_value(std::move(r)); });
    return answer->get_future();
  };
  auto waiting = claim();
  for (int i = 0; i < 300 && coord_->WaitingClaims() < 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(coord_->WaitingClaims(), 1u);
  coord_->StopWaiting();
  ASSERT_EQ(waiting.wait_for(5s), std::future_status::ready);
  auto r = waiting.get();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->empty());
  auto after = claim();  // one that comes later is answered at once too
  ASSERT_EQ(after.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(after.get()->empty());
}

TEST_F(CoordinatorTest, WaitingNodesWithBetterReputationGoFirst) {
  Fund("usr_req", 10'000'000);
  Node a = MakeNode("usr_a", "a"), b = MakeNode("usr_b", "b");
  // b earns reputation first.
  Task warmup = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_b", b.id, 1, 0)->size(), 1u);
  std::string out = "x";
  ASSERT_TRUE(coord_->Complete("usr_b", b.id, warmup.id, 1, out, crypto::Sha256Hex(out)).ok());
  for (int round = 0; round < 3; ++round) {
    std::vector<Task> got_a, got_b;
    std::thread wa([&] { got_a = *coord_->Claim("usr_a", a.id, 1, 3000); });
    std::thread wb([&] { got_b = *coord_->Claim("usr_b", b.id, 1, 3000); });
    for (int i = 0; i < 300 && coord_->WaitingClaims() < 2; ++i) std::this_thread::sleep_for(10ms);
    Task t = Submit("usr_req", "round " + std::to_string(round));
    wb.join();
    Submit("usr_req", "for a");  // lets the other waiter go home
    wa.join();
    ASSERT_EQ(got_b.size(), 1u) << "round " << round << "; a got " << (got_a.empty() ? "nothing" : got_a[0].input);
    EXPECT_EQ(got_b[0].id, t.id);
    ASSERT_TRUE(coord_->Complete("usr_b", b.id, t.id, got_b[0].attempt, out, crypto::Sha256Hex(out)).ok());
    ASSERT_EQ(got_a.size(), 1u);
    ASSERT_TRUE(coord_->Complete("usr_a", a.id, got_a[0].id, got_a[0].attempt, out, crypto::Sha256Hex(out)).ok());
  }
}

TEST_F(CoordinatorTest, MaintenanceStopsNewWorkOnly) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req");
  auto m = coord_->SetMaintenance("usr_op", n.id, true);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->status, "maintenance");
  EXPECT_TRUE(coord_->Claim("usr_op", n.id, 1, 0)->empty());
  EXPECT_EQ(coord_->GetNode(n.id)->status, "maintenance");
  EXPECT_EQ(coord_->SetMaintenance("usr_other", n.id, false).error().code, "node_not_yours");
  ASSERT_TRUE(coord_->SetMaintenance("usr_op", n.id, false).ok());
  auto got = coord_->Claim("usr_op", n.id, 1, 0);
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ(got->at(0).id, t.id);
}

// smartd died after assigning a task but before the answer reached the node:
// the node's next claim, which lists what it holds, gets it again.
TEST_F(CoordinatorTest, AnAssignmentWhoseAnswerWasLostIsDeliveredAgain) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req");
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);  // the answer is "lost"
  std::vector<std::string> holding;
  auto again = coord_->Claim("usr_op", n.id, 1, 0, &holding);
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ(again->at(0).id, t.id);
  EXPECT_EQ(again->at(0).attempt, 1) << "the same lease";
  holding.push_back(t.id);
  EXPECT_TRUE(coord_->Claim("usr_op", n.id, 1, 0, &holding)->empty()) << "known tasks are not sent again";
  std::string out = "x";
  EXPECT_TRUE(coord_->Complete("usr_op", n.id, t.id, 1, out, crypto::Sha256Hex(out)).ok());
}

// One tenant's backlog delays another tenant's first task by at most one
// task per other active tenant, and weights split the work in proportion.
TEST_F(CoordinatorTest, FairQueueingBetweenRequesters) {
  Fund("usr_big", 100'000'000);
  Fund("usr_new", 1'000'000);
  Fund("usr_pro", 100'000'000);
  for (int i = 0; i < 120; ++i) Submit("usr_big", "b" + std::to_string(i));
  Node n = MakeNode("usr_op", "n", {"echo"}, 1);
  for (int i = 0; i < 10; ++i) TakeOne(n);  // the backlog is being served
  Task first = Submit("usr_new", "hello");
  int before = 0;
  while (TakeOne(n).id != first.id) ++before;
  EXPECT_LE(before, 1) << "the new tenant's first task waited for " << before << " of the big tenant's";

  // usr_pro with weight 3 against usr_big with weight 1: 3 to 1.
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(coord_->Submit("usr_pro", {.type = "echo", .input = "p", .weight = 3}, "").ok());
  }
  int pro = 0, big = 0;
  for (int i = 0; i < 40; ++i) (TakeOne(n).requester == "usr_pro" ? pro : big)++;
  EXPECT_GE(pro, 27) << "pro " << pro << ", big " << big;
  EXPECT_LE(pro, 33) << "pro " << pro << ", big " << big;
}

// Priority orders a requester's own tasks and buys a bounded share, never a
// place before everyone: each requester has a lane per priority, and a
// higher one takes smaller steps (urgent a quarter of normal's).
TEST_F(CoordinatorTest, PriorityIsAShareWithinFairQueueing) {
  Fund("usr_big", 100'000'000);
  Fund("usr_new", 1'000'000);
  Fund("usr_mix", 100'000'000);
  for (int b = 0; b < 2; ++b) {
    ASSERT_TRUE(coord_
                    ->SubmitBatch(
                        "usr_big",
                        std::vector<SubmitRequest>(100, {.type = "echo", .input = "u", .priority = Priority::kUrgent}),
                        "")
                    .ok());
  }
  Node n = MakeNode("usr_op", "n", {"echo"}, 1);
  for (int i = 0; i < 10; ++i) TakeOne(n);
  Task first = Submit("usr_new", "hello");  // normal
  int before = 0;
  while (TakeOne(n).id != first.id) ++before;
  EXPECT_LE(before, 4) << "the new tenant's first task waited for " << before << " of the urgent backlog";

  // One requester's lanes: a new urgent task goes before its own normal
  // backlog, and deep backlogs in both share 4 to 1.
  for (int b = 0; b < 2; ++b) {
    ASSERT_TRUE(
        coord_->SubmitBatch("usr_mix", std::vector<SubmitRequest>(100, {.type = "echo", .input = "n"}), "").ok());
  }
  ASSERT_TRUE(
      coord_
          ->SubmitBatch("usr_mix",
                        std::vector<SubmitRequest>(100, {.type = "echo", .input = "u", .priority = Priority::kUrgent}),
                        "")
          .ok());
  int urgent = 0, normal = 0;
  for (int i = 0; i < 50;) {
    Task t = TakeOne(n);
    if (t.requester != "usr_mix") continue;  // usr_big's backlog is served beside it
    (t.priority == Priority::kUrgent ? urgent : normal)++;
    ++i;
  }
  EXPECT_GE(urgent, 38) << "urgent " << urgent << ", normal " << normal;
  EXPECT_LE(urgent, 42) << "urgent " << urgent << ", normal " << normal;
}

TEST_F(CoordinatorTest, ScheduledTasksAndDeadlines) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  auto later =
      coord_->Submit("usr_req", {.type = "echo", .input = "later", .not_before_ms = clock_.NowMs() + 60'000}, "");
  ASSERT_TRUE(later.ok()) << later.error().message;
  EXPECT_TRUE(coord_->Claim("usr_op", n.id, 5, 0)->empty()) << "not before its time";
  clock_.Advance(60s);
  ASSERT_TRUE(coord_->Heartbeat("usr_op", n.id, 0, 0).ok());
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 5, 0)->size(), 1u);

  auto due = coord_->Submit("usr_req", {.type = "echo", .input = "due", .deadline_ms = clock_.NowMs() + 30'000}, "");
  ASSERT_TRUE(due.ok());
  clock_.Advance(31s);
  ASSERT_TRUE(coord_->Heartbeat("usr_op", n.id, 0, 0).ok());
  ASSERT_TRUE(coord_->Sweep().ok());
  Task missed = *coord_->Get("usr_req", due->id);
  EXPECT_EQ(missed.status, "failed");
  EXPECT_NE(missed.error.find("deadline"), std::string::npos);

  // A lease never outlives the deadline.
  auto tight = coord_->Submit(
      "usr_req", {.type = "echo", .input = "tight", .timeout_s = 600, .deadline_ms = clock_.NowMs() + 20'000}, "");
  ASSERT_TRUE(tight.ok());
  auto got = coord_->Claim("usr_op", n.id, 5, 0);
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ(got->at(0).lease_expires_ms, tight->deadline_ms);

  SubmitRequest bad{.type = "echo", .input = "x", .deadline_ms = clock_.NowMs() - 1};
  EXPECT_EQ(coord_->Submit("usr_req", bad, "").error().code, "invalid_deadline");
  bad = {.type = "echo", .input = "x", .not_before_ms = clock_.NowMs() + 31LL * 86400 * 1000};
  EXPECT_EQ(coord_->Submit("usr_req", bad, "").error().code, "invalid_not_before");
}

TEST_F(CoordinatorTest, DeadLettersCanBeRetried) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req", "x", Priority::kNormal, "echo", 1);
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
  ASSERT_TRUE(coord_->Fail("usr_op", n.id, t.id, 1, "boom").ok());
  auto dead = coord_->DeadLetters("usr_req", 50, "");
  ASSERT_EQ(dead->items.size(), 1u);
  EXPECT_EQ(dead->items[0].id, t.id);
  EXPECT_TRUE(coord_->DeadLetters("usr_other", 50, "")->items.empty());
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "1000000") << "refunded when it failed";

  auto again = coord_->Retry("usr_req", t.id);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->status, "pending");
  EXPECT_EQ(again->retries, 1);
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "975000") << "held again";
  EXPECT_EQ(coord_->Retry("usr_req", t.id).error().code, "not_dead_lettered");
  EXPECT_TRUE(coord_->DeadLetters("usr_req", 50, "")->items.empty());
  // The second run fails too, and is refunded again under a new key.
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
  ASSERT_TRUE(coord_->Fail("usr_op", n.id, t.id, 2, "boom again").ok());
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "1000000");
  ASSERT_TRUE(coord_->Retry("usr_req", t.id).ok());
  ASSERT_EQ(coord_->Claim("usr_op", n.id, 1, 0)->size(), 1u);
  std::string out = "fine";
  ASSERT_TRUE(coord_->Complete("usr_op", n.id, t.id, 3, out, crypto::Sha256Hex(out)).ok());
  EXPECT_EQ(Balance("usr_req"), "975000") << "paid once, for the run that completed";
}

// Pushed work (the node WebSocket): collects what is pushed to one attachment.
struct Pushed {
  // Shared with the callback: a push may still be on its way when the test ends.
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Task> tasks;
    std::optional<Error> error;
    size_t answers = 0;  // pushes, with tasks or none (an attachment's first claim answers even when it finds none)
  };
  std::shared_ptr<State> s = std::make_shared<State>();
  Coordinator::Push Fn() {
    return [s = s](Result<std::vector<Task>> r) {
      std::lock_guard lk(s->mu);
      ++s->answers;
      if (!r) {
        s->error = r.error();
      } else {
        for (auto& t : *r) s->tasks.push_back(std::move(t));
      }
      s->cv.notify_all();
    };
  }
  // Waits until `n` tasks (or an error) arrived.
  bool WaitFor(size_t n, std::chrono::milliseconds within = 5s) {
    std::unique_lock lk(s->mu);
    return s->cv.wait_for(lk, within, [&] { return s->tasks.size() >= n || s->error; }) && s->tasks.size() >= n;
  }
  size_t Count() {
    std::lock_guard lk(s->mu);
    return s->tasks.size();
  }
  bool Answered(std::chrono::milliseconds within = 5s) {
    std::unique_lock lk(s->mu);
    return s->cv.wait_for(lk, within, [&] { return s->answers > 0; });
  }
};

TEST_F(CoordinatorTest, AttachedNodesGetWorkPushedWithinTheirCredit) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n", {"echo"}, 10);
  Pushed pushed;
  uint64_t a = coord_->Attach("usr_op", n.id, {}, pushed.Fn());
  EXPECT_EQ(coord_->Attached(), 1u);
  Submit("usr_req", "one");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(pushed.Count(), 0u) << "no credit, no work";
  coord_->Credit(a, 2);
  ASSERT_TRUE(pushed.WaitFor(1));
  Submit("usr_req", "two");
  Submit("usr_req", "three");
  ASSERT_TRUE(pushed.WaitFor(2)) << "pushed as it arrives";
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(pushed.Count(), 2u) << "the credit is used up";
  coord_->Credit(a, 5);
  ASSERT_TRUE(pushed.WaitFor(3));
  for (const auto& t : pushed.s->tasks) {
    EXPECT_EQ(t.status, "assigned");
    std::string out = t.input;
    ASSERT_TRUE(coord_->Complete("usr_op", n.id, t.id, t.attempt, out, crypto::Sha256Hex(out)).ok());
  }
  coord_->Detach(a);
  EXPECT_EQ(coord_->Attached(), 0u);
}

// A database that refuses writes while `down` (as an unreachable
// PostgreSQL does, kUnavailable), counting the attempts.
class OutageDb final : public store::Database {
 public:
  explicit OutageDb(store::Database& db) : db_(db) {}
  std::string_view backend() const override { return db_.backend(); }
  Result<void> Transact(store::TxMode mode, const std::function<Result<void>(store::Tx&)>& fn) override {
    return db_.Transact(mode, fn);
  }
  Result<void> TransactEarly(const std::function<Result<void>(store::Tx&)>& fn,
                             std::function<void(Result<void>)> durable) override {
    ++writes;
    if (down) return Error::Unavailable("db_down", "the database is unreachable");
    return db_.TransactEarly(fn, std::move(durable));
  }
  Result<void> Ping() override { return db_.Ping(); }

  std::atomic<bool> down{false};
  std::atomic<int> writes{0};

 private:
  store::Database& db_;
};

// A claim that fails for a while (the database unreachable) is tried again
// at the next wake-up or tick, not at once: an outage costs a claim a
// second, not a spinning dispatcher; the node keeps its credit and gets the
// work when the database is back.
TEST_F(CoordinatorTest, PushedClaimsDuringAnOutageAreTriedAgainAtTheNextTick) {
  coord_.reset();
  OutageDb outage(*db_);
  coord_ = std::make_unique<Coordinator>(outage, *ledger_, config_, clock_);
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task t = Submit("usr_req");
  outage.down = true;
  outage.writes = 0;
  Pushed pushed;
  uint64_t a = coord_->Attach("usr_op", n.id, {}, pushed.Fn());
  coord_->Credit(a, 1);
  std::this_thread::sleep_for(1500ms);
  EXPECT_LE(outage.writes.load(), 3) << "a try a tick, not one after another";
  EXPECT_EQ(pushed.Count(), 0u);
  EXPECT_FALSE(pushed.s->error) << "the node is not told";
  outage.down = false;
  ASSERT_TRUE(pushed.WaitFor(1, 3s)) << "its credit kept, it gets the task when the database is back";
  EXPECT_EQ(pushed.s->tasks[0].id, t.id);
  coord_->Detach(a);
  coord_.reset();  // before the wrapper goes
}

// Two instances sharing a PostgreSQL database: work submitted on one is
// pushed by the other at once (it signals, the other's dispatcher wakes), not
// at the other's next tick, up to a second later.
TEST_F(CoordinatorTest, AnotherInstancesWorkIsPushedAtOnce) {
  if (db_->backend() != "postgresql") GTEST_SKIP() << "instances share a PostgreSQL database; a SQLite one has one";
  auto db2 = std::move(store::Open(url_)).value();
  ledger::Ledger ledger2(*db2, ledger::LedgerConfig{.assets = {{"USDC", 6}}, .sweep_interval_ms = 0}, clock_);
  Coordinator other(*db2, ledger2, config_, clock_);
  Fund("usr_req", 10'000'000);
  Node n = MakeNode("usr_op", "n", {"echo"}, 10);
  Pushed pushed;
  uint64_t a = coord_->Attach("usr_op", n.id, {}, pushed.Fn());
  coord_->Credit(a, 10);
  std::this_thread::sleep_for(300ms);  // its first claim made (nothing to deliver again)
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto t = other.Submit("usr_req", {.type = "echo", .input = "x" + std::to_string(i), .timeout_s = 60}, "");
    ASSERT_TRUE(t.ok()) << t.error().message;
    ASSERT_TRUE(pushed.WaitFor(static_cast<size_t>(i) + 1, 3s));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 400ms) << "submission " << i << ": at once, not at a tick";
    std::this_thread::sleep_for(std::chrono::milliseconds(170 * (i + 1)));  // another phase of the tick
  }
  coord_->Detach(a);
}

// The same for a place freed under a requester's cap: a claim waiting on one
// instance with the requester at its cap gets the task the moment another
// instance completes one of the requester's tasks, not at its next tick.
TEST_F(CoordinatorTest, APlaceFreedOnAnotherInstanceIsTakenAtOnce) {
  if (db_->backend() != "postgresql") GTEST_SKIP() << "instances share a PostgreSQL database; a SQLite one has one";
  AtCap at = FillTheCap(20);
  ASSERT_EQ(at.held.size(), 2u);
  auto db2 = std::move(store::Open(url_)).value();
  ledger::Ledger ledger2(*db2, ledger::LedgerConfig{.assets = {{"USDC", 6}}, .sweep_interval_ms = 0}, clock_);
  Coordinator other(*db2, ledger2, config_, clock_);
  for (size_t i = 0; i < 2; ++i) {
    Pushed got;
    other.ClaimAsync("usr_y", at.y.id, 1, 10'000, std::nullopt, got.Fn());
    std::this_thread::sleep_for(
        std::chrono::milliseconds(300 + 170 * static_cast<int>(i)));  // waiting at the cap; another phase
    EXPECT_EQ(got.Count(), 0u);
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(coord_->Complete("usr_x", at.x.id, at.held[i].id, 1, "a", crypto::Sha256Hex("a")).ok());
    ASSERT_TRUE(got.WaitFor(1, 3s));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 400ms) << i << ": at once, not at the other's tick";
  }
}

// A backlog deeper than a round counts makes the dispatcher run the next
// round at once, but only while rounds assign something: with the one
// requester at its cap, rounds wait for the next wake-up (here the node's
// credit after a result), instead of one claim transaction after another.
TEST_F(CoordinatorTest, ADeepBacklogAtItsRequestersCapDoesNotSpinTheDispatcher) {
  CapRequesters(2);
  Fund("usr_req", 1'000'000'000);
  Node n = MakeNode("usr_op", "n", {"echo"}, 100);
  for (int b = 0; b < 21; ++b) {  // 2,100 pending: more than a round counts (2,000)
    std::vector<SubmitRequest> reqs(100, SubmitRequest{.type = "echo", .input = "x", .timeout_s = 60});
    ASSERT_TRUE(coord_->SubmitBatch("usr_req", reqs, "").ok());
  }
  auto rounds = std::make_shared<std::atomic<int>>(0);  // shared: a push may outlive the test
  Pushed pushed;
  uint64_t a = coord_->Attach("usr_op", n.id, {}, [rounds, fn = pushed.Fn()](Result<std::vector<Task>> r) {
    ++*rounds;  // each round that wants work for the node claims for it and pushes what it got
    fn(std::move(r));
  });
  coord_->Credit(a, 100);
  ASSERT_TRUE(pushed.WaitFor(2));
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(pushed.Count(), 2u) << "the requester's cap";
  EXPECT_LE(rounds->load(), 5) << "a round a wake-up or tick, not one after another";
  Task first = pushed.s->tasks[0];
  ASSERT_TRUE(coord_->Complete("usr_op", n.id, first.id, first.attempt, "x", crypto::Sha256Hex("x")).ok());
  coord_->Credit(a, 1);
  ASSERT_TRUE(pushed.WaitFor(3)) << "the freed place is taken at the next wake-up";
  coord_->Detach(a);
}

// A tenant at its cap with a deep backlog costs another tenant's tasks one
// probing claim, not a claim for every attached node: once claims find only
// requesters at their cap, a type is probed with one node until a claim takes
// all it wanted; then the next round goes to every node at once.
TEST_F(CoordinatorTest, ATenantAtItsCapCostsOthersOneProbingClaim) {
  CapRequesters(150);
  Settings settings = *coord_->GetSettings();
  settings.max_tasks_per_node = 100;
  ASSERT_TRUE(coord_->UpdateSettings(settings).ok());
  Fund("usr_a", 1'000'000'000);
  Fund("usr_b", 1'000'000'000);
  for (int b = 0; b < 15; ++b) {  // 1,500 pending
    std::vector<SubmitRequest> reqs(100, SubmitRequest{.type = "echo", .input = "a", .timeout_s = 600});
    ASSERT_TRUE(coord_->SubmitBatch("usr_a", reqs, "").ok());
  }
  struct Net {
    std::mutex mu;
    std::condition_variable cv;
    int claims = 0;                        // pushes, empty ones included: a claim each
    std::map<std::string, size_t> holder;  // task -> node
  };
  // Shared with the callbacks: a push may still be on its way when the test ends.
  auto net = std::make_shared<Net>();
  std::vector<Node> nodes;
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < 20; ++i) {
    nodes.push_back(MakeNode("usr_op" + std::to_string(i), "n" + std::to_string(i), {"echo"}, 100));
    ids.push_back(coord_->Attach(nodes[i].operator_id, nodes[i].id, {}, [net, i](Result<std::vector<Task>> r) {
      std::lock_guard lk(net->mu);
      ++net->claims;
      if (r) {
        for (const auto& t : *r) net->holder[t.id] = i;
      }
      net->cv.notify_all();
    }));
    coord_->Credit(ids[i], 40);  // a probing node's credit is less than the burst below
  }
  auto wait_for = [&](const std::string& id) -> std::optional<size_t> {
    std::unique_lock lk(net->mu);
    if (!net->cv.wait_for(lk, 5s, [&] { return net->holder.contains(id); })) return std::nullopt;
    return net->holder[id];
  };
  {
    std::unique_lock lk(net->mu);
    ASSERT_TRUE(net->cv.wait_for(lk, 5s, [&] { return net->holder.size() == 150; })) << "usr_a up to its cap";
  }
  std::this_thread::sleep_for(300ms);
  int before = 0;
  {
    std::lock_guard lk(net->mu);
    before = net->claims;
    EXPECT_EQ(net->holder.size(), 150u);
  }
  constexpr int kTasks = 20;
  for (int i = 0; i < kTasks; ++i) {
    auto t = coord_->Submit("usr_b", {.type = "echo", .input = "b", .timeout_s = 60}, "");
    ASSERT_TRUE(t.ok()) << t.error().message;
    auto at = wait_for(t->id);
    ASSERT_TRUE(at) << "usr_b's task " << i;
    ASSERT_TRUE(coord_->Complete(nodes[*at].operator_id, nodes[*at].id, t->id, 1, "b", crypto::Sha256Hex("b")).ok());
    coord_->Credit(ids[*at], 1);
  }
  {
    std::lock_guard lk(net->mu);
    // A submission's round and the one after it, the result's credit's round,
    // and a tick's round now and then: one claim each. Without the probe
    // every round gave all 20 nodes a claim.
    EXPECT_LE(net->claims - before, 5 * kTasks);
  }
  // A burst takes the probing node's credit, so the next round goes wide at once.
  std::vector<SubmitRequest> burst(100, SubmitRequest{.type = "echo", .input = "b", .timeout_s = 60});
  auto t0 = std::chrono::steady_clock::now();
  auto made = coord_->SubmitBatch("usr_b", burst, "");
  ASSERT_TRUE(made.ok()) << made.error().message;
  std::set<size_t> holders;
  for (const auto& t : *made) {
    auto at = wait_for(t.id);
    ASSERT_TRUE(at);
    holders.insert(*at);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 700ms) << "not at the next tick";
  EXPECT_GE(holders.size(), 3u);
  for (uint64_t id : ids) coord_->Detach(id);
}

// While a type's claimable tasks wait for requesters at their cap, a task
// that leaves the active states wakes the dispatcher: the freed place is
// taken at once by a node waiting with credit (here a waiting claim, which
// sends no credit of its own), not at the next tick.
TEST_F(CoordinatorTest, AFreedPlaceUnderACapIsTakenAtOnce) {
  AtCap at = FillTheCap(50);
  ASSERT_EQ(at.held.size(), 2u);
  const Node &x = at.x, &y = at.y;
  std::vector<Task> by_y;
  auto freed = [&](const Node& waiter, const Node& completer, const Task& done, std::vector<Task>& into) {
    Pushed got;
    coord_->ClaimAsync(waiter.operator_id, waiter.id, 1, 10'000, std::nullopt, got.Fn());
    std::this_thread::sleep_for(300ms);  // waiting, its type found at the cap
    EXPECT_EQ(got.Count(), 0u);
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(coord_->Complete(completer.operator_id, completer.id, done.id, 1, "a", crypto::Sha256Hex("a")).ok());
    ASSERT_TRUE(got.WaitFor(1, 3s));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 250ms) << "at once, not at a tick";
    into.push_back(got.s->tasks[0]);
  };
  freed(y, x, at.held[0], by_y);
  freed(y, x, at.held[1], by_y);
  std::vector<Task> by_x;
  freed(x, y, by_y.at(0), by_x);
}

TEST_F(CoordinatorTest, PushGoesToTheBetterNodeAndRedeliversLostAssignments) {
  Fund("usr_req", 1'000'000);
  Node good = MakeNode("usr_a", "good");
  Node poor = MakeNode("usr_b", "poor");
  // good earns reputation by completing a task
  Task warm = Submit("usr_req", "warm");
  ASSERT_EQ(coord_->Claim("usr_a", good.id, 1, 0)->size(), 1u);
  ASSERT_TRUE(coord_->Complete("usr_a", good.id, warm.id, 1, "warm", crypto::Sha256Hex("warm")).ok());

  Pushed to_poor, to_good;
  uint64_t p = coord_->Attach("usr_b", poor.id, {}, to_poor.Fn());
  uint64_t g = coord_->Attach("usr_a", good.id, {}, to_good.Fn());
  coord_->Credit(p, 1);
  coord_->Credit(g, 1);
  std::this_thread::sleep_for(300ms);  // both attached and known
  Task t = Submit("usr_req", "x");
  ASSERT_TRUE(to_good.WaitFor(1));
  EXPECT_EQ(to_good.s->tasks[0].id, t.id);
  EXPECT_EQ(to_poor.Count(), 0u);

  // The connection drops with the task unseen; the node attaches again and says what it holds (nothing).
  coord_->Detach(g);
  Pushed again;
  uint64_t g2 = coord_->Attach("usr_a", good.id, {}, again.Fn());
  coord_->Credit(g2, 1);
  ASSERT_TRUE(again.WaitFor(1));
  EXPECT_EQ(again.s->tasks[0].id, t.id);
  EXPECT_EQ(again.s->tasks[0].attempt, 1) << "the same lease";
  coord_->Detach(p);
  coord_->Detach(g2);
}

// Pushed work goes by capability: nodes waiting with credit for other types
// are passed over, a node of two types takes both, and a detached node is
// forgotten (dispatch keeps an index of the nodes ready for each type).
TEST_F(CoordinatorTest, PushMatchesCapabilitiesAndForgetsDetachedNodes) {
  Fund("usr_req", 10'000'000);
  Node echo = MakeNode("usr_a", "echo", {"echo"});
  Node hash = MakeNode("usr_b", "hash", {"sha256"});
  Node both = MakeNode("usr_c", "both", {"echo", "sha256"});
  Pushed to_echo, to_hash, to_both;
  uint64_t e = coord_->Attach("usr_a", echo.id, {}, to_echo.Fn());
  uint64_t h = coord_->Attach("usr_b", hash.id, {}, to_hash.Fn());
  uint64_t b = coord_->Attach("usr_c", both.id, {}, to_both.Fn());
  coord_->Credit(e, 1);
  coord_->Credit(h, 1);
  std::this_thread::sleep_for(300ms);  // their first claims made: capabilities known
  Task t1 = Submit("usr_req", "1", Priority::kNormal, "sha256");
  ASSERT_TRUE(to_hash.WaitFor(1));
  EXPECT_EQ(to_hash.s->tasks[0].id, t1.id);
  Task t2 = Submit("usr_req", "2");
  ASSERT_TRUE(to_echo.WaitFor(1));
  EXPECT_EQ(to_echo.s->tasks[0].id, t2.id);
  // Both credits used up: the node of two types (no credit yet) gets nothing until it asks.
  Task t3 = Submit("usr_req", "3", Priority::kNormal, "sha256");
  Task t4 = Submit("usr_req", "4");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(to_both.Count(), 0u);
  coord_->Credit(b, 5);
  ASSERT_TRUE(to_both.WaitFor(2));
  std::set<std::string> got{to_both.s->tasks[0].id, to_both.s->tasks[1].id};
  EXPECT_EQ(got, (std::set<std::string>{t3.id, t4.id}));
  // Detached with credit left: new work waits for a node instead.
  coord_->Detach(b);
  coord_->Credit(b, 5);  // an attachment that is gone: ignored
  Task t5 = Submit("usr_req", "5", Priority::kNormal, "sha256");
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(to_both.Count(), 2u);
  EXPECT_EQ(to_hash.Count(), 1u) << "no credit";
  coord_->Credit(h, 1);
  ASSERT_TRUE(to_hash.WaitFor(2));
  EXPECT_EQ(to_hash.s->tasks[1].id, t5.id);
  EXPECT_EQ(coord_->Attached(), 2u);
  coord_->Detach(e);
  coord_->Detach(h);
}

// A backlog of a type nobody runs (more than dispatch counts in one look)
// delays neither pushed nor claimed work of another type.
TEST_F(CoordinatorTest, ABacklogOfOneTypeDoesNotHoldUpAnother) {
  Fund("usr_req", 100'000'000);
  std::vector<SubmitRequest> batch(100, SubmitRequest{.type = "echo", .input = "x", .timeout_s = 60});
  for (int i = 0; i < 21; ++i) ASSERT_TRUE(coord_->SubmitBatch("usr_req", batch, "").ok());
  Node hash = MakeNode("usr_b", "hash", {"sha256"});
  Pushed to_hash;
  uint64_t h = coord_->Attach("usr_b", hash.id, {}, to_hash.Fn());
  coord_->Credit(h, 1);
  std::this_thread::sleep_for(200ms);
  Task t = Submit("usr_req", "pushed", Priority::kNormal, "sha256");
  ASSERT_TRUE(to_hash.WaitFor(1)) << "2,100 echo tasks ahead kept the sha256 task from the node";
  EXPECT_EQ(to_hash.s->tasks[0].id, t.id);
  coord_->Detach(h);
  Node other = MakeNode("usr_c", "other", {"sha256"});
  Task claimed = Submit("usr_req", "claimed", Priority::kNormal, "sha256");
  auto got = coord_->Claim("usr_c", other.id, 5, 0);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].id, claimed.id);
}

// A node attached again by its operator (a reconnect while the old socket
// still looks open) ends the older attachment; another operator naming the
// node ends nothing of the owner's.
TEST_F(CoordinatorTest, AttachingANodeAgainEndsTheOlderAttachment) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Pushed old_socket, new_socket, intruder;
  uint64_t a = coord_->Attach("usr_op", n.id, {}, old_socket.Fn());
  coord_->Credit(a, 1);
  uint64_t m = coord_->Attach("usr_mallory", n.id, {}, intruder.Fn());
  coord_->Credit(m, 1);
  {
    std::unique_lock lk(intruder.s->mu);
    ASSERT_TRUE(intruder.s->cv.wait_for(lk, 5s, [&] { return intruder.s->error.has_value(); }));
    EXPECT_EQ(intruder.s->error->code, "node_not_yours");
  }
  uint64_t b = coord_->Attach("usr_op", n.id, {}, new_socket.Fn());
  {
    std::lock_guard lk(old_socket.s->mu);
    ASSERT_TRUE(old_socket.s->error.has_value()) << "told at once";
    EXPECT_EQ(old_socket.s->error->code, "node_reattached");
  }
  EXPECT_EQ(coord_->Attached(), 1u);
  coord_->Credit(a, 5);  // the ended one: ignored
  coord_->Credit(b, 1);
  Task t = Submit("usr_req", "x");
  ASSERT_TRUE(new_socket.WaitFor(1));
  EXPECT_EQ(new_socket.s->tasks[0].id, t.id);
  EXPECT_EQ(old_socket.Count(), 0u);
  coord_->Detach(a);  // the old socket's close, late: the new attachment stays
  EXPECT_EQ(coord_->Attached(), 1u);
  coord_->Detach(b);
  EXPECT_EQ(coord_->Attached(), 0u);
}

// Attached again on another instance sharing the database (a second
// coordinator here), while the old socket on the first still looks open: the
// new attachment gets again what was sent to the old one, the first instance
// pushes nothing more to the old one (its next claim ends it instead), and
// the work goes to the new attachment. Credit decides which attachment may
// claim when, so that neither instance's dispatcher can race the other's.
TEST_F(CoordinatorTest, AttachingANodeAgainOnAnotherInstanceEndsTheOlderAttachmentThere) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Coordinator other(*db_, *ledger_, config_, clock_);
  Pushed old_socket, new_socket;
  uint64_t a = coord_->Attach("usr_op", n.id, {}, old_socket.Fn());
  coord_->Credit(a, 2);
  ASSERT_TRUE(old_socket.Answered()) << "its first claim, which found nothing";
  Task t0 = Submit("usr_req", "before");
  ASSERT_TRUE(old_socket.WaitFor(1));
  uint64_t b = other.Attach("usr_op", n.id, {}, new_socket.Fn());
  other.Credit(b, 1);
  ASSERT_TRUE(new_socket.WaitFor(1)) << "what the old socket was sent, again";
  EXPECT_EQ(new_socket.s->tasks[0].id, t0.id);
  Task t1 = Submit("usr_req", "after");  // only the old attachment has credit left
  {
    std::unique_lock lk(old_socket.s->mu);
    ASSERT_TRUE(old_socket.s->cv.wait_for(lk, 5s, [&] { return old_socket.s->error.has_value(); }));
    EXPECT_EQ(old_socket.s->error->code, "node_reattached");
    EXPECT_EQ(old_socket.s->tasks.size(), 1u);
  }
  EXPECT_EQ(coord_->Attached(), 0u);
  other.Credit(b, 1);
  ASSERT_TRUE(new_socket.WaitFor(2));
  EXPECT_EQ(new_socket.s->tasks[1].id, t1.id);
  // Attached again on the first: it gets both again; the other's attachment
  // ends at its next claim.
  Pushed third;
  uint64_t c = coord_->Attach("usr_op", n.id, {}, third.Fn());
  coord_->Credit(c, 2);
  ASSERT_TRUE(third.WaitFor(2));
  auto u = other.Submit("usr_req", {.type = "echo", .input = "y", .timeout_s = 60}, "");
  ASSERT_TRUE(u.ok());
  other.Credit(b, 1);
  {
    std::unique_lock lk(new_socket.s->mu);
    ASSERT_TRUE(new_socket.s->cv.wait_for(lk, 5s, [&] { return new_socket.s->error.has_value(); }));
    EXPECT_EQ(new_socket.s->error->code, "node_reattached");
    EXPECT_EQ(new_socket.s->tasks.size(), 2u);
  }
  coord_->Credit(c, 1);
  ASSERT_TRUE(third.WaitFor(3));
  EXPECT_EQ(third.s->tasks[2].id, u->id);
  coord_->Detach(c);
  other.Detach(b);
}

TEST_F(CoordinatorTest, AnAttachmentOfAnotherOperatorsNodeEndsWithAnError) {
  Node n = MakeNode("usr_op", "n");
  Pushed pushed;
  uint64_t a = coord_->Attach("usr_other", n.id, {}, pushed.Fn());
  coord_->Credit(a, 1);
  std::unique_lock lk(pushed.s->mu);
  ASSERT_TRUE(pushed.s->cv.wait_for(lk, 5s, [&] { return pushed.s->error.has_value(); }));
  EXPECT_EQ(pushed.s->error->code, "node_not_yours");
  lk.unlock();
  EXPECT_EQ(coord_->Attached(), 0u);
}

TEST_F(CoordinatorTest, ABatchIsCreatedWhole) {
  Fund("usr_req", 60'000);  // two echo tasks of 25,000, not three
  std::vector<SubmitRequest> two(2, SubmitRequest{.type = "echo", .input = "x", .timeout_s = 60});
  auto bad = two;
  bad[1].type = "mining";
  auto refused = coord_->SubmitBatch("usr_req", bad, "");
  EXPECT_EQ(refused.error().code, "unknown_task_type");
  EXPECT_NE(refused.error().message.find("tasks[1]"), std::string::npos) << refused.error().message;
  auto three = two;
  three.push_back(two[0]);
  auto poor = coord_->SubmitBatch("usr_req", three, "");
  EXPECT_EQ(poor.error().code, "insufficient_funds");
  EXPECT_NE(poor.error().message.find("the 3 tasks cost 75000 USDC"), std::string::npos) << poor.error().message;
  auto slow = two;
  slow[1].timeout_s = 1;  // below min_timeout_s
  auto refused_timeout = coord_->SubmitBatch("usr_req", slow, "");
  EXPECT_EQ(refused_timeout.error().code, "invalid_timeout");
  EXPECT_NE(refused_timeout.error().message.find("tasks[1]"), std::string::npos) << refused_timeout.error().message;
  EXPECT_TRUE(coord_->List("usr_req", {}, 10, "")->items.empty()) << "nothing of a refused batch stays";
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "60000");
  auto done = coord_->SubmitBatch("usr_req", two, "b1");
  ASSERT_TRUE(done.ok()) << done.error().message;
  ASSERT_EQ(done->size(), 2u);
  EXPECT_NE((*done)[0].id, (*done)[1].id);
  auto again = coord_->SubmitBatch("usr_req", two, "b1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[1].id, (*done)[1].id);
  EXPECT_TRUE((*again)[0].replayed);
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "10000");
  EXPECT_EQ(coord_->SubmitBatch("usr_req", {}, "").error().code, "invalid_batch");
}

// A full batch is written in several multi-row statements (64 + 32 + 4 rows):
// every task as asked, in the order asked, with its own escrow; the same key
// replays all of them.
TEST_F(CoordinatorTest, AFullBatchWritesEveryTaskAsAsked) {
  Fund("usr_req", 100'000'000);
  std::vector<SubmitRequest> batch;
  for (int i = 0; i < 100; ++i) {
    batch.push_back({.type = i % 2 ? "echo" : "sha256",
                     .input = "in-" + std::to_string(i),
                     .parameters = "{\"i\":" + std::to_string(i) + "}",
                     .priority = static_cast<Priority>(i % 4),
                     .max_cost = i % 5 ? std::optional<Amount>(1'000'000 + i) : std::nullopt,
                     .timeout_s = 60 + i,
                     .max_attempts = 1 + i % 3,
                     .not_before_ms = i == 70 ? clock_.NowMs() + 5000 : 0,
                     .deadline_ms = i == 71 ? clock_.NowMs() + 60'000 : 0,
                     .replicas = i == 66 ? 2 : 0});
  }
  auto done = coord_->SubmitBatch("usr_req", batch, "big");
  ASSERT_TRUE(done.ok()) << done.error().message;
  ASSERT_EQ(done->size(), batch.size());
  std::set<std::string> ids, escrows;
  Amount total = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    auto t = coord_->Get("usr_req", (*done)[i].id);
    ASSERT_TRUE(t.ok()) << t.error().message;
    for (const Task* x : {&(*done)[i], &*t}) {
      SCOPED_TRACE("task " + std::to_string(i));
      EXPECT_EQ(x->type, batch[i].type);
      EXPECT_EQ(x->input, batch[i].input);
      EXPECT_EQ(x->parameters, batch[i].parameters);
      EXPECT_EQ(x->priority, batch[i].priority);
      EXPECT_EQ(x->max_cost, batch[i].max_cost);
      EXPECT_EQ(x->timeout_s, batch[i].timeout_s);
      EXPECT_EQ(x->max_attempts, batch[i].max_attempts);
      EXPECT_EQ(x->not_before_ms, batch[i].not_before_ms);
      EXPECT_EQ(x->replicas, batch[i].replicas);
      EXPECT_EQ(x->status, "pending");
      EXPECT_EQ(x->escrow_id, (*done)[i].escrow_id);
    }
    // The answer is the row as written, field for field.
    const Task& a = (*done)[i];
    EXPECT_EQ(a.requester, t->requester);
    EXPECT_EQ(a.input_is_json, t->input_is_json);
    EXPECT_EQ(a.asset, t->asset);
    EXPECT_EQ(a.cost, t->cost);
    EXPECT_EQ(a.attempt, t->attempt);
    EXPECT_EQ(a.failures, t->failures);
    EXPECT_EQ(a.node_id, t->node_id);
    EXPECT_EQ(a.lease_expires_ms, t->lease_expires_ms);
    EXPECT_EQ(a.progress, t->progress);
    EXPECT_EQ(a.progress_message, t->progress_message);
    EXPECT_EQ(a.output, t->output);
    EXPECT_EQ(a.proof_hash, t->proof_hash);
    EXPECT_EQ(a.error, t->error);
    EXPECT_EQ(a.created_ms, t->created_ms);
    EXPECT_EQ(a.updated_ms, t->updated_ms);
    EXPECT_EQ(a.completed_ms, t->completed_ms);
    EXPECT_EQ(a.deadline_ms, t->deadline_ms);
    EXPECT_EQ(a.retries, t->retries);
    EXPECT_EQ(a.parent_id, t->parent_id);
    ids.insert((*done)[i].id);
    escrows.insert((*done)[i].escrow_id);
    total += (*done)[i].cost;
  }
  EXPECT_EQ(ids.size(), batch.size());
  EXPECT_EQ(escrows.size(), batch.size()) << "an escrow of its own each";
  EXPECT_EQ(Acc("usr_req").Spendable(), Amount{100'000'000} - total);
  EXPECT_EQ(Acc("platform", "escrow").credits_pending, total) << "held, one hold a task";
  auto again = coord_->SubmitBatch("usr_req", batch, "big");
  ASSERT_TRUE(again.ok()) << again.error().message;
  for (size_t i = 0; i < batch.size(); ++i) {
    EXPECT_TRUE((*again)[i].replayed);
    EXPECT_EQ((*again)[i].id, (*done)[i].id);
  }
  EXPECT_EQ(Acc("usr_req").Spendable(), Amount{100'000'000} - total) << "a replay holds nothing";
}

// Results that arrive together are completed together: a multi-row statement
// and a ledger call a chunk (here 2,400 transfers, more than one ledger call
// takes, and on PostgreSQL at least half of them in one run). Each is answered with its task and paid once; a result
// sent twice in the same run gets the same answer; a stale lease is refused.
TEST_F(CoordinatorTest, ResultsThatArriveTogetherAreCompletedTogether) {
  Settings settings = *coord_->GetSettings();
  settings.max_tasks_per_node = 100;
  ASSERT_TRUE(coord_->UpdateSettings(settings).ok());
  std::vector<SubmitRequest> batch(100, SubmitRequest{.type = "echo", .input = "x", .timeout_s = 60});
  std::vector<std::pair<Node, Task>> leased;
  for (int i = 0; i < 8; ++i) {  // eight requesters: each may have 100 tasks running
    const std::string requester = "usr_req" + std::to_string(i);
    Fund(requester, 100'000'000);
    ASSERT_TRUE(coord_->SubmitBatch(requester, batch, "").ok());
    Node node = MakeNode("usr_op", "n" + std::to_string(i), {"echo"}, 100);
    auto got = coord_->Claim("usr_op", node.id, 100, 0);
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_EQ(got->size(), 100u);
    for (Task& t : *got) leased.emplace_back(node, std::move(t));
  }
  const Amount before = Acc("usr_op").Spendable();
  const uint64_t together = coord_->ResultsCompletedTogether();
  std::mutex mu;
  std::condition_variable cv;
  size_t answered = 0;
  std::vector<std::optional<Result<Task>>> answers(leased.size() + 2);
  auto send = [&](size_t slot, const Node& n, const Task& t, int lease) {
    coord_->Apply("usr_op", n.id,
                  {.kind = LeaseOp::Kind::kResult,
                   .task_id = t.id,
                   .lease = lease,
                   .output = "out",
                   .proof_hash = crypto::Sha256Hex("out")},
                  [&, slot](Result<Task> r) {
                    std::lock_guard lk(mu);
                    answers[slot] = std::move(r);
                    ++answered;
                    cv.notify_all();
                  });
  };
  // While the results arrive the writer is held, so that they wait for it
  // together (on PostgreSQL the writer takes the first few and waits for the
  // tasks table; the rest go together after them).
  {
    WriterHold hold(*db_);
    for (size_t i = 0; i < leased.size(); ++i) send(i, leased[i].first, leased[i].second, leased[i].second.attempt);
    send(leased.size(), leased[0].first, leased[0].second, leased[0].second.attempt);          // again
    send(leased.size() + 1, leased[1].first, leased[1].second, leased[1].second.attempt + 1);  // stale
  }
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 60s, [&] { return answered == answers.size(); }));
  }
  Amount paid = 0;
  for (size_t i = 0; i < leased.size(); ++i) {
    ASSERT_TRUE(answers[i]->ok()) << i << ": " << answers[i]->error().message;
    EXPECT_EQ((*answers[i])->id, leased[i].second.id);
    EXPECT_EQ((*answers[i])->status, "completed");
    paid += leased[i].second.cost - leased[i].second.cost * static_cast<unsigned>(config_.fee_pct) / 100;
  }
  ASSERT_TRUE(answers[leased.size()]->ok()) << answers[leased.size()]->error().message;
  EXPECT_EQ((*answers[leased.size()])->id, leased[0].second.id) << "the same answer again";
  EXPECT_EQ(answers[leased.size() + 1]->error().code, "lease_stale");
  EXPECT_EQ(coord_->ResultsCompletedTogether() - together, leased.size()) << "not one by one";
  EXPECT_EQ(Acc("usr_op").Spendable(), before + paid) << "each paid once";
  // Paid per chunk, not per task: each reward and fee names its tasks, and
  // every task is named once in the rewards and once in the fees.
  for (const auto& [owner, kind, code] :
       {std::tuple{"usr_op", "available", "task_reward"}, std::tuple{"platform", "fees", "task_fee"}}) {
    std::vector<ledger::Transfer> settled;
    std::optional<std::string> cursor = "";
    while (cursor) {
      auto page = ledger_->History(owner, {.kind = kind}, 100, *cursor);
      ASSERT_TRUE(page.ok()) << page.error().message;
      for (ledger::Transfer& t : page->items)
        if (t.code == code) settled.push_back(std::move(t));
      cursor = page->next_cursor;
    }
    EXPECT_GE(settled.size(), leased.size() / 32) << code;
    EXPECT_LE(settled.size(), leased.size() / 16) << code << ": one a chunk";
    for (const auto& [node, task] : leased) {
      const std::string quoted = "\"" + task.id + "\"";
      int named = 0;
      for (const ledger::Transfer& t : settled)
        for (size_t at = t.metadata.find(quoted); at != std::string::npos; at = t.metadata.find(quoted, at + 1))
          ++named;
      EXPECT_EQ(named, 1) << code << " of " << task.id;
    }
  }
  auto nodes = coord_->ListNodes(10, "");
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->items.size(), 8u);
  for (const Node& n : nodes->items) EXPECT_EQ(n.completed, 100) << n.name;
}

// Single submissions of one requester that wait for the writer together are
// written together (one fair-queue update, one ledger call, multi-row
// inserts), each still answered as if alone: a requester who can afford only
// one of two gets one task and one insufficient_funds; one idempotency key
// sent twice at once makes one task.
TEST_F(CoordinatorTest, SingleSubmitsWaitingTogetherAreWrittenTogether) {
  const Amount cost = *coord_->Estimate("echo", 1);
  Fund("usr_a", 20 * cost);
  Fund("usr_b", cost);
  Fund("usr_c", 10 * cost);
  const uint64_t together = coord_->SubmittedTogether();
  struct Sent {
    std::string who, key;
    std::optional<Result<Task>> answer;
  };
  std::vector<Sent> sent;
  for (int i = 0; i < 20; ++i) sent.push_back({"usr_a", "a" + std::to_string(i)});
  sent.push_back({"usr_b", ""});
  sent.push_back({"usr_b", ""});
  sent.push_back({"usr_c", "same"});
  sent.push_back({"usr_c", "same"});
  std::vector<std::thread> threads;
  {
    WriterHold hold(*db_);
    for (Sent& s : sent) {
      threads.emplace_back(
          [&] { s.answer = coord_->Submit(s.who, {.type = "echo", .input = "x", .timeout_s = 60}, s.key); });
    }
    std::this_thread::sleep_for(300ms);  // they wait for the writer meanwhile
  }
  for (auto& t : threads) t.join();
  std::set<std::string> ids;
  for (size_t i = 0; i < 20; ++i) {
    ASSERT_TRUE(sent[i].answer->ok()) << i << ": " << sent[i].answer->error().message;
    const Task& t = **sent[i].answer;
    EXPECT_EQ(t.status, "pending");
    EXPECT_FALSE(t.replayed);
    ids.insert(t.id);
    auto again = coord_->Submit("usr_a", {.type = "echo", .input = "x", .timeout_s = 60}, sent[i].key);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->id, t.id) << "its own key";
    EXPECT_TRUE(again->replayed);
  }
  EXPECT_EQ(ids.size(), 20u);
  EXPECT_GE(coord_->SubmittedTogether() - together, 10u) << "not one by one";
  EXPECT_EQ(Acc("usr_a").debits_pending, 20 * cost) << "each held once";
  EXPECT_EQ(Acc("usr_a").Spendable(), 0);
  // usr_b: one of the two, and the other told why.
  const Result<Task>& b1 = *sent[20].answer;
  const Result<Task>& b2 = *sent[21].answer;
  ASSERT_NE(b1.ok(), b2.ok());
  const Error& refused = b1.ok() ? b2.error() : b1.error();
  EXPECT_EQ(refused.code, "insufficient_funds");
  EXPECT_NE(refused.message.find("the task costs"), std::string::npos) << refused.message;
  EXPECT_EQ(Acc("usr_b").debits_pending, cost);
  // usr_c: one task for the key, answered to both.
  ASSERT_TRUE(sent[22].answer->ok() && sent[23].answer->ok());
  EXPECT_EQ((*sent[22].answer)->id, (*sent[23].answer)->id);
  EXPECT_NE((*sent[22].answer)->replayed, (*sent[23].answer)->replayed);
  EXPECT_EQ(Acc("usr_c").debits_pending, cost);
  auto listed = coord_->List("usr_a", {}, 100, "");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->items.size(), 20u);
}

// A node's operations on a task are applied in the order sent: a result
// whose task has a start on its way goes after it, not with results queued
// before the start.
TEST_F(CoordinatorTest, AResultGoesAfterItsTasksStart) {
  Fund("usr_req", 1'000'000);
  Node n = MakeNode("usr_op", "n");
  Task a = Submit("usr_req", "a");
  Task b = Submit("usr_req", "b");
  auto got = coord_->Claim("usr_op", n.id, 2, 0);
  ASSERT_TRUE(got.ok() && got->size() == 2u);
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Result<Task>> answers;
  auto apply = [&](const std::string& name, LeaseOp op) {
    coord_->Apply("usr_op", n.id, std::move(op), [&, name](Result<Task> r) {
      std::lock_guard lk(mu);
      answers.emplace(name, std::move(r));
      cv.notify_all();
    });
  };
  auto result = [](const Task& t) {
    return LeaseOp{.kind = LeaseOp::Kind::kResult,
                   .task_id = t.id,
                   .lease = 1,
                   .output = "out",
                   .proof_hash = crypto::Sha256Hex("out")};
  };
  {
    WriterHold hold(*db_);
    apply("result a", result(a));  // results queued
    apply("start b", {.kind = LeaseOp::Kind::kStart, .task_id = b.id, .lease = 1});
    apply("result b", result(b));
  }
  std::unique_lock lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return answers.size() == 3; }));
  for (const auto& [name, r] : answers) ASSERT_TRUE(r.ok()) << name << ": " << r.error().message;
  EXPECT_EQ(answers.at("start b")->status, "in_progress");
  EXPECT_EQ(answers.at("result b")->status, "completed");
  EXPECT_EQ(answers.at("result a")->status, "completed");
}

// Redundant execution: replicas on different nodes, results compared by proof.
class ReplicaTest : public CoordinatorTest {
 protected:
  Task SubmitReplicated(int replicas) {
    auto t = coord_->Submit("usr_req", {.type = "echo", .input = "in", .timeout_s = 60, .replicas = replicas}, "");
    EXPECT_TRUE(t.ok()) << t.error().message;
    return t.ok() ? *t : Task{};
  }
  // The one replica `node` gets (never two of one task).
  Task ClaimOne(const Node& n) {
    auto c = coord_->Claim(n.operator_id, n.id, 5, 0);
    EXPECT_TRUE(c.ok());
    EXPECT_EQ(c.ok() ? c->size() : 0u, 1u) << "one replica per node";
    return c.ok() && !c->empty() ? c->front() : Task{};
  }
  Result<Task> Finish(const Node& n, const Task& replica, const std::string& out) {
    return coord_->Complete(n.operator_id, n.id, replica.id, replica.attempt, out, crypto::Sha256Hex(out));
  }
  Task Parent(const Task& t) { return *coord_->Get("usr_req", t.id); }
};

TEST_F(ReplicaTest, AgreementPaysEveryAgreeingNodeAndChargesOnlyThem) {
  Fund("usr_req", 1'000'000);
  Node a = MakeNode("usr_a", "a"), b = MakeNode("usr_b", "b");
  Task t = SubmitReplicated(2);
  EXPECT_EQ(FormatAmount(t.cost), "75000") << "held: two replicas and a tie-breaker";
  EXPECT_EQ(t.replicas, 2);
  EXPECT_EQ(Balance("usr_req"), "1000000");
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "925000");
  struct Seen {  // shared: the coordinator may notify after this test's body
    std::mutex mu;
    std::vector<std::string> statuses;
  };
  auto seen = std::make_shared<Seen>();
  coord_->OnUpdate([seen, id = t.id](const Task& u) {
    std::lock_guard lk(seen->mu);
    if (u.id == id) seen->statuses.push_back(u.status);
  });
  Task ra = ClaimOne(a);
  EXPECT_EQ(ra.parent_id, t.id);
  EXPECT_EQ(Parent(t).status, "in_progress") << "from the first replica's claim";
  {
    std::lock_guard lk(seen->mu);
    EXPECT_EQ(seen->statuses, std::vector<std::string>{"in_progress"}) << "and its watchers hear of it";
  }
  auto parent_events = History("usr_req", t.id);
  ASSERT_TRUE(parent_events.ok());
  EXPECT_EQ(parent_events->back().status, "in_progress");
  EXPECT_EQ(parent_events->back().node_id, a.id);
  EXPECT_TRUE(coord_->Claim("usr_a", a.id, 5, 0)->empty()) << "the other replica is not for the same node";
  Task rb = ClaimOne(b);
  EXPECT_NE(ra.id, rb.id);
  ASSERT_TRUE(Finish(a, ra, "same").ok());
  EXPECT_EQ(Parent(t).status, "in_progress") << "one result is not an agreement";
  ASSERT_TRUE(Finish(b, rb, "same").ok());
  Task done = Parent(t);
  EXPECT_EQ(done.status, "completed");
  EXPECT_EQ(done.output, "same");
  EXPECT_EQ(FormatAmount(done.cost), "50000") << "charged for the two replicas that ran";
  EXPECT_EQ(Balance("usr_req"), "950000");
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "950000") << "the tie-breaker's share is released";
  EXPECT_EQ(Balance("usr_a"), "1022500");
  EXPECT_EQ(Balance("usr_b"), "1022500");
  EXPECT_EQ(Balance("platform", "fees"), "5000");
  auto page = coord_->List("usr_req", {}, 10, "");
  ASSERT_EQ(page->items.size(), 1u) << "replicas are not listed as tasks of their own";
  EXPECT_EQ(coord_->Cancel("usr_req", ra.id).error().code, "task_final");
}

TEST_F(ReplicaTest, ADisagreementIsBrokenByAnotherNodeAndTheMinorityIsSlashed) {
  Fund("usr_req", 1'000'000);
  Node a = MakeNode("usr_a", "a"), b = MakeNode("usr_b", "b"), c = MakeNode("usr_c", "c");
  Task t = SubmitReplicated(2);
  Task ra = ClaimOne(a), rb = ClaimOne(b);
  ASSERT_TRUE(Finish(a, ra, "right").ok());
  ASSERT_TRUE(Finish(b, rb, "wrong").ok());
  EXPECT_EQ(Parent(t).status, "disputed");
  EXPECT_TRUE(coord_->Claim("usr_a", a.id, 5, 0)->empty()) << "the tie-breaker goes to a third node";
  Task rc = ClaimOne(c);
  EXPECT_EQ(rc.parent_id, t.id);
  ASSERT_TRUE(Finish(c, rc, "right").ok());
  Task done = Parent(t);
  EXPECT_EQ(done.status, "completed");
  EXPECT_EQ(done.output, "right");
  EXPECT_EQ(FormatAmount(done.cost), "50000");
  EXPECT_EQ(Balance("usr_req"), "950000");
  EXPECT_EQ(Balance("usr_a"), "1022500");
  EXPECT_EQ(Balance("usr_c"), "1022500");
  Node slashed = *coord_->GetNode(b.id);
  EXPECT_EQ(FormatAmount(slashed.slashed), "100000") << "10% of the stake";
  EXPECT_EQ(slashed.reputation, 50);
  EXPECT_EQ(Balance("usr_b"), "900000");
  EXPECT_EQ(Balance("platform", "treasury"), "100000");
  auto events = History("usr_req", t.id);
  bool disputed = false, slash_event = false;
  for (const auto& e : *events) {
    disputed = disputed || e.status == "disputed";
    slash_event = slash_event || (e.status == "slashed" && e.node_id == b.id);
  }
  EXPECT_TRUE(disputed);
  EXPECT_TRUE(slash_event);
}

TEST_F(ReplicaTest, ThreeReplicasSettleOnTheFirstTwoThatAgree) {
  Fund("usr_req", 1'000'000);
  Node a = MakeNode("usr_a", "a"), b = MakeNode("usr_b", "b"), c = MakeNode("usr_c", "c");
  Task t = SubmitReplicated(3);
  EXPECT_EQ(FormatAmount(t.cost), "100000");
  Task ra = ClaimOne(a), rb = ClaimOne(b), rc = ClaimOne(c);
  ASSERT_TRUE(Finish(a, ra, "x").ok());
  ASSERT_TRUE(Finish(c, rc, "x").ok());
  EXPECT_EQ(Parent(t).status, "completed");
  auto late = Finish(b, rb, "x");
  EXPECT_EQ(late.error().code, "lease_stale") << "the third replica was cancelled";
  EXPECT_EQ(Balance("usr_req"), "950000");
  EXPECT_EQ(Balance("usr_b"), "1000000") << "neither paid nor slashed";
  EXPECT_EQ(FormatAmount(coord_->GetNode(b.id)->slashed), "0");
}

TEST_F(ReplicaTest, NoMajorityAfterTheTieBreakFailsAndRefunds) {
  Fund("usr_req", 1'000'000);
  Node a = MakeNode("usr_a", "a"), b = MakeNode("usr_b", "b"), c = MakeNode("usr_c", "c");
  Task t = SubmitReplicated(2);
  Task ra = ClaimOne(a), rb = ClaimOne(b);
  ASSERT_TRUE(Finish(a, ra, "1").ok());
  ASSERT_TRUE(Finish(b, rb, "2").ok());
  Task rc = ClaimOne(c);
  ASSERT_TRUE(Finish(c, rc, "3").ok());
  Task done = Parent(t);
  EXPECT_EQ(done.status, "failed");
  EXPECT_EQ(done.error, "the replicas did not agree");
  EXPECT_EQ(Balance("usr_req"), "1000000");
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "1000000");
  for (const Node& n : {a, b, c}) EXPECT_EQ(FormatAmount(coord_->GetNode(n.id)->slashed), "0");
  EXPECT_EQ(coord_->Retry("usr_req", t.id).error().code, "not_retriable");
}

TEST_F(ReplicaTest, CancelEndsTheReplicasAndBadValuesAreRefused) {
  Fund("usr_req", 1'000'000);
  Node a = MakeNode("usr_a", "a");
  for (int bad : {1, 4, -1}) {
    EXPECT_EQ(coord_->Submit("usr_req", {.type = "echo", .input = "in", .replicas = bad}, "").error().code,
              "invalid_replicas");
  }
  Task t = SubmitReplicated(3);
  Task ra = ClaimOne(a);
  EXPECT_EQ(coord_->Cancel("usr_req", ra.id).error().code, "task_is_replica");
  ASSERT_TRUE(coord_->Cancel("usr_req", t.id).ok());
  EXPECT_EQ(Finish(a, ra, "late").error().code, "lease_stale");
  EXPECT_EQ(Balance("usr_req"), "1000000");
  EXPECT_EQ(FormatAmount(Acc("usr_req").Spendable()), "1000000");
}

}  // namespace
}  // namespace smart::tasks
