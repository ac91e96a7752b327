#include <gtest/gtest.h>

#include <charconv>
#include <thread>

#include "smart/kv/rate_limiter.hpp"
#include "smart/kv/redis.hpp"
#include "smart/testing/redis.hpp"

namespace smart::kv {
namespace {

using namespace std::chrono_literals;

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Two shared limiters on one Redis (two smartd instances), exchanging every 20 ms.
struct Shared {
  testing::RedisServer server;
  std::unique_ptr<RateLimiter> a = NewSharedRateLimiter(server.url(), "t:", 10'000, 20ms);
  std::unique_ptr<RateLimiter> b = NewSharedRateLimiter(server.url(), "t:", 10'000, 20ms);

  // The shared value of a limiter key (0 if none), read from Redis.
  int64_t Stored(const std::string& key) {
    auto redis = Redis::Connect(server.url(), 1s);
    if (!redis) return -1;
    auto r = (*redis)->Command({"GET", "t:rl:" + key});
    int64_t n = 0;
    if (r) std::from_chars(r->str.data(), r->str.data() + r->str.size(), n);
    return n;
  }
  // Waits until `pred` holds (up to 3 s).
  static bool Eventually(const std::function<bool()>& pred) {
    for (auto until = std::chrono::steady_clock::now() + 3s; std::chrono::steady_clock::now() < until;) {
      if (pred()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return pred();
  }
};

TEST(SharedRateLimiter, ABurstUsedOnOneInstanceIsUsedOnTheOther) {
  Shared s;
  ASSERT_FALSE(s.server.url().empty());
  const Limit limit{.per_minute = 1, .burst = 5};
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(s.a->Check("k", limit, Now()).allowed) << i;
  EXPECT_FALSE(s.a->Check("k", limit, Now()).allowed);
  // Over its limit on A: announced, so B refuses it without having counted it.
  EXPECT_TRUE(Shared::Eventually([&] { return !s.b->Peek("k", limit, Now()).allowed; })) << "B heard of A's five";
  Decision refused = s.b->Check("k", limit, Now());
  EXPECT_FALSE(refused.allowed);
  EXPECT_NEAR(static_cast<double>(refused.retry_after_s), 60, 2) << "five at once, then one a minute";
  int64_t ahead_s = (s.Stored("k") - Now() * 1000) / 1'000'000;  // the shared TAT: five intervals ahead
  EXPECT_GE(ahead_s, 5 * 60 - 5);
  EXPECT_LE(ahead_s, 5 * 60);
  EXPECT_TRUE(s.b->Check("other", limit, Now()).allowed) << "keys are independent";

  // Under its limit: B learns of a key's use with its own first request there.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.a->Check("j", limit, Now()).allowed) << i;
  ASSERT_TRUE(Shared::Eventually([&] { return s.Stored("j") > Now() * 1000 + 170'000'000; }));  // three minutes
  EXPECT_TRUE(s.b->Check("j", limit, Now()).allowed);
  ASSERT_TRUE(Shared::Eventually([&] { return s.Stored("j") > Now() * 1000 + 230'000'000; }));  // four
  ASSERT_TRUE(Shared::Eventually([&] { return s.b->Peek("j", limit, Now()).remaining == 0; }))
      << "B took it in: one more, then none (it counted one of its own only)";
  EXPECT_TRUE(s.b->Check("j", limit, Now()).allowed) << "the fifth";
  EXPECT_FALSE(s.b->Check("j", limit, Now()).allowed) << "five in all, not five on each";
}

TEST(SharedRateLimiter, TheDailyQuotaHoldsOverAllInstances) {
  Shared s;
  ASSERT_FALSE(s.server.url().empty());
  int64_t now = Now(), day = now / 86'400'000;
  const std::string key = "d:q:" + std::to_string(day);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(s.a->CheckDaily("q", 10, now)) << i;
  ASSERT_TRUE(Shared::Eventually([&] { return s.Stored(key) == 7; }));
  int allowed = 0;
  while (allowed < 10 && s.b->CheckDaily("q", 10, now)) {
    ++allowed;
    ASSERT_TRUE(Shared::Eventually([&] { return s.Stored(key) == 7 + allowed; })) << allowed;
  }
  EXPECT_EQ(allowed, 3) << "ten in all, seven of them on A";
  EXPECT_TRUE(Shared::Eventually([&] { return !s.a->CheckDaily("q", 10, now); })) << "A heard of B's three";
}

TEST(SharedRateLimiter, WhileRedisIsAwayEachInstanceLimitsOnItsOwn) {
  Shared s;
  ASSERT_FALSE(s.server.url().empty());
  const Limit limit{.per_minute = 1, .burst = 2};
  ASSERT_TRUE(s.a->Check("warm", limit, Now()).allowed);
  ASSERT_TRUE(Shared::Eventually([&] { return s.Stored("warm") > 0; }));  // connected
  s.server.Stop();
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(s.a->Check("k", limit, Now()).allowed);
  EXPECT_TRUE(s.a->Check("k", limit, Now()).allowed);
  EXPECT_FALSE(s.a->Check("k", limit, Now()).allowed) << "limited still";
  for (int i = 0; i < 100; ++i) s.b->Check("busy", limit, Now());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 100ms) << "a decision never waits for Redis";
  std::this_thread::sleep_for(100ms);  // exchanges fail meanwhile
  ASSERT_TRUE(s.server.Start());       // empty
  EXPECT_TRUE(s.b->Check("later", limit, Now()).allowed);
  EXPECT_TRUE(Shared::Eventually([&] { return s.Stored("later") > 0; })) << "shared again once Redis is back";
  // A's next exchange (each instance exchanges on its own period).
  EXPECT_TRUE(Shared::Eventually([&] { return s.Stored("k") > 0; })) << "what A counted meanwhile waited for Redis";
}

TEST(SharedRateLimiter, AStoppingInstanceSendsWhatItCountedLast) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  auto a = NewSharedRateLimiter(server.url(), "t:", 10'000, 1h);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->Check("k", {.per_minute = 60, .burst = 10}, Now()).allowed);
  a.reset();
  auto redis = Redis::Connect(server.url(), 1s);
  ASSERT_TRUE(redis.ok());
  auto tat = (*redis)->Command({"GET", "t:rl:k"});
  ASSERT_TRUE(tat.ok());
  int64_t us = 0;
  std::from_chars(tat->str.data(), tat->str.data() + tat->str.size(), us);
  EXPECT_NEAR(static_cast<double>(us - Now() * 1000), 3e6, 0.5e6) << "three a second's interval: three seconds ahead";
}

}  // namespace
}  // namespace smart::kv
