// Chaos, bounded in size so that it runs inside `make test`:
//  - smartd is SIGKILLed and restarted repeatedly while clients submit and
//    real smart-node processes work: no acknowledged task is lost, none is
//    completed or paid twice, and `smartd ledger verify` passes;
//  - the same with two instances on one PostgreSQL and one Redis, one of
//    them SIGKILLed while the other goes on (ChaosPostgres, in the
//    `postgres` fixture);
//  - nodes are SIGKILLed under load: every task still finishes within its
//    lease plus a small slack.
#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <regex>
#include <thread>

#include "harness.hpp"
#include "smart/testing/postgres.hpp"
#include "smart/testing/redis.hpp"

namespace smart::itest {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> Env() {
  std::vector<std::string> env = kFastAuth;
  for (const char* kv : {"SMART_LEDGER_DEV_FAUCET=true", "SMART_TASKS_MIN_STAKE=1000000", "SMART_TASKS_MIN_TIMEOUT_S=1",
                         "SMART_TASKS_OFFLINE_AFTER_S=2", "SMART_RATE_LIMIT_ENABLED=false"}) {
    env.emplace_back(kv);
  }
  return env;
}

std::unique_ptr<testing::Process> StartNode(uint16_t port, const std::string& user_key, const std::string& name,
                                            const std::string& dir) {
  return std::make_unique<testing::Process>(
      std::vector<std::string>{SMART_NODE_PATH, "--server", "http://127.0.0.1:" + std::to_string(port), "--set",
                               "node.name=" + name, "--set", "node.state_file=" + dir + "/" + name + ".state", "--set",
                               "node.heartbeat_s=1", "--set", "node.claim_wait_s=1", "--set", "node.capacity=4"},
      std::vector<std::string>{"SMART_NODE_USER_KEY=" + user_key});
}

std::string Available(uint16_t port, const std::string& token) {
  auto r = As(port, "GET", "/api/v1/user/balances", token);
  std::smatch m;
  std::regex re("\"kind\":\"available\",\"asset\":\"USDC\",\"balance\":\"(-?[0-9]+)\"");
  return r && std::regex_search(r->body, m, re) ? std::string(m[1]) : "?";
}

struct World {
  testing::TempDir dir;
  uint16_t port = FreePort();
  std::string data = dir.path() + "/data";
  std::unique_ptr<Smartd> smartd;
  Session alice, op;
  std::string op_key;

  void Start() {
    smartd = std::make_unique<Smartd>(Env(), std::vector<std::string>{"--port", std::to_string(port)}, data);
    ASSERT_EQ(smartd->port(), port);
  }
  void Setup() {
    Start();
    Session root = CreateAdmin(*smartd, "root@example.com");
    alice = RegisterAndLogin(port, "alice@example.com");
    op = RegisterAndLogin(port, "op@example.com");
    for (const char* who : {"alice@example.com", "op@example.com"}) {
      ASSERT_EQ(As(port, "POST", "/api/v1/admin/mint", root.access,
                   std::string(R"({"user":")") + who + R"(","asset":"USDC","amount":"100000000"})",
                   std::string("Idempotency-Key: fund-") + who + "\r\n")
                    ->status,
                201);
    }
    op_key = JsonField(As(port, "POST", "/api/v1/user/api-keys", op.access, R"({"name":"n","scopes":["nodes"]})")->body,
                       "key");
  }
  std::string Status(const std::string& task) {
    auto r = As(port, "GET", "/api/v1/tasks/" + task, alice.access);
    if (!r) return "(no answer)";
    return r->status == 200 ? JsonField(r->body, "status") : std::to_string(r->status) + " " + r->body.substr(0, 200);
  }
};

// Three clients submitting tasks until stopped, each with an idempotency key
// kept until acknowledged: a retry across a crash is a replay, never a second
// task. Attempts go round `ports` (several instances: as a load balancer would).
class Submitters {
 public:
  Submitters(std::vector<uint16_t> ports, std::string token) : ports_(std::move(ports)), token_(std::move(token)) {
    for (int c = 0; c < 3; ++c) threads_.emplace_back([this, c] { Run(c); });
  }
  // Stops them; the tasks acknowledged, idempotency key -> task id.
  std::map<std::string, std::string> Stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
    return acked_;
  }
  ~Submitters() {
    if (!threads_.empty()) Stop();
  }

 private:
  void Run(int c) {
    size_t attempt = static_cast<size_t>(c);
    for (int i = 0; !stop_.load(); ++i) {
      std::string key = "chaos-" + std::to_string(c) + "-" + std::to_string(i);
      while (!stop_.load()) {
        auto r = As(ports_[attempt++ % ports_.size()], "POST", "/api/v1/tasks", token_,
                    R"({"type":"echo","input":")" + key + R"(","timeout_s":30})", "Idempotency-Key: " + key + "\r\n");
        if (r && r->status == 201) {
          std::lock_guard lk(mu_);
          acked_[key] = JsonField(r->body, "id");
          break;
        }
        std::this_thread::sleep_for(50ms);
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  std::vector<uint16_t> ports_;
  std::string token_;
  std::mutex mu_;
  std::map<std::string, std::string> acked_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// Every acknowledged task completes exactly once, no task was created twice,
// each was charged and paid once (both accounts started with 100 USDC), and
// `smartd ledger verify` (run with `env`) passes.
void ExpectEachDoneAndPaidOnce(uint16_t port, const Session& alice, const Session& op,
                               const std::map<std::string, std::string>& acked, const std::string& data_dir,
                               const std::vector<std::string>& env = {}) {
  auto status = [&](const std::string& task) {
    auto r = As(port, "GET", "/api/v1/tasks/" + task, alice.access);
    if (!r) return std::string("(no answer)");
    return r->status == 200 ? JsonField(r->body, "status") : std::to_string(r->status) + " " + r->body.substr(0, 200);
  };
  auto deadline = std::chrono::steady_clock::now() + 60s;
  for (const auto& [key, id] : acked) {
    std::string st;
    while ((st = status(id)) != "completed" && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(st, "completed") << key << " (" << id << ") was acknowledged but is " << st;
  }
  size_t tasks = 0;
  std::string cursor;
  do {
    auto list = As(port, "GET", "/api/v1/tasks?limit=500" + (cursor.empty() ? "" : "&cursor=" + cursor), alice.access);
    ASSERT_TRUE(list && list->status == 200);
    std::regex re("\"id\":\"(task_[0-9A-Z]+)\"");
    tasks += std::distance(std::sregex_iterator(list->body.begin(), list->body.end(), re), std::sregex_iterator());
    cursor = JsonField(list->body, "next_cursor");
  } while (!cursor.empty());
  EXPECT_EQ(tasks, acked.size()) << "no task was created twice";
  for (const auto& [key, id] : acked) {
    auto r = As(port, "GET", "/api/v1/tasks/" + id, alice.access);
    size_t completions = 0;
    for (size_t p = 0; (p = r->body.find("\"status\":\"completed\"", p)) != std::string::npos; ++p) ++completions;
    EXPECT_EQ(completions, 2u) << "the task and exactly one completed event: " << r->body;  // task + history
  }
  const int64_t n = static_cast<int64_t>(acked.size());
  EXPECT_EQ(Available(port, alice.access), std::to_string(100000000 - n * 25000)) << "charged once per task";
  EXPECT_EQ(Available(port, op.access), std::to_string(100000000 + n * 22500)) << "paid once per task";
  auto [code, out] = testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", data_dir}, env);
  EXPECT_EQ(code, 0) << out;
}

TEST(Chaos, KillingSmartdLosesNothingAcknowledgedAndPaysOnce) {
  World w;
  w.Setup();
  auto n1 = StartNode(w.port, w.op_key, "chaos-1", w.dir.path());
  auto n2 = StartNode(w.port, w.op_key, "chaos-2", w.dir.path());
  ASSERT_TRUE(n1->WaitForLine("\"msg\":\"running\"", 20s)) << n1->output();
  ASSERT_TRUE(n2->WaitForLine("\"msg\":\"running\"", 20s)) << n2->output();
  Submitters clients({w.port}, w.alice.access);
  for (int kill = 0; kill < 3; ++kill) {
    std::this_thread::sleep_for(1500ms);
    w.smartd->proc().Signal(SIGKILL);
    w.smartd->proc().Wait(5s);
    w.Start();  // same data, same port: nodes and clients reconnect
  }
  std::this_thread::sleep_for(1000ms);
  auto acked = clients.Stop();
  ASSERT_GE(acked.size(), 20u);
  ExpectEachDoneAndPaidOnce(w.port, w.alice, w.op, acked, w.data);
  n1->Signal(SIGTERM);
  n2->Signal(SIGTERM);
}

// The scaled-out shape: two instances on one PostgreSQL (and one Redis). One
// is SIGKILLed and restarted repeatedly while clients submit to both and a
// node works on each: the other goes on, nothing acknowledged is lost,
// nothing is completed or paid twice, the ledger verifies.
TEST(ChaosPostgres, KillingOneOfTwoInstancesLosesNothing) {
  std::string url = testing::FreshPostgresDatabase();
  ASSERT_FALSE(url.empty());
  testing::RedisServer redis;
  ASSERT_FALSE(redis.url().empty());
  std::vector<std::string> env = Env();
  env.push_back("SMART_DATABASE_URL=" + url);
  env.push_back("SMART_AUTH_JWT_SECRET=" + std::string(40, 'c'));
  env.push_back("SMART_REDIS_URL=" + redis.url());
  testing::TempDir dir;
  const uint16_t port_a = FreePort();
  auto start_a = [&] {
    auto a =
        std::make_unique<Smartd>(env, std::vector<std::string>{"--port", std::to_string(port_a)}, dir.path() + "/a");
    EXPECT_EQ(a->port(), port_a);
    return a;
  };
  auto a = start_a();
  Smartd b(env, {}, dir.path() + "/b");
  ASSERT_NE(b.port(), 0);
  Session root = CreateAdmin(b, "root@example.com", "SMART_DATABASE_URL='" + url + "'");
  Session alice = RegisterAndLogin(b.port(), "alice@example.com");
  Session op = RegisterAndLogin(b.port(), "op@example.com");
  for (const char* who : {"alice@example.com", "op@example.com"}) {
    ASSERT_EQ(As(b.port(), "POST", "/api/v1/admin/mint", root.access,
                 std::string(R"({"user":")") + who + R"(","asset":"USDC","amount":"100000000"})",
                 std::string("Idempotency-Key: fund-") + who + "\r\n")
                  ->status,
              201);
  }
  std::string op_key = JsonField(
      As(b.port(), "POST", "/api/v1/user/api-keys", op.access, R"({"name":"n","scopes":["nodes"]})")->body, "key");
  auto n1 = StartNode(port_a, op_key, "pg-chaos-1", dir.path());
  auto n2 = StartNode(b.port(), op_key, "pg-chaos-2", dir.path());
  ASSERT_TRUE(n1->WaitForLine("\"msg\":\"running\"", 20s)) << n1->output();
  ASSERT_TRUE(n2->WaitForLine("\"msg\":\"running\"", 20s)) << n2->output();
  Submitters clients({port_a, b.port()}, alice.access);
  for (int kill = 0; kill < 3; ++kill) {
    std::this_thread::sleep_for(1500ms);
    a->proc().Signal(SIGKILL);
    a->proc().Wait(5s);
    a = start_a();  // nodes and clients come back to it
  }
  std::this_thread::sleep_for(1000ms);
  auto acked = clients.Stop();
  ASSERT_GE(acked.size(), 20u);
  ExpectEachDoneAndPaidOnce(b.port(), alice, op, acked, dir.path() + "/b", {"SMART_DATABASE_URL=" + url});
  n1->Signal(SIGTERM);
  n2->Signal(SIGTERM);
}

TEST(Chaos, KillingNodesUnderLoadStillFinishesEveryTask) {
  World w;
  w.Setup();
  std::vector<std::unique_ptr<testing::Process>> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(StartNode(w.port, w.op_key, "load-" + std::to_string(i), w.dir.path()));
  for (auto& n : nodes) ASSERT_TRUE(n->WaitForLine("\"msg\":\"running\"", 20s)) << n->output();
  std::vector<std::string> tasks;
  for (int i = 0; i < 30; ++i) {
    auto r =
        As(w.port, "POST", "/api/v1/tasks", w.alice.access,
           R"({"type":"echo","input":"t)" + std::to_string(i) + R"(","parameters":{"delay_ms":300},"timeout_s":5})");
    ASSERT_EQ(r->status, 201) << r->body;
    tasks.push_back(JsonField(r->body, "id"));
  }
  auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(400ms);
  nodes[0]->Signal(SIGKILL);
  std::this_thread::sleep_for(400ms);
  nodes[1]->Signal(SIGKILL);
  nodes[0] = StartNode(w.port, w.op_key, "load-0", w.dir.path());  // it comes back under the same identity
  // Each task's bound: its lease (5 s) plus the offline detection (2 s) and slack.
  for (const auto& t : tasks) {
    std::string st;
    while ((st = w.Status(t)) != "completed" && std::chrono::steady_clock::now() - start < 25s) {
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(st, "completed") << t;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 25s);
  EXPECT_EQ(Available(w.port, w.alice.access), std::to_string(100000000 - 30 * 25000));
  auto [code, out] = testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", w.data});
  EXPECT_EQ(code, 0) << out;
  for (auto& n : nodes) n->Signal(SIGTERM);
}

}  // namespace
}  // namespace smart::itest
