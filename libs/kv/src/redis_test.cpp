#include "smart/kv/redis.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "smart/testing/redis.hpp"

namespace smart::kv {
namespace {

using std::chrono::milliseconds;

TEST(Redis, CommandsRepliesAndErrors) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  auto redis = Redis::Connect(server.url(), milliseconds(2000));
  ASSERT_TRUE(redis) << redis.error().message;
  auto set = (*redis)->Command({"SET", "k", std::string_view("a\0b", 3)});
  ASSERT_TRUE(set);
  EXPECT_EQ(set->kind, RedisReply::Kind::kStatus);
  auto get = (*redis)->Command({"GET", "k"});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->kind, RedisReply::Kind::kString);
  EXPECT_EQ(get->str, std::string("a\0b", 3)) << "binary-safe";
  auto n = (*redis)->Command({"INCRBY", "n", "41"});
  ASSERT_TRUE(n);
  EXPECT_EQ(n->integer, 41);
  auto list = (*redis)->Command({"MGET", "k", "missing"});
  ASSERT_TRUE(list);
  ASSERT_EQ(list->elements.size(), 2u);
  EXPECT_EQ(list->elements[1].kind, RedisReply::Kind::kNil);
  auto refused = (*redis)->Command({"INCR", "k"});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, "redis_error");
  EXPECT_NE(refused.error().message.find("not an integer"), std::string::npos) << refused.error().message;
  EXPECT_TRUE((*redis)->Command({"PING"})) << "an error reply leaves the connection usable";

  // A database number in the URL selects it.
  auto db2 = Redis::Connect(server.url() + "?db=2", milliseconds(2000));
  ASSERT_TRUE(db2) << db2.error().message;
  auto none = (*db2)->Command({"GET", "k"});
  ASSERT_TRUE(none);
  EXPECT_EQ(none->kind, RedisReply::Kind::kNil);
}

TEST(Redis, BadUrlsAndUnreachableServersAreClearErrors) {
  for (const char* url : {"", "http://localhost", "redis://", "redis://host:port", "redis://h/x", "unix://", "::"}) {
    auto r = Redis::Connect(url, milliseconds(500));
    ASSERT_FALSE(r) << url;
    EXPECT_EQ(r.error().code, "invalid_redis_url") << url;
  }
  auto down = Redis::Connect("redis://:secret@127.0.0.1:1", milliseconds(500));
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().kind, ErrorKind::kUnavailable);
  EXPECT_EQ(down.error().message.find("secret"), std::string::npos) << "no password in errors";
  auto gone = Redis::Connect("unix:///nonexistent/redis.sock", milliseconds(500));
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().kind, ErrorKind::kUnavailable);
}

// Credentials in the URL (unix sockets too) are sent; refused ones are a
// configuration error (kInvalid), not an outage to wait out.
TEST(Redis, CredentialsAreSentAndARefusalIsAConfigurationError) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  auto admin = Redis::Connect(server.url(), milliseconds(2000));
  ASSERT_TRUE(admin);
  ASSERT_TRUE((*admin)->Command({"CONFIG", "SET", "requirepass", "s3cret"}));
  const std::string path = server.url().substr(std::string_view("unix://").size());
  auto wrong = Redis::Connect("unix://:nope@" + path, milliseconds(2000));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().kind, ErrorKind::kInvalid);
  EXPECT_EQ(wrong.error().code, "redis_auth_refused");
  EXPECT_EQ(wrong.error().message.find("nope"), std::string::npos) << "no password in errors";
  auto none = Redis::Connect(server.url(), milliseconds(2000));
  ASSERT_TRUE(none) << "no AUTH sent";
  EXPECT_FALSE((*none)->Command({"PING"})) << "NOAUTH";
  auto right = Redis::Connect("unix://:s3cret@" + path, milliseconds(2000));
  ASSERT_TRUE(right) << right.error().message;
  EXPECT_TRUE((*right)->Command({"PING"}));
}

TEST(Redis, ABlockedCommandIsInterruptedAndALostServerIsUnavailable) {
  testing::RedisServer server;
  ASSERT_FALSE(server.url().empty());
  auto redis = Redis::Connect(server.url(), milliseconds(2000));
  ASSERT_TRUE(redis);
  auto start = std::chrono::steady_clock::now();
  std::thread interrupt([&] {
    std::this_thread::sleep_for(milliseconds(100));
    (*redis)->Interrupt();
  });
  auto r = (*redis)->Command({"BLPOP", "nothing", "10"}, milliseconds(15000));
  interrupt.join();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));

  auto other = Redis::Connect(server.url(), milliseconds(2000));
  ASSERT_TRUE(other);
  server.Stop();
  auto lost = (*other)->Command({"PING"});
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().kind, ErrorKind::kUnavailable);
}

}  // namespace
}  // namespace smart::kv
