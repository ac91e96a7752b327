#include "smart/events/subscriptions.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace smart::events {
namespace {

Event TaskEvent(std::string owner, std::string task) {
  return Event{.id = 1, .type = "task_update", .owner = std::move(owner), .subject = std::move(task), .data = "{}"};
}

std::vector<uint64_t> Matched(const Subscriptions& subs, const Event& e) {
  std::vector<uint64_t> out;
  subs.Match(e, out);
  std::sort(out.begin(), out.end());
  return out;
}

using Ids = std::vector<uint64_t>;

TEST(Subscriptions, TaskEventsReachTheirOwnersSubscribersOnly) {
  Subscriptions subs;
  subs.SetUser(1, "usr_alice", 10);
  subs.SetUser(2, "usr_alice", 10);
  subs.SetUser(3, "usr_eve", 10);
  subs.SetUser(4, "usr_alice", 10);
  EXPECT_TRUE(subs.Own(1, true));
  EXPECT_TRUE(subs.Task(2, "task_a", true, 10));
  EXPECT_TRUE(subs.Own(3, true));
  EXPECT_TRUE(subs.Task(3, "task_a", true, 10)) << "eve may ask for alice's task id; she gets nothing";
  EXPECT_TRUE(subs.Own(4, true));
  EXPECT_TRUE(subs.Task(4, "task_a", true, 10)) << "both ways: still one copy";
  EXPECT_EQ(Matched(subs, TaskEvent("usr_alice", "task_a")), (Ids{1, 2, 4}));
  EXPECT_EQ(Matched(subs, TaskEvent("usr_alice", "task_b")), (Ids{1, 4}));
  EXPECT_EQ(Matched(subs, TaskEvent("usr_eve", "task_e")), (Ids{3}));
  EXPECT_EQ(Matched(subs, TaskEvent("", "task_a")), Ids{}) << "no owner, no task subscriber";
  for (uint64_t id : {1, 2, 3, 4}) {
    bool matched = id != 3;
    EXPECT_EQ(subs.Find(id)->Wants(TaskEvent("usr_alice", "task_a")), matched) << id;
  }
  EXPECT_FALSE(subs.Find(2)->Wants(TaskEvent("usr_alice", "task_b")));
  EXPECT_EQ(subs.Find(99), nullptr) << "unknown subscriber";
  EXPECT_FALSE(Subscriptions::Interest{}.Wants(TaskEvent("", "task_a"))) << "not authenticated";
}

TEST(Subscriptions, BroadcastsReachTheirSets) {
  Subscriptions subs;
  subs.SetUser(1, "usr_a", 10);
  subs.SetUser(2, "usr_b", 10);
  subs.Stats(1, true);
  subs.Nodes(2, true);
  subs.Own(2, true);
  Event stats{.id = 1, .type = "network_stats", .data = "{}"};
  Event node{.id = 2, .type = "node_status", .subject = "node_1", .data = "{}"};
  EXPECT_EQ(Matched(subs, stats), Ids{1});
  EXPECT_EQ(Matched(subs, node), Ids{2});
  EXPECT_TRUE(subs.Find(1)->Wants(stats));
  EXPECT_FALSE(subs.Find(1)->Wants(node));
  subs.Stats(1, false);
  EXPECT_EQ(Matched(subs, stats), Ids{});
}

TEST(Subscriptions, UnsubscribingAndRemovingLeaveNothingBehind) {
  Subscriptions subs;
  EXPECT_FALSE(subs.Own(1, true)) << "no user yet";
  EXPECT_TRUE(subs.SetUser(1, "usr_a", 10));
  EXPECT_FALSE(subs.SetUser(1, "usr_b", 10));
  EXPECT_EQ(subs.Find(1)->user, "usr_a") << "the user is set once";
  subs.Own(1, true);
  subs.Task(1, "task_x", true, 2);
  subs.Task(1, "task_y", true, 2);
  EXPECT_FALSE(subs.Task(1, "task_z", true, 2)) << "past the limit";
  EXPECT_TRUE(subs.Task(1, "task_x", true, 2)) << "already there: not a new one";
  EXPECT_TRUE(subs.Find(1)->own);
  EXPECT_EQ(subs.Find(1)->tasks.size(), 2u);
  subs.Own(1, false);
  EXPECT_EQ(Matched(subs, TaskEvent("usr_a", "task_q")), Ids{});
  EXPECT_EQ(Matched(subs, TaskEvent("usr_a", "task_x")), Ids{1});
  subs.Task(1, "task_x", false, 2);
  EXPECT_EQ(Matched(subs, TaskEvent("usr_a", "task_x")), Ids{});
  EXPECT_EQ(Matched(subs, TaskEvent("usr_a", "task_y")), Ids{1});
  subs.Own(1, true);
  subs.Stats(1, true);
  subs.Nodes(1, true);
  subs.Remove(1);
  for (const char* type : {"network_stats", "node_status"}) {
    EXPECT_EQ(Matched(subs, Event{.type = type}), Ids{}) << type;
  }
  EXPECT_EQ(Matched(subs, TaskEvent("usr_a", "task_y")), Ids{});
  EXPECT_EQ(subs.Find(1), nullptr);
}

TEST(Subscriptions, AUserHoldsAtMostSoManySubscribers) {
  Subscriptions subs;
  EXPECT_TRUE(subs.SetUser(1, "usr_a", 2));
  EXPECT_TRUE(subs.SetUser(2, "usr_a", 2));
  EXPECT_FALSE(subs.SetUser(3, "usr_a", 2));
  EXPECT_EQ(subs.Find(3), nullptr) << "refused: nothing kept";
  EXPECT_TRUE(subs.SetUser(3, "usr_b", 2)) << "per user";
  subs.Remove(1);
  EXPECT_TRUE(subs.SetUser(4, "usr_a", 2)) << "a removed one frees its place";
  EXPECT_FALSE(subs.SetUser(5, "usr_a", 2));
}

}  // namespace
}  // namespace smart::events
