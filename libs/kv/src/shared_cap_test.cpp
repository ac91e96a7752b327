#include "smart/kv/shared_cap.hpp"

#include <gtest/gtest.h>

#include <mutex>
#include <thread>

#include "smart/kv/redis.hpp"
#include "smart/testing/redis.hpp"

namespace smart::kv {
namespace {

using namespace std::chrono_literals;

// One instance's cap and the holders it was told to let go.
struct Instance {
  std::mutex mu;
  std::vector<uint64_t> let_go;
  std::unique_ptr<SharedCap> cap;

  Instance(const std::string& url, std::chrono::milliseconds lease = 30s) {
    cap = NewSharedCap({.url = url,
                        .prefix = "t:",
                        .name = "ws",
                        .period = 20ms,
                        .lease = lease,
                        .on_over = [this](std::vector<uint64_t> ids) {
                          std::lock_guard lk(mu);
                          let_go.insert(let_go.end(), ids.begin(), ids.end());
                        }});
  }
  std::vector<uint64_t> LetGo() {
    std::lock_guard lk(mu);
    return let_go;
  }
};

// Waits until `pred` holds (up to 3 s).
bool Eventually(const std::function<bool()>& pred) {
  for (auto until = std::chrono::steady_clock::now() + 3s; std::chrono::steady_clock::now() < until;) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

TEST(SharedCap, AnInstanceLearnsWhatTheOthersHoldAndLetsGoOfItsNewestPastTheCap) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance a(server.url()), b(server.url());
  for (uint64_t id : {1, 2, 3}) a.cap->Add("usr_ann", id, 4);
  ASSERT_TRUE(Eventually([&] {
    auto redis = Redis::Connect(server.url(), 1s);
    return redis && (*redis)->Command({"HLEN", "t:cap:ws:usr_ann"})->integer == 1;
  }));
  // B has heard nothing of ann: it admits three (its own decision), and its
  // exchange grants it one place of the four; the two newest go.
  EXPECT_EQ(b.cap->Others("usr_ann"), 0u);
  for (uint64_t id : {10, 11, 12}) b.cap->Add("usr_ann", id, 4);
  ASSERT_TRUE(Eventually([&] { return b.LetGo().size() == 2; }));
  EXPECT_EQ(b.LetGo(), (std::vector<uint64_t>{11, 12}));
  EXPECT_EQ(b.cap->Others("usr_ann"), 3u);
  EXPECT_TRUE(a.LetGo().empty()) << "the first to exchange keeps its holders";
  // A place freed on A is learned by B at its next exchange of that key.
  a.cap->Remove("usr_ann", 2);
  a.cap->Remove("usr_ann", 2);  // again: a no-op
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(a.cap->Others("usr_ann"), 1u) << "A hears of B's one when it exchanges the key";
  b.cap->Remove("usr_ann", 11);  // let go already: a no-op
  b.cap->Add("usr_ann", 13, 4);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(b.cap->Others("usr_ann"), 2u);
  EXPECT_EQ(b.LetGo().size(), 2u) << "2 on A and 2 on B: at the cap, not past it";
  EXPECT_EQ(b.cap->Others("usr_bob"), 0u) << "keys are independent";
}

TEST(SharedCap, AStoppingInstanceFreesItsPlacesAndACrashedOnesLeaseRunsOut) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance b(server.url());
  {
    Instance a(server.url());
    for (uint64_t id : {1, 2}) a.cap->Add("usr_ann", id, 2);
    std::this_thread::sleep_for(100ms);
  }
  b.cap->Add("usr_ann", 5, 2);
  b.cap->Add("usr_ann", 6, 2);
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(b.LetGo().empty()) << "A freed both places as it stopped";
  EXPECT_EQ(b.cap->Others("usr_ann"), 0u);

  // A crashed instance (its field written, never renewed): its places count
  // until its lease runs out.
  auto redis = Redis::Connect(server.url(), 1s);
  ASSERT_TRUE(redis);
  auto now = (*redis)->Command({"TIME"});
  ASSERT_TRUE(now);
  std::string expires =
      std::to_string(std::stoll(now->elements[0].str) * 1000 + std::stoll(now->elements[1].str) / 1000 + 500);
  ASSERT_TRUE((*redis)->Command({"HSET", "t:cap:ws:usr_cy", "crashed", "2:" + expires}));
  b.cap->Add("usr_cy", 7, 3);
  b.cap->Add("usr_cy", 8, 3);
  ASSERT_TRUE(Eventually([&] { return b.LetGo().size() == 1; }));
  EXPECT_EQ(b.LetGo()[0], 8u);
  EXPECT_EQ(b.cap->Others("usr_cy"), 2u);
  std::this_thread::sleep_for(600ms);  // past the crashed lease
  b.cap->Add("usr_cy", 9, 3);
  b.cap->Add("usr_cy", 10, 3);
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(b.LetGo().size(), 1u) << "7, 9 and 10: three places, none past the cap";
  EXPECT_EQ(b.cap->Others("usr_cy"), 0u);
  EXPECT_EQ((*redis)->Command({"HLEN", "t:cap:ws:usr_cy"})->integer, 1) << "the crashed field is gone";
}

TEST(SharedCap, ALeaseIsRenewedWhileItsHoldersLast) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance a(server.url(), 300ms), b(server.url(), 300ms);
  a.cap->Add("usr_ann", 1, 1);
  std::this_thread::sleep_for(1s);  // three leases: renewed every 100 ms
  b.cap->Add("usr_ann", 2, 1);
  ASSERT_TRUE(Eventually([&] { return b.LetGo().size() == 1; }));
  EXPECT_TRUE(a.LetGo().empty());
}

TEST(SharedCap, WhileRedisIsAwayEachInstanceDecidesAloneThenLetsGoPastTheCap) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance a(server.url()), b(server.url());
  a.cap->Add("usr_ann", 1, 2);
  std::this_thread::sleep_for(100ms);
  b.cap->Add("usr_ann", 2, 2);
  ASSERT_TRUE(Eventually([&] { return b.cap->Others("usr_ann") == 1; }));
  server.Stop();
  // Each admits one more on its own (as its callers decided: here both
  // went past), and nothing can be exchanged.
  a.cap->Add("usr_ann", 3, 2);
  b.cap->Add("usr_ann", 4, 2);
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(a.LetGo().empty());
  EXPECT_TRUE(b.LetGo().empty());
  // Redis back, its data lost: each sends all it holds. The first to
  // exchange is granted its two; the other keeps the one granted before the
  // outage (granted holders are never let go) and lets go of its fresh one.
  ASSERT_TRUE(server.Start());
  ASSERT_TRUE(Eventually([&] { return a.LetGo().size() + b.LetGo().size() == 1; }));
  std::this_thread::sleep_for(100ms);
  auto gone = a.LetGo().empty() ? b.LetGo() : a.LetGo();
  ASSERT_EQ(a.LetGo().size() + b.LetGo().size(), 1u);
  EXPECT_TRUE(gone[0] == 3 || gone[0] == 4) << gone[0];
  auto redis = Redis::Connect(server.url(), 1s);
  ASSERT_TRUE(redis);
  auto tally = (*redis)->Command({"HVALS", "t:cap:ws:usr_ann"});
  ASSERT_TRUE(tally);
  size_t total = 0;
  for (const auto& v : tally->elements) total += std::stoul(v.str.substr(0, v.str.find(':')));
  EXPECT_EQ(total, 3u) << "two and one: over the cap by the grant that outlived Redis's data";
}

}  // namespace
}  // namespace smart::kv
