#include "smart/events/redis_relay.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "smart/kv/redis.hpp"
#include "smart/testing/redis.hpp"

namespace smart::events {
namespace {

using std::chrono::milliseconds;

bool Eventually(const std::function<bool()>& done, milliseconds within = milliseconds(10000)) {
  auto until = std::chrono::steady_clock::now() + within;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

// What one instance's subscribers heard.
struct Heard {
  std::mutex mu;
  std::vector<Event> events;
  size_t size() {
    std::lock_guard lk(mu);
    return events.size();
  }
  std::vector<Event> copy() {
    std::lock_guard lk(mu);
    return events;
  }
};

struct Instance {
  Bus bus{1000};
  Heard heard;
  std::unique_ptr<RedisRelay> relay;
  explicit Instance(const std::string& url, RelayOptions options = {}) {
    bus.Subscribe([this](const Event& e) {
      std::lock_guard lk(heard.mu);
      heard.events.push_back(e);
    });
    options.url = url;
    options.window = 1000;
    auto r = RedisRelay::Start(bus, std::move(options));
    EXPECT_TRUE(r) << r.error().message;
    if (r) relay = std::move(*r);
  }
};

const auto kAll = [](const Event&) { return true; };

// Publishes an event on `from` and waits until `to` heard it: its id, or 0.
uint64_t OneEvent(Instance& from, Instance& to) {
  size_t before = to.heard.size();
  from.bus.Publish("task_update", "u", "one", "{}", 1);
  if (!Eventually([&] { return to.heard.size() == before + 1; })) return 0;
  return to.heard.copy().back().id;
}

// A connection of the test's own, to make Redis misbehave.
std::unique_ptr<kv::Redis> Admin(const testing::RedisServer& server) {
  auto r = kv::Redis::Connect(server.url(), milliseconds(2000));
  return r ? std::move(*r) : nullptr;
}

TEST(RedisRelay, InstancesHearEveryInstancesEventsWithTheSameIdsInTheSameOrder) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance a(server.url()), b(server.url());
  ASSERT_TRUE(a.relay && b.relay);
  std::thread from_a([&] {
    for (int i = 0; i < 300; ++i) a.bus.Publish("task_update", "usr_a", "task_a" + std::to_string(i), "{}", 1000 + i);
  });
  std::thread from_b([&] {
    for (int i = 0; i < 300; ++i) b.bus.Publish("node_status", "", "node_b" + std::to_string(i), "{\"x\":1}", 7);
  });
  from_a.join();
  from_b.join();
  ASSERT_TRUE(Eventually([&] { return a.heard.size() == 600 && b.heard.size() == 600; }))
      << a.heard.size() << " " << b.heard.size();
  auto ea = a.heard.copy(), eb = b.heard.copy();
  for (size_t i = 0; i < 600; ++i) {
    ASSERT_EQ(ea[i].id, eb[i].id) << i;
    ASSERT_EQ(ea[i].subject, eb[i].subject) << i;
    if (i) {
      ASSERT_EQ(ea[i].id, ea[i - 1].id + 1) << "ids follow each other";
    }
  }
  // Each instance's own events in the order it published them, all fields intact.
  int next_a = 0;
  for (const auto& e : ea) {
    if (e.type != "task_update") continue;
    EXPECT_EQ(e.subject, "task_a" + std::to_string(next_a));
    EXPECT_EQ(e.ts_ms, 1000 + next_a);
    EXPECT_EQ(e.owner, "usr_a");
    ++next_a;
  }
  EXPECT_EQ(next_a, 300);
  EXPECT_EQ(eb.back().data, ea.back().data);
  EXPECT_GT(ea.front().id, 1'000'000'000'000'000u) << "the counter starts from Redis's clock in microseconds";
  EXPECT_EQ(a.relay->sent() + b.relay->sent(), 600u);

  // A client may resume on either instance, and on one started later: its
  // window was loaded from the stream.
  Instance c(server.url());
  ASSERT_TRUE(c.relay);
  for (auto* bus : {&a.bus, &b.bus, &c.bus}) {
    auto missed = bus->Since(ea[99].id, kAll, 1000);
    EXPECT_TRUE(missed.complete);
    ASSERT_EQ(missed.events.size(), 500u);
    EXPECT_EQ(missed.events.front().id, ea[100].id);
    EXPECT_EQ(missed.events.back().Json(), ea.back().Json());
  }
  EXPECT_EQ(c.heard.size(), 0u) << "what was loaded at start is not delivered again";
  c.bus.Publish("network_stats", "", "", "{}", 1);
  ASSERT_TRUE(Eventually([&] { return a.heard.size() == 601 && c.heard.size() == 1; }));
  EXPECT_EQ(c.heard.copy()[0].id, ea.back().id + 1);
}

// Bus::SubscribeOwn's subscribers hear their instance's events once, at once
// (id 0), not again when Redis gives them back, and the others' with their ids.
TEST(RedisRelay, OwnEventsComeBackMarkedAndAreNotHeardTwice) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Heard own;  // outlives the instances, whose threads call into it
  Instance a(server.url()), b(server.url());
  ASSERT_TRUE(a.relay && b.relay);
  a.bus.SubscribeOwn([&own](const Event& e) {
    std::lock_guard lk(own.mu);
    own.events.push_back(e);
  });
  a.bus.Publish("task_update", "u", "mine", "{}", 1);
  EXPECT_EQ(own.size(), 1u) << "at once";
  ASSERT_TRUE(Eventually([&] { return a.heard.size() == 1; })) << "back from Redis, with its id";
  ASSERT_NE(OneEvent(b, a), 0u);
  ASSERT_TRUE(Eventually([&] { return own.size() == 2; }));
  auto heard = own.copy();
  EXPECT_EQ(heard[0].subject, "mine");
  EXPECT_EQ(heard[0].id, 0u);
  EXPECT_EQ(heard[1].subject, "one");
  EXPECT_GT(heard[1].id, 0u);
  auto all = a.heard.copy();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].subject, "mine") << "Subscribe's subscribers hear it with its id";
  EXPECT_EQ(all[1].id, heard[1].id);
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(own.size(), 2u) << "nothing heard twice";
}

TEST(RedisRelay, EventsWaitOutAnOutageAndALostCounterNeverGoesBack) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  std::atomic<int> errors{0}, recoveries{0};
  RelayOptions options;
  options.on_error = [&](const Error&) { ++errors; };
  options.on_recovered = [&] { ++recoveries; };
  Instance a(server.url(), options), b(server.url());
  ASSERT_TRUE(a.relay && b.relay);
  a.bus.Publish("task_update", "u", "before", "{}", 1);
  // Heard by b, and its reply taken by a's sender: a batch whose reply was
  // lost is sent again, which a Redis that lost its data appends again.
  ASSERT_TRUE(Eventually([&] { return b.heard.size() == 1 && a.relay->sent() == 1; }));
  uint64_t before = b.heard.copy()[0].id;

  server.Stop();  // its data with it: the counter and the stream
  for (int i = 0; i < 10; ++i) a.bus.Publish("task_update", "u", "during" + std::to_string(i), "{}", 2);
  ASSERT_TRUE(Eventually([&] { return errors.load() > 0; }));
  EXPECT_TRUE(a.relay->failing());
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(b.heard.size(), 1u);
  ASSERT_TRUE(server.Start());
  ASSERT_TRUE(Eventually([&] { return a.heard.size() == 11 && b.heard.size() == 11; }))
      << a.heard.size() << " " << b.heard.size();
  auto eb = b.heard.copy();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(eb[static_cast<size_t>(i) + 1].subject, "during" + std::to_string(i));
  EXPECT_GT(eb[1].id, before) << "a new counter starts above every id given before";
  EXPECT_TRUE(Eventually([&] { return recoveries.load() > 0 && !a.relay->failing(); }));
  EXPECT_EQ(a.relay->dropped(), 0u);
  // The window cannot vouch for what happened between the two counters.
  auto missed = b.bus.Since(before, kAll, 100);
  EXPECT_FALSE(missed.complete);
  EXPECT_TRUE(b.bus.Since(eb[1].id, kAll, 100).complete);
}

TEST(RedisRelay, AFullQueueDropsItsOldestAndResumesReportTheGap) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  RelayOptions options;
  options.max_queued = 5;
  Instance a(server.url(), options), b(server.url());
  ASSERT_TRUE(a.relay && b.relay);
  uint64_t first = OneEvent(a, b);
  ASSERT_NE(first, 0u);
  // Redis holds every client for a second (its data kept): the queue overflows.
  auto admin = Admin(server);
  ASSERT_TRUE(admin);
  ASSERT_TRUE(admin->Command({"CLIENT", "PAUSE", "1000", "ALL"}));
  for (int i = 0; i < 20; ++i) a.bus.Publish("task_update", "u", "e" + std::to_string(i), "{}", 2);
  uint64_t dropped = a.relay->dropped();
  EXPECT_TRUE(dropped >= 10 && dropped <= 15) << dropped << ": 5 wait, and a batch of 0-5 taken before the pause";
  ASSERT_TRUE(Eventually([&] { return b.heard.size() == 1 + 20 - dropped; })) << b.heard.size();
  auto eb = b.heard.copy();
  EXPECT_EQ(eb.back().subject, "e19") << "the newest kept";
  EXPECT_EQ(eb.back().id - first, 20u) << "the dropped events' ids stay unused";
  EXPECT_FALSE(b.bus.Since(first, kAll, 100).complete) << "a resume across the break reports it";
  EXPECT_TRUE(b.bus.Since(eb[eb.size() - 5].id, kAll, 100).complete);
}

TEST(RedisRelay, WhatRedisRefusesIsDroppedAndLeavesABreak) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance a(server.url()), b(server.url());
  ASSERT_TRUE(a.relay && b.relay);
  uint64_t first = OneEvent(a, b);
  ASSERT_NE(first, 0u);
  auto admin = Admin(server);
  ASSERT_TRUE(admin);
  ASSERT_TRUE(admin->Command({"CONFIG", "SET", "maxmemory", "1"}));  // every write refused: OOM
  for (int i = 0; i < 3; ++i) a.bus.Publish("task_update", "u", "refused", "{}", 2);
  ASSERT_TRUE(Eventually([&] { return a.relay->dropped() == 3; })) << a.relay->dropped();
  EXPECT_TRUE(a.relay->failing());
  ASSERT_TRUE(admin->Command({"CONFIG", "SET", "maxmemory", "0"}));
  a.bus.Publish("task_update", "u", "after", "{}", 3);
  ASSERT_TRUE(Eventually([&] { return b.heard.size() == 2; }));
  auto eb = b.heard.copy();
  EXPECT_EQ(eb[1].subject, "after");
  EXPECT_GE(eb[1].id, first + 4) << "the refused events' ids stay unused";
  EXPECT_FALSE(b.bus.Since(first, kAll, 10).complete);
  EXPECT_TRUE(Eventually([&] { return !a.relay->failing(); })) << "once a's sender has the reply";
}

TEST(RedisRelay, AStoppingInstanceSendsWhatItQueuedFirst) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance a(server.url()), b(server.url());
  ASSERT_TRUE(a.relay && b.relay);
  auto admin = Admin(server);
  ASSERT_TRUE(admin);
  ASSERT_TRUE(admin->Command({"CLIENT", "PAUSE", "300", "ALL"}));  // the events queue up meanwhile
  for (int i = 0; i < 300; ++i) a.bus.Publish("task_update", "u", "last" + std::to_string(i), "{}", 1);
  a.relay.reset();
  EXPECT_EQ(a.bus.Publish("x", "", "", "{}", 1) > 0, true) << "the bus is local again";
  ASSERT_TRUE(Eventually([&] { return b.heard.size() == 300; })) << b.heard.size();
  EXPECT_EQ(b.heard.copy().back().subject, "last299");
}

// A batch whose reply is lost (the command timed out, Redis ran it later) is
// sent again on a new connection, and appended once.
TEST(RedisRelay, ABatchSentAgainIsAppendedOnce) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  RelayOptions options;
  options.timeout = milliseconds(300);
  Instance a(server.url(), options), b(server.url());
  ASSERT_TRUE(a.relay && b.relay);
  ASSERT_NE(OneEvent(a, b), 0u);
  auto admin = Admin(server);
  ASSERT_TRUE(admin);
  std::thread sleeper([&] { (void)admin->Command({"DEBUG", "SLEEP", "1"}, milliseconds(5000)); });
  std::this_thread::sleep_for(milliseconds(100));  // Redis asleep: the send times out, its bytes wait in Redis
  a.bus.Publish("task_update", "u", "once", "{}", 1);
  sleeper.join();
  ASSERT_TRUE(Eventually([&] { return b.heard.size() >= 2; }));
  std::this_thread::sleep_for(milliseconds(1500));  // a second append would have come by now
  auto eb = b.heard.copy();
  ASSERT_EQ(eb.size(), 2u) << "appended twice: " << eb.back().subject;
  EXPECT_EQ(eb[1].subject, "once");
  auto len = admin->Command({"XLEN", "smart:events"});
  ASSERT_TRUE(len);
  EXPECT_EQ(len->integer, 2);
}

TEST(RedisRelay, OneInstanceIsElectedPerPeriod) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance a(server.url()), b(server.url());
  ASSERT_TRUE(a.relay && b.relay);
  int won = 0;
  for (int i = 0; i < 5; ++i) {
    won += a.relay->Elect("network_stats", std::chrono::hours(1)) ? 1 : 0;
    won += b.relay->Elect("network_stats", std::chrono::hours(1)) ? 1 : 0;
  }
  EXPECT_EQ(won, 1);
  EXPECT_TRUE(a.relay->Elect("other", std::chrono::hours(1))) << "per name";
  server.Stop();
  EXPECT_FALSE(b.relay->Elect("later", std::chrono::hours(1))) << "no Redis, no election";
}

// Redis away when an instance starts is an outage like a later one: the
// instance starts, and once Redis answers it loads the window (what others
// published meanwhile, not delivered) and its own events go through.
TEST(RedisRelay, AnInstanceStartsWhileRedisIsAwayAndCatchesUpWhenItComes) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  Instance b(server.url());
  ASSERT_TRUE(b.relay);
  b.bus.Publish("task_update", "u", "old", "{}", 1);
  ASSERT_TRUE(Eventually([&] { return b.heard.size() == 1; }));
  server.Stop();
  std::atomic<int> errors{0};
  RelayOptions options;
  options.on_error = [&](const Error&) { ++errors; };
  Instance a(server.url(), options);
  ASSERT_TRUE(a.relay) << "started without Redis";
  EXPECT_GT(errors.load(), 0) << "and said so";
  EXPECT_TRUE(a.relay->failing());
  a.bus.Publish("task_update", "u", "mine", "{}", 2);  // waits for Redis
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(a.heard.size(), 0u);

  ASSERT_TRUE(server.Start());  // empty: b's old event went with the data
  b.bus.Publish("task_update", "u", "theirs", "{}", 3);
  auto heard = [](Instance& i, const std::string& subject) {
    auto events = i.heard.copy();
    return std::any_of(events.begin(), events.end(), [&](const Event& e) { return e.subject == subject; });
  };
  ASSERT_TRUE(Eventually([&] { return heard(a, "mine") && heard(b, "mine"); })) << "a's own event went through";
  EXPECT_TRUE(Eventually([&] { return !a.relay->failing(); }));
  EXPECT_EQ(a.relay->dropped(), 0u);
  // "theirs" is in a's window whether a read it live or loaded it; both
  // windows end alike, with the same ids.
  auto wa = a.bus.Since(0, kAll, 100).events, wb = b.bus.Since(0, kAll, 100).events;
  ASSERT_GE(wa.size(), 2u);
  ASSERT_FALSE(wb.empty());
  EXPECT_TRUE(std::any_of(wa.begin(), wa.end(), [](const Event& e) { return e.subject == "theirs"; }));
  EXPECT_EQ(wa.back().id, wb.back().id);
  EXPECT_EQ(wa.back().subject, wb.back().subject);
}

TEST(RedisRelay, AUrlThatCannotWorkIsAnError) {
  Bus bus;
  auto r = RedisRelay::Start(bus, {.url = "http://cache:6379"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalid);
  EXPECT_EQ(bus.Publish("x", "", "", "{}", 1), 1u) << "the bus stays local";
}

}  // namespace
}  // namespace smart::events
