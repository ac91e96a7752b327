#include <gtest/gtest.h>

#include <thread>

#include "smart/kv/rate_limiter.hpp"
#include "smart/testing/redis.hpp"

namespace smart::kv {
namespace {

using namespace std::chrono_literals;

// Two limiters on one Redis: two smartd instances.
struct Pair {
  testing::RedisServer server;
  std::unique_ptr<RateLimiter> local_a = NewMemoryRateLimiter(), local_b = NewMemoryRateLimiter();
  std::unique_ptr<RateLimiter> a = NewRedisRateLimiter(server.url(), "t:", *local_a);
  std::unique_ptr<RateLimiter> b = NewRedisRateLimiter(server.url(), "t:", *local_b);
};

TEST(RedisRateLimiter, InstancesShareOneBudgetWithTheMemoryLimitersArithmetic) {
  Pair p;
  ASSERT_FALSE(p.server.url().empty());
  const Limit limit{.per_minute = 1, .burst = 5};
  auto memory = NewMemoryRateLimiter();
  EXPECT_TRUE(p.a->Peek("k", limit, 0).allowed);
  for (int i = 0; i < 5; ++i) {
    RateLimiter& either = i % 2 ? *p.b : *p.a;
    Decision d = either.Check("k", limit, 0), m = memory->Check("k", limit, 1'000'000);
    ASSERT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.limit, m.limit);
    EXPECT_EQ(d.remaining, m.remaining) << i;
    EXPECT_NEAR(static_cast<double>(d.reset_s), static_cast<double>(m.reset_s), 1.0) << i;
  }
  Decision refused = p.b->Check("k", limit, 0), m = memory->Check("k", limit, 1'000'000);
  EXPECT_FALSE(refused.allowed) << "five between the two instances, not five each";
  EXPECT_FALSE(p.a->Peek("k", limit, 0).allowed);
  EXPECT_EQ(refused.remaining, 0);
  EXPECT_NEAR(static_cast<double>(refused.retry_after_s), static_cast<double>(m.retry_after_s), 1.0);
  EXPECT_NEAR(static_cast<double>(refused.reset_s), static_cast<double>(m.reset_s), 1.0);
  EXPECT_TRUE(p.a->Check("other", limit, 0).allowed) << "keys are independent";
  EXPECT_EQ(p.local_a->size() + p.local_b->size(), 0u) << "the local limiters were not used";

  // A peek counts nothing.
  const Limit two{.per_minute = 1, .burst = 2};
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(p.a->Peek("peeked", two, 0).allowed);
  EXPECT_TRUE(p.b->Check("peeked", two, 0).allowed);
  EXPECT_TRUE(p.a->Check("peeked", two, 0).allowed);
  EXPECT_FALSE(p.b->Check("peeked", two, 0).allowed);

  // Daily quotas are shared too.
  int64_t now = 1'700'000'000'000;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE((i % 2 ? *p.b : *p.a).CheckDaily("d", 3, now)) << i;
  EXPECT_FALSE(p.a->CheckDaily("d", 3, now));
  EXPECT_TRUE(p.a->CheckDaily("d", 3, now + 86'400'000)) << "a new day";
}

TEST(RedisRateLimiter, WithoutRedisTheLocalLimiterDecidesAtOnce) {
  Pair p;
  ASSERT_FALSE(p.server.url().empty());
  const Limit limit{.per_minute = 1, .burst = 2};
  ASSERT_TRUE(p.a->Check("k", limit, 0).allowed);  // connected, shared
  p.server.Stop();
  auto start = std::chrono::steady_clock::now();
  int64_t now = 1'700'000'000'000;
  EXPECT_TRUE(p.a->Check("k", limit, now).allowed) << "the local limiter's own budget";
  EXPECT_TRUE(p.a->Check("k", limit, now).allowed);
  EXPECT_FALSE(p.a->Check("k", limit, now).allowed) << "still limited while Redis is away";
  EXPECT_TRUE(p.a->CheckDaily("d", 1, now));
  EXPECT_FALSE(p.a->CheckDaily("d", 1, now));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms) << "no wait per call";
  ASSERT_TRUE(p.server.Start());  // empty: the shared budget starts over
  std::this_thread::sleep_for(1100ms);
  EXPECT_TRUE(p.a->Check("k", limit, now).allowed);
  EXPECT_TRUE(p.b->Check("k", limit, now).allowed);
  EXPECT_FALSE(p.a->Check("k", limit, now).allowed) << "shared again";
}

}  // namespace
}  // namespace smart::kv
