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

}  // namespace
}  // namespace smart::events
