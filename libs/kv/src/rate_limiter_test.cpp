#include "smart/kv/rate_limiter.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace smart::kv {
namespace {

constexpr int64_t kT0 = 1795343400000;

TEST(RateLimiter, BurstThenSustainedRate) {
  auto rl = NewMemoryRateLimiter();
  Limit lim{60, 10};  // one per second, ten at once
  for (int i = 0; i < 10; ++i) {
    auto d = rl->Check("k", lim, kT0);
    ASSERT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.limit, 10);
    EXPECT_EQ(d.remaining, 9 - i);
  }
  auto refused = rl->Check("k", lim, kT0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.remaining, 0);
  EXPECT_EQ(refused.retry_after_s, 1);
  EXPECT_EQ(refused.reset_s, 10);
  // Remaining counts down correctly when requests are a little apart.
  auto rl2 = NewMemoryRateLimiter();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(rl2->Check("s", {60, 5}, kT0 + i * 10).remaining, 4 - i) << i;
  EXPECT_FALSE(rl2->Check("s", {60, 5}, kT0 + 50).allowed);
  // One more slot per second.
  EXPECT_FALSE(rl->Check("k", lim, kT0 + 999).allowed);
  EXPECT_TRUE(rl->Check("k", lim, kT0 + 1000).allowed);
  EXPECT_FALSE(rl->Check("k", lim, kT0 + 1000).allowed);
  // After a long pause the whole burst is back.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(rl->Check("k", lim, kT0 + 60000).allowed);
  EXPECT_FALSE(rl->Check("k", lim, kT0 + 60000).allowed);
}

TEST(RateLimiter, PeekCountsNothing) {
  auto rl = NewMemoryRateLimiter();
  Limit lim{60, 2};
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(rl->Peek("p", lim, kT0).allowed);
  EXPECT_TRUE(rl->Check("p", lim, kT0).allowed);
  EXPECT_TRUE(rl->Check("p", lim, kT0).allowed);
  EXPECT_FALSE(rl->Peek("p", lim, kT0).allowed);
}

TEST(RateLimiter, KeysAreIndependent) {
  auto rl = NewMemoryRateLimiter();
  Limit lim{30, 5};
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(rl->Check("a", lim, kT0).allowed);
  EXPECT_FALSE(rl->Check("a", lim, kT0).allowed);
  EXPECT_TRUE(rl->Check("b", lim, kT0).allowed);
}

TEST(RateLimiter, ExactUnderConcurrency) {
  auto rl = NewMemoryRateLimiter();
  Limit lim{1, 1000};  // 1000 at once, then almost nothing
  std::atomic<int> allowed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) allowed += rl->Check("shared", lim, kT0).allowed;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(allowed, 1000);
}

TEST(RateLimiter, DailyQuota) {
  auto rl = NewMemoryRateLimiter();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(rl->CheckDaily("d", 3, kT0));
  EXPECT_FALSE(rl->CheckDaily("d", 3, kT0));
  EXPECT_TRUE(rl->CheckDaily("d", 3, kT0 + 86'400'000)) << "a new UTC day, a new quota";
}

TEST(RateLimiter, MemoryIsBounded) {
  auto rl = NewMemoryRateLimiter(64 * 100);
  Limit lim{60, 10};
  for (int i = 0; i < 100000; ++i) rl->Check("key" + std::to_string(i), lim, kT0);
  EXPECT_LE(rl->size(), 64u * 100u);
  // Idle keys go first: time passing frees everything at the next insertions.
  for (int i = 0; i < 100; ++i) rl->Check("late" + std::to_string(i), lim, kT0 + 3600000);
  EXPECT_LE(rl->size(), 64u * 100u);
}

}  // namespace
}  // namespace smart::kv
