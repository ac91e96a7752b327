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
  bool complete = false;
  auto missed = bus.Since(3, &complete);
  EXPECT_TRUE(complete);
  ASSERT_EQ(missed.size(), 2u);
  EXPECT_EQ(missed[0].id, 4u);
  missed = bus.Since(1, &complete);
  EXPECT_FALSE(complete) << "event 2 fell out of the window";
  EXPECT_EQ(missed.size(), 3u);
  EXPECT_TRUE(bus.Since(5, &complete).empty());
  EXPECT_TRUE(complete);
  bus.Unsubscribe(token);
  bus.Publish("x", "", "", "{}", 0);
  EXPECT_EQ(heard.size(), 5u);
  EXPECT_EQ(bus.last_id(), 6u);
  EXPECT_EQ(missed[0].Json(), R"({"id":3,"type":"task_update","ts":"1970-01-01T00:00:01.000Z","data":{"n":1}})");
}

}  // namespace
}  // namespace smart::events
