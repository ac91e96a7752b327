// Real-time events over /api/v1/ws from the real smartd, read with Beast's
// WebSocket client.
#include <boost/system/system_error.hpp>
#include <regex>
#include <thread>

#include "harness.hpp"

namespace smart::itest {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> Env() {
  std::vector<std::string> env = kFastAuth;
  for (const char* kv : {"SMART_LEDGER_DEV_FAUCET=true", "SMART_TASKS_MIN_STAKE=1000000", "SMART_TASKS_MIN_TIMEOUT_S=1",
                         "SMART_EVENTS_STATS_INTERVAL_S=1"}) {
    env.emplace_back(kv);
  }
  return env;
}

// The admin root, and alice and eve, registered and logged in.
struct People {
  Session root, alice, eve;
};
People Join(Smartd& s) {
  return {CreateAdmin(s, "root@example.com"), RegisterAndLogin(s.port(), "alice@example.com"),
          RegisterAndLogin(s.port(), "eve@example.com")};
}

// Mints `amount` USDC for each user (by email), as the admin `root`.
void Fund(const Smartd& s, const Session& root, std::initializer_list<const char*> emails, const std::string& amount) {
  for (const char* who : emails) {
    auto r = As(s.port(), "POST", "/api/v1/admin/mint", root.access,
                std::string(R"({"user":")") + who + R"(","asset":"USDC","amount":")" + amount + "\"}",
                std::string("Idempotency-Key: ") + who + "\r\n");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << r->body;
  }
}

TEST(SmartdEvents, TaskUpdatesNetworkStatsAndResume) {
  Smartd s(Env());
  ASSERT_NE(s.port(), 0);
  auto [root, alice, eve] = Join(s);
  Fund(s, root, {"alice@example.com", "eve@example.com"}, "10000000");
  WsClient a(s.port(), "/api/v1/ws", alice.access);
  a.Send(R"({"type":"subscribe","tasks":"own"})");
  ASSERT_NE(a.Read().find("\"subscribed\""), std::string::npos);
  // Eve authenticates in her first message and watches everything she may.
  WsClient e(s.port(), "/api/v1/ws", "");
  e.Send(R"({"type":"auth","token":")" + eve.access + R"("})");
  ASSERT_NE(e.Read().find("\"authenticated\""), std::string::npos);
  e.Send(R"({"type":"subscribe","tasks":"own","network_stats":true})");
  ASSERT_NE(e.Read().find("\"subscribed\""), std::string::npos);

  auto r = As(s.port(), "POST", "/api/v1/tasks", alice.access, R"({"type":"echo","input":"x","timeout_s":60})");
  ASSERT_EQ(r->status, 201);
  std::string task = JsonField(r->body, "id");
  std::string pending = a.ReadUntil("task_update");
  EXPECT_NE(pending.find(task), std::string::npos) << pending;
  EXPECT_NE(pending.find("\"status\":\"pending\""), std::string::npos) << pending;
  uint64_t first_id = EventId(pending);
  ASSERT_GT(first_id, 0u);

  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/cancel", alice.access);
  ASSERT_EQ(r->status, 200);
  std::string cancelled = a.ReadUntil("task_update");
  EXPECT_NE(cancelled.find("\"status\":\"cancelled\""), std::string::npos) << cancelled;
  EXPECT_GT(EventId(cancelled), first_id);
  // The server times each delivery: publication -> written to the socket.
  auto metrics = testing::Request(s.port(), "GET", "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("smart_ws_event_delivery_seconds_count{type=\"task_update\"} 2"), std::string::npos)
      << "Alice's two updates, each written once";

  // Eve hears network stats, never Alice's tasks.
  std::string stats = e.ReadUntil("network_stats");
  EXPECT_NE(stats.find("\"pending_tasks\""), std::string::npos) << stats;
  EXPECT_NE(stats.find("\"throughput\""), std::string::npos) << stats;
  for (int i = 0; i < 3; ++i) {
    std::string m = e.Read();
    EXPECT_EQ(m.find(task), std::string::npos) << "another user's task leaked: " << m;
  }

  // Reconnecting with the last id seen gets what was missed.
  WsClient again(s.port(), "/api/v1/ws", alice.access);
  again.Send(R"({"type":"subscribe","tasks":"own"})");
  ASSERT_NE(again.Read().find("\"subscribed\""), std::string::npos);
  for (const char* bad : {R"({"type":"resume","last_event_id":-1})", R"({"type":"resume","last_event_id":1.5})",
                          R"({"type":"resume","last_event_id":1e300})", R"({"type":"resume"})", "not json"}) {
    again.Send(bad);
    EXPECT_NE(again.Read().find("\"error\""), std::string::npos) << bad;
  }
  again.Send(R"({"type":"resume","last_event_id":)" + std::to_string(first_id) + "}");
  std::string replayed = again.ReadUntil("task_update");
  EXPECT_NE(replayed.find("\"status\":\"cancelled\""), std::string::npos) << replayed;
  EXPECT_EQ(EventId(replayed), EventId(cancelled));
}

// Subscriptions by task id and unsubscribing: what a connection asked for and
// only that, never another user's task whatever ids it names.
TEST(SmartdEvents, TaskIdSubscriptionsAndUnsubscribing) {
  Smartd s(Env());
  ASSERT_NE(s.port(), 0);
  auto [root, alice, eve] = Join(s);
  Fund(s, root, {"alice@example.com"}, "10000000");
  auto submit = [&] {
    auto r = As(s.port(), "POST", "/api/v1/tasks", alice.access, R"({"type":"echo","input":"x","timeout_s":60})");
    EXPECT_EQ(r->status, 201);
    return JsonField(r->body, "id");
  };
  auto cancel = [&](const std::string& id) {
    EXPECT_EQ(As(s.port(), "POST", "/api/v1/tasks/" + id + "/cancel", alice.access)->status, 200);
  };
  std::string t1 = submit(), t2 = submit(), t3 = submit();

  WsClient a(s.port(), "/api/v1/ws", alice.access);
  a.Send(R"({"type":"subscribe","task_ids":[")" + t1 + R"(",")" + t2 + R"("]})");
  std::string reply = a.Read();
  EXPECT_NE(reply.find("\"task_ids\":2"), std::string::npos) << reply;
  WsClient e(s.port(), "/api/v1/ws", eve.access);
  e.Send(R"({"type":"subscribe","network_stats":true,"task_ids":[")" + t1 + R"(",")" + t3 + R"("]})");
  ASSERT_NE(e.Read().find("\"subscribed\""), std::string::npos);

  cancel(t3);  // not followed by Alice's connection
  cancel(t1);
  std::string first = a.ReadUntil("task_update");
  EXPECT_NE(first.find(t1), std::string::npos) << "the first update Alice hears is t1's, not t3's: " << first;
  EXPECT_NE(first.find("\"status\":\"cancelled\""), std::string::npos) << first;

  a.Send(R"({"type":"unsubscribe","task_ids":[")" + t2 + R"("]})");
  reply = a.Read();
  EXPECT_NE(reply.find("\"unsubscribed\""), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"task_ids\":1"), std::string::npos) << reply;
  std::string t4 = submit();
  a.Send(R"({"type":"subscribe","task_ids":[")" + t4 + R"("]})");
  ASSERT_NE(a.Read().find("\"subscribed\""), std::string::npos);
  cancel(t2);  // no longer followed
  cancel(t4);
  std::string next = a.ReadUntil("task_update");
  EXPECT_NE(next.find(t4), std::string::npos) << "t2's update came after unsubscribing: " << next;

  // Eve named Alice's tasks: she hears network stats and nothing of them.
  // Until the second network_stats: every cancel above was published before it.
  int stats = 0;
  for (int i = 0; i < 50 && stats < 2; ++i) {
    std::string m = e.Read();
    ASSERT_FALSE(m.empty()) << "closed";
    EXPECT_EQ(m.find("task_update"), std::string::npos) << "another user's task leaked: " << m;
    if (m.find("\"network_stats\"") != std::string::npos) ++stats;
  }
  EXPECT_EQ(stats, 2);
}

// A resume replays at most 1,000 events (what a send queue holds) and says
// when there were more: the client re-reads the state instead.
TEST(SmartdEvents, AResumeReplaysABoundedNumberOfEvents) {
  Smartd s(Env());
  ASSERT_NE(s.port(), 0);
  Session root = CreateAdmin(s, "root@example.com");
  Session alice = RegisterAndLogin(s.port(), "alice@example.com");
  Fund(s, root, {"alice@example.com"}, "100000000");
  std::string hundred;
  for (int i = 0; i < 100; ++i) hundred += std::string(i ? "," : "") + R"({"type":"echo","input":"x","timeout_s":60})";
  for (int i = 0; i < 11; ++i) {
    ASSERT_EQ(As(s.port(), "POST", "/api/v1/tasks/batch", alice.access, R"({"tasks":[)" + hundred + "]}")->status, 201);
  }
  WsClient a(s.port(), "/api/v1/ws", alice.access);
  a.Send(R"({"type":"subscribe","tasks":"own"})");
  ASSERT_NE(a.Read().find("\"subscribed\""), std::string::npos);
  a.Send(R"({"type":"resume","last_event_id":0})");
  std::string gap = a.Read();
  EXPECT_NE(gap.find("\"gap\""), std::string::npos) << gap;
  EXPECT_NE(gap.find("1000"), std::string::npos) << gap;
  uint64_t last = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string m = a.Read();
    ASSERT_NE(m.find("\"task_update\""), std::string::npos) << i << ": " << m;
    uint64_t id = EventId(m);
    EXPECT_GT(id, last) << "oldest first";
    last = id;
  }
  // Nothing more was replayed: the next message is the reply to this one.
  a.Send(R"({"type":"unsubscribe","nodes":true})");
  std::string next = a.Read();
  EXPECT_NE(next.find("\"unsubscribed\""), std::string::npos) << next;
}

// An account holds at most events.max_connections_per_user event sockets:
// past it an upgrade is refused (429), a first-message auth closed (1008);
// a closed one frees its place.
TEST(SmartdEvents, AnAccountHoldsABoundedNumberOfConnections) {
  auto env = Env();
  env.emplace_back("SMART_EVENTS_MAX_CONNECTIONS_PER_USER=2");
  Smartd s(env);
  ASSERT_NE(s.port(), 0);
  Session alice = RegisterAndLogin(s.port(), "alice@example.com");
  Session bob = RegisterAndLogin(s.port(), "bob@example.com");
  auto one = std::make_unique<WsClient>(s.port(), "/api/v1/ws", alice.access);
  WsClient two(s.port(), "/api/v1/ws", alice.access);
  EXPECT_THROW(WsClient(s.port(), "/api/v1/ws", alice.access), boost::system::system_error);
  WsClient late(s.port(), "/api/v1/ws", "");
  late.Send(R"({"type":"auth","token":")" + alice.access + R"("})");
  EXPECT_EQ(late.Read(), "");
  EXPECT_EQ(late.close_code(), 1008);
  WsClient other(s.port(), "/api/v1/ws", bob.access);  // another account is not affected
  other.Send(R"({"type":"subscribe","tasks":"own"})");
  EXPECT_NE(other.Read().find("\"subscribed\""), std::string::npos);
  one.reset();  // closes; the server hears it shortly
  bool again = false;
  for (int i = 0; i < 50 && !again; ++i) {
    try {
      WsClient three(s.port(), "/api/v1/ws", alice.access);
      three.Send(R"({"type":"subscribe","tasks":"own"})");
      again = three.Read().find("\"subscribed\"") != std::string::npos;
    } catch (const boost::system::system_error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_TRUE(again) << "a closed connection frees its place";
  // Open now: two and other (every one accepted is counted out when it ends,
  // the refused ones never in).
  std::string body = MetricsWith(s.port(), "smart_ws_event_connections 2\n");
  EXPECT_NE(body.find("smart_ws_event_connections 2\n"), std::string::npos)
      << body.substr(body.find("smart_ws_event_connections"), 80);
}

TEST(SmartdEvents, BadClientsAreRefusedOrClosed) {
  Smartd s(Env());
  ASSERT_NE(s.port(), 0);
  // A bad header credential: the upgrade itself is refused.
  EXPECT_THROW(WsClient(s.port(), "/api/v1/ws", "not-a-token"), boost::system::system_error);
  // No credential and a first message that is not auth: closed with 1008.
  WsClient c(s.port(), "/api/v1/ws", "");
  c.Send(R"({"type":"subscribe","tasks":"own"})");
  EXPECT_EQ(c.Read(), "");
  EXPECT_EQ(c.close_code(), 1008);
  WsClient d(s.port(), "/api/v1/ws", "");
  d.Send(R"({"type":"auth","token":"sk_wrong"})");
  EXPECT_EQ(d.Read(), "");
  EXPECT_EQ(d.close_code(), 1008);
  // A flood of messages: past the burst each is refused, unanswered otherwise.
  Session alice = RegisterAndLogin(s.port(), "alice@example.com");
  WsClient f(s.port(), "/api/v1/ws", alice.access);
  for (int i = 0; i < 40; ++i) f.Send(R"({"type":"subscribe","network_stats":false})");
  int answered = 0, refused = 0;
  for (int i = 0; i < 40; ++i) {
    std::string m = f.Read();
    answered += m.find("\"subscribed\"") != std::string::npos;
    refused += m.find("\"rate_limited\"") != std::string::npos;
  }
  EXPECT_EQ(answered + refused, 40);
  EXPECT_GE(answered, 20) << "a burst of 20";
  EXPECT_GE(refused, 1) << "then 10 a second";
}

// The task network's state is scraped from /metrics, refreshed with network_stats.
TEST(SmartdEvents, TheTaskNetworkIsInTheMetrics) {
  Smartd s(Env());
  ASSERT_NE(s.port(), 0);
  auto [root, alice, eve] = Join(s);
  Fund(s, root, {"alice@example.com", "root@example.com"}, "10000000");
  auto r = As(s.port(), "POST", "/api/v1/nodes/register", root.access,
              R"({"name":"box","capabilities":["echo"],"capacity":3})");
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string node = JsonField(r->body, "id"), key = JsonField(r->body, "credential");
  std::vector<std::string> tasks;
  for (int i = 0; i < 4; ++i) {
    r = As(s.port(), "POST", "/api/v1/tasks", alice.access, R"({"type":"echo","input":"x","max_attempts":1})");
    ASSERT_EQ(r->status, 201) << r->body;
    tasks.push_back(JsonField(r->body, "id"));
  }
  r = As(s.port(), "POST", "/api/v1/nodes/" + node + "/claim", key, R"({"max":3})");
  ASSERT_EQ(r->status, 200) << r->body;
  std::vector<std::string> claimed;
  for (const auto& t : tasks) {
    if (r->body.find(t) != std::string::npos) claimed.push_back(t);
  }
  ASSERT_EQ(claimed.size(), 3u) << r->body;
  const std::string lease = R"({"node_id":")" + node + R"(","lease":1)";
  r = As(s.port(), "POST", "/api/v1/tasks/" + claimed[0] + "/result", key,
         lease + R"(,"output":"x","proof_hash":"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"})");
  ASSERT_EQ(r->status, 200) << r->body;
  r = As(s.port(), "POST", "/api/v1/tasks/" + claimed[1] + "/fail", key, lease + R"(,"error":"no luck"})");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "status"), "failed");
  // One pending, one running, one failed for good, one completed; the node online.
  const std::string want =
      "smart_tasks{status=\"pending\"} 1\nsmart_tasks{status=\"running\"} 1\n"
      "smart_tasks{status=\"failed\"} 1\n";
  std::string body;
  for (int i = 0; i < 4 && body.find(want) == std::string::npos; ++i) body = MetricsWith(s.port(), want);
  EXPECT_NE(body.find(want), std::string::npos) << body.substr(body.find("smart_tasks"), 600);
  EXPECT_NE(body.find("smart_tasks_completed_total 1\n"), std::string::npos);
  EXPECT_NE(body.find("smart_nodes{status=\"online\"} 1\nsmart_nodes{status=\"registered\"} 1\n"), std::string::npos);
  EXPECT_NE(body.find("# TYPE smart_tasks gauge"), std::string::npos);
}

// A connection that answers the keep-alive pings but never says who it is
// holds a socket without an account's cap: each socket closes it with 1008 at
// http.header_timeout_s, and one that said who it is in time stays open.
TEST(SmartdEvents, ASocketThatNeverSaysWhoItIsIsClosedInTime) {
  std::vector<std::string> env = Env();
  env.emplace_back("SMART_HTTP_HEADER_TIMEOUT_S=1");
  Smartd s(env);
  ASSERT_NE(s.port(), 0);
  Session root = CreateAdmin(s, "root@example.com");
  Fund(s, root, {"root@example.com"}, "10000000");
  auto r = As(s.port(), "POST", "/api/v1/nodes/register", root.access, R"({"name":"box","capabilities":["echo"]})");
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string node = JsonField(r->body, "id");

  WsClient silent(s.port(), "/api/v1/ws", "");                    // no credentials, no auth message
  WsClient unhelloed(s.port(), "/api/v1/nodes/ws", root.access);  // a credential, but no hello
  WsClient late(s.port(), "/api/v1/ws", "");
  WsClient client(s.port(), "/api/v1/ws", "");
  client.Send(R"({"type":"auth","token":")" + root.access + R"("})");
  EXPECT_NE(client.Read().find("\"authenticated\""), std::string::npos);
  WsClient upgraded(s.port(), "/api/v1/ws", root.access);  // credentials on the upgrade
  WsClient hello(s.port(), "/api/v1/nodes/ws", root.access);
  hello.Send(R"({"type":"hello","node_id":")" + node + R"("})");
  EXPECT_NE(hello.ReadUntil("\"welcome\"").find(node), std::string::npos);
  const auto opened = std::chrono::steady_clock::now();
  EXPECT_EQ(silent.Read(), "");  // answers pings while it waits; the server closes it
  EXPECT_EQ(silent.close_code(), 1008);
  EXPECT_LT(std::chrono::steady_clock::now() - opened, 5s) << "closed at the deadline, not the idle timeout";
  EXPECT_EQ(unhelloed.Read(), "");
  EXPECT_EQ(unhelloed.close_code(), 1008);
  std::this_thread::sleep_for(500ms);
  late.Send(R"({"type":"auth","token":")" + root.access + R"("})");  // past the deadline
  EXPECT_EQ(late.Read(), "");
  EXPECT_EQ(late.close_code(), 1008);
  // Those that said who they were are open past it.
  client.Send(R"({"type":"subscribe","tasks":"own"})");
  EXPECT_NE(client.ReadUntil("\"subscribed\""), "");
  upgraded.Send(R"({"type":"subscribe","tasks":"own"})");
  EXPECT_NE(upgraded.ReadUntil("\"subscribed\""), "");
  hello.Send(R"({"type":"heartbeat","ref":"open"})");
  EXPECT_NE(hello.ReadUntil("\"ref\":\"open\""), "");
}

}  // namespace
}  // namespace smart::itest
