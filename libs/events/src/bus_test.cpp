#include "smart/events/bus.hpp"

#include <gtest/gtest.h>

namespace smart::events {
namespace {

TEST(Bus, IdsGrowSubscribersHearAndTheWindowReplays) {
  Bus bus(3);
  std::vector<uint64_t> heard;
  auto token = bus.Subscribe([&](const Event& e) { heard.push_back(e.id); });
  for (int i = 0; i < 5; ++i) bus.Publish("task_update", "usr_a", "task_" + std::to_string(i), "{\"n\":1}", 1000);
  EXPECT_EQ(heard, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  auto all = [](const Event&) { return true; };
  auto missed = bus.Since(3, all, 100);
  EXPECT_TRUE(missed.complete);
  ASSERT_EQ(missed.events.size(), 2u);
  EXPECT_EQ(missed.events[0].id, 4u);
  missed = bus.Since(1, all, 100);
  EXPECT_FALSE(missed.complete) << "event 2 fell out of the window";
  ASSERT_EQ(missed.events.size(), 3u);
  EXPECT_EQ(missed.events[0].id, 3u);
  auto none = bus.Since(5, all, 100);
  EXPECT_TRUE(none.events.empty());
  EXPECT_TRUE(none.complete);
  auto wanted = bus.Since(
      0, [](const Event& e) { return e.subject != "task_3"; }, 1);
  ASSERT_EQ(wanted.events.size(), 1u) << "at most the one asked for";
  EXPECT_EQ(wanted.events[0].id, 3u);
  EXPECT_TRUE(wanted.more);
  wanted = bus.Since(
      3, [](const Event& e) { return e.subject != "task_3"; }, 5);
  ASSERT_EQ(wanted.events.size(), 1u) << "only what is wanted";
  EXPECT_EQ(wanted.events[0].id, 5u);
  EXPECT_FALSE(wanted.more);
  bus.Unsubscribe(token);
  bus.Publish("x", "", "", "{}", 0);
  EXPECT_EQ(heard.size(), 5u);
  EXPECT_EQ(bus.last_id(), 6u);
  EXPECT_EQ(missed.events[0].Json(), R"({"id":3,"type":"task_update","ts":"1970-01-01T00:00:01.000Z","data":{"n":1}})");
}

// SubscribeOwn: events published here are heard at once while forwarded
// (id 0), and again with their id when they come back; without a forwarder,
// once, as any subscriber hears them.
TEST(Bus, OwnEventsAreHeardAtOnceWhileForwarded) {
  Bus bus;
  std::vector<uint64_t> own, all;
  bus.SubscribeOwn([&](const Event& e) { own.push_back(e.id); });
  bus.Subscribe([&](const Event& e) { all.push_back(e.id); });
  bus.Publish("task_update", "usr_a", "task_1", "{}", 0);
  EXPECT_EQ(own, std::vector<uint64_t>{1});
  std::vector<Event> forwarded;
  bus.Forward([&](Event e) { forwarded.push_back(std::move(e)); });
  bus.Publish("task_update", "usr_a", "task_2", "{}", 0);
  ASSERT_EQ(forwarded.size(), 1u);
  EXPECT_EQ(forwarded[0].subject, "task_2");
  EXPECT_EQ(own, (std::vector<uint64_t>{1, 0})) << "at once, before the shared log gave it an id";
  EXPECT_EQ(all, std::vector<uint64_t>{1});
  forwarded[0].id = 70;
  bus.Receive(forwarded[0], true, /*own=*/true);
  EXPECT_EQ(own, (std::vector<uint64_t>{1, 0})) << "its return is not heard twice";
  EXPECT_EQ(all, (std::vector<uint64_t>{1, 70}));
  bus.Receive(Event{71, "task_update", 0, "usr_a", "task_3", "{}"});  // another instance's
  EXPECT_EQ(own, (std::vector<uint64_t>{1, 0, 71}));
  EXPECT_EQ(all, (std::vector<uint64_t>{1, 70, 71}));
}

TEST(Bus, AResumeCannotVouchForIdsItHasNotReachedOrForABreak) {
  Bus bus(100, 5000);
  auto all = [](const Event&) { return true; };
  EXPECT_EQ(bus.Publish("x", "", "", "{}", 0), 5000u) << "ids start where asked";
  EXPECT_TRUE(bus.Since(4999, all, 10).complete);
  EXPECT_FALSE(bus.Since(0, all, 10).complete) << "events before 5000 were never here";
  EXPECT_FALSE(bus.Since(9000, all, 10).complete) << "an id from another process or before a restart";

  // Events numbered elsewhere (the shared log): a break in the ids empties the window.
  std::vector<uint64_t> heard;
  bus.Subscribe([&](const Event& e) { heard.push_back(e.id); });
  std::vector<Event> forwarded;
  bus.Forward([&](Event e) { forwarded.push_back(std::move(e)); });
  EXPECT_EQ(bus.Publish("y", "", "s", "{}", 1), 0u);
  ASSERT_EQ(forwarded.size(), 1u);
  EXPECT_EQ(forwarded[0].subject, "s");
  EXPECT_TRUE(heard.empty()) << "delivered only when it comes back";
  bus.Receive(Event{5001, "y", 1, "", "s", "{}"});
  bus.Receive(Event{5002, "y", 1, "", "s", "{}"}, false);
  EXPECT_EQ(heard, (std::vector<uint64_t>{5001}));
  EXPECT_EQ(bus.Since(4999, all, 10).events.size(), 3u);
  bus.Receive(Event{5010, "y", 1, "", "s", "{}"});
  auto missed = bus.Since(5002, all, 10);
  EXPECT_FALSE(missed.complete) << "5003-5009 never came";
  ASSERT_EQ(missed.events.size(), 1u);
  EXPECT_EQ(missed.events[0].id, 5010u);
  EXPECT_TRUE(bus.Since(5010, all, 10).complete);
  bus.Forward(nullptr);
  EXPECT_EQ(bus.Publish("z", "", "", "{}", 2), 5011u) << "local again";
}

}  // namespace
}  // namespace smart::events
