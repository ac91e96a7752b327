// The task network with real processes: smartd and smart-node workers.
#include <signal.h>

#include <regex>
#include <thread>

#include "harness.hpp"

namespace smart::itest {
namespace {

using namespace std::chrono_literals;

std::string Idem(const std::string& key) { return "Idempotency-Key: " + key + "\r\n"; }

std::vector<std::string> NetworkEnv() {
  std::vector<std::string> env = kFastAuth;
  for (const char* kv : {"SMART_LEDGER_DEV_FAUCET=true", "SMART_TASKS_MIN_TIMEOUT_S=1", "SMART_TASKS_MIN_STAKE=1000000",
                         "SMART_TASKS_OFFLINE_AFTER_S=2", "SMART_RATE_LIMIT_ENABLED=false"}) {
    env.emplace_back(kv);
  }
  return env;
}

std::string Available(uint16_t port, const std::string& token) {
  auto r = As(port, "GET", "/api/v1/user/balances", token);
  std::smatch m;
  std::regex re("\"kind\":\"available\",\"asset\":\"USDC\",\"balance\":\"(-?[0-9]+)\",\"available\":\"([0-9]+)\"");
  return r && std::regex_search(r->body, m, re) ? std::string(m[2]) : "?";
}

// A user who can run nodes: funded, with an API key of scope `nodes`.
struct Operator {
  Session session;
  std::string key;
};

Operator MakeOperator(Smartd& s, const Session& root, const std::string& email) {
  Operator op{RegisterAndLogin(s.port(), email), ""};
  auto r = As(s.port(), "POST", "/api/v1/admin/mint", root.access,
              R"({"user":")" + email + R"(","asset":"USDC","amount":"5000000"})", Idem("fund-" + email));
  EXPECT_EQ(r->status, 201) << r->body;
  r = As(s.port(), "POST", "/api/v1/user/api-keys", op.session.access, R"({"name":"nodes","scopes":["nodes"]})");
  op.key = JsonField(r->body, "key");
  return op;
}

// A smart-node process that registers itself with the operator's key.
std::unique_ptr<testing::Process> StartNode(const Smartd& s, const Operator& op, const std::string& name,
                                            const std::string& state_dir, const std::string& drain_s = "30",
                                            const std::string& transport = "auto", const std::string& capacity = "2") {
  return std::make_unique<testing::Process>(
      std::vector<std::string>{SMART_NODE_PATH, "--server", "http://127.0.0.1:" + std::to_string(s.port()), "--set",
                               "node.name=" + name, "--set", "node.state_file=" + state_dir + "/" + name + ".state",
                               "--set", "node.heartbeat_s=1", "--set", "node.claim_wait_s=1", "--set",
                               "node.drain_s=" + drain_s, "--set", "node.transport=" + transport, "--set",
                               "node.capacity=" + capacity},
      std::vector<std::string>{"SMART_NODE_USER_KEY=" + op.key});
}

// Polls the task until it reaches `status`; returns its last JSON.
std::string WaitFor(uint16_t port, const std::string& token, const std::string& task, const std::string& status,
                    std::chrono::seconds limit = 30s) {
  std::string body;
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = As(port, "GET", "/api/v1/tasks/" + task, token);
    if (r && r->status == 200) {
      body = r->body;
      if (JsonField(body, "status") == status) return body;
    }
    std::this_thread::sleep_for(100ms);
  }
  ADD_FAILURE() << "task " << task << " never reached " << status << ": " << body;
  return body;
}

// alice@example.com, registered, logged in and funded by `root`.
Session FundedAlice(Smartd& s, const Session& root) {
  Session alice = RegisterAndLogin(s.port(), "alice@example.com");
  auto r = As(s.port(), "POST", "/api/v1/admin/mint", root.access,
              R"({"user":"alice@example.com","asset":"USDC","amount":"1000000"})", Idem("a"));
  EXPECT_EQ(r->status, 201) << r->body;
  return alice;
}

std::string Submit(uint16_t port, const std::string& token, const std::string& body) {
  auto r = As(port, "POST", "/api/v1/tasks", token, body);
  EXPECT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
  return r ? JsonField(r->body, "id") : "";
}

TEST(SmartdNodes, RealNodesCompleteTasksAndArePaidOnce) {
  Smartd s(NetworkEnv());
  ASSERT_NE(s.port(), 0);
  testing::TempDir state;
  Session root = CreateAdmin(s, "root@example.com");
  Session alice = FundedAlice(s, root);
  Operator op = MakeOperator(s, root, "op@example.com");
  auto node = StartNode(s, op, "worker-1", state.path());
  ASSERT_TRUE(node->WaitForLine("\"msg\":\"running\"", 20s)) << node->output();
  ASSERT_TRUE(node->WaitForLine("node socket open", 10s)) << "work is pushed: " << node->output();
  // A second node on HTTP claims only, sharing the work.
  auto http_node = StartNode(s, op, "worker-2", state.path(), "30", "http");
  ASSERT_TRUE(http_node->WaitForLine("\"msg\":\"running\"", 20s)) << http_node->output();

  std::vector<std::string> tasks;
  for (int i = 0; i < 4; ++i) {
    tasks.push_back(Submit(s.port(), alice.access,
                           R"({"type":"echo","input":"hello )" + std::to_string(i) + R"(","timeout_s":30})"));
  }
  tasks.push_back(Submit(s.port(), alice.access, R"({"type":"sha256","input":"abc","timeout_s":30})"));
  for (const auto& t : tasks) WaitFor(s.port(), alice.access, t, "completed");
  auto r = As(s.port(), "GET", "/api/v1/tasks/" + tasks[4] + "/result", alice.access);
  EXPECT_EQ(JsonField(r->body, "output"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  r = As(s.port(), "GET", "/api/v1/tasks/" + tasks[2] + "/result", alice.access);
  EXPECT_EQ(JsonField(r->body, "output"), "hello 2");
  EXPECT_EQ(Available(s.port(), alice.access), "875000");  // 5 x 25,000
  // 5,000,000 - 2 x 1,000,000 stake + 5 x 22,500, whichever node ran them
  EXPECT_EQ(Available(s.port(), op.session.access), "3112500");

  // Redundant execution: both nodes run it, agree, and both are paid.
  std::string redundant =
      Submit(s.port(), alice.access, R"({"type":"sha256","input":"abc","timeout_s":30,"replicas":2})");
  std::string body = WaitFor(s.port(), alice.access, redundant, "completed");
  EXPECT_NE(body.find("\"replicas\":2"), std::string::npos) << body;
  EXPECT_EQ(JsonField(body, "cost"), "50000") << "two runs charged; the tie-breaker's share released";
  EXPECT_EQ(Available(s.port(), alice.access), "825000");
  EXPECT_EQ(Available(s.port(), op.session.access), "3157500");
  // The five results went with the others that arrived with them; the two
  // replicas' results on their own (settled by comparing them).
  auto metrics = testing::Request(s.port(), "GET", "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("smart_tasks_results_total{way=\"together\"} 5\n"), std::string::npos) << metrics->body;
  std::smatch alone;
  ASSERT_TRUE(
      std::regex_search(metrics->body, alone, std::regex("smart_tasks_results_total\\{way=\"alone\"\\} ([0-9]+)")));
  EXPECT_GE(std::stoi(alone[1]), 2);
  EXPECT_TRUE(std::regex_search(metrics->body, std::regex("\nsmart_tasks_submits_together_total [0-9]+\n")));
  node->Signal(SIGTERM);
  http_node->Signal(SIGTERM);
  EXPECT_EQ(node->Wait(20s), 0);
  EXPECT_EQ(http_node->Wait(20s), 0);
  EXPECT_EQ(http_node->output().find("node socket open"), std::string::npos) << "transport http: no socket";
  auto [code, out] = testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", s.data_dir()});
  EXPECT_EQ(code, 0) << out;
}

TEST(SmartdNodes, AKilledNodesTaskIsFinishedByAnother) {
  Smartd s(NetworkEnv());
  ASSERT_NE(s.port(), 0);
  testing::TempDir state;
  Session root = CreateAdmin(s, "root@example.com");
  Session alice = FundedAlice(s, root);
  Operator first = MakeOperator(s, root, "first@example.com"), second = MakeOperator(s, root, "second@example.com");
  auto a = StartNode(s, first, "node-a", state.path());
  ASSERT_TRUE(a->WaitForLine("\"msg\":\"running\"", 20s)) << a->output();
  std::string task =
      Submit(s.port(), alice.access, R"({"type":"echo","input":"slow","parameters":{"delay_ms":2500},"timeout_s":60})");
  WaitFor(s.port(), alice.access, task, "in_progress");
  a->Signal(SIGKILL);
  a->Wait(5s);
  auto b = StartNode(s, second, "node-b", state.path());
  std::string done = WaitFor(s.port(), alice.access, task, "completed", 30s);
  EXPECT_NE(done.find("\"lease_lost\""), std::string::npos) << done;
  EXPECT_NE(done.find("\"attempt\":2"), std::string::npos) << done;
  EXPECT_EQ(Available(s.port(), alice.access), "975000") << "charged once";
  EXPECT_EQ(Available(s.port(), first.session.access), "4000000") << "the dead node earned nothing, lost nothing";
  EXPECT_EQ(Available(s.port(), second.session.access), "4022500") << "the finisher was paid once";
  b->Signal(SIGTERM);
  EXPECT_EQ(b->Wait(20s), 0);
}

// Two smart-node processes with one node's state file: the second's socket
// ends the first's (node_reattached), which says so loudly and leaves the
// socket alone for node.ws_retry instead of taking it back every second.
TEST(SmartdNodes, ASecondProcessOfOneNodeIsReportedAndNotFoughtOver) {
  Smartd s(NetworkEnv());
  ASSERT_NE(s.port(), 0);
  testing::TempDir state;
  Session root = CreateAdmin(s, "root@example.com");
  Operator op = MakeOperator(s, root, "op@example.com");
  auto first = StartNode(s, op, "twin", state.path());
  ASSERT_TRUE(first->WaitForLine("node socket open", 20s)) << first->output();
  auto second = StartNode(s, op, "twin", state.path());
  ASSERT_TRUE(second->WaitForLine("node socket open", 20s)) << second->output();
  ASSERT_TRUE(first->WaitForLine("is a second smart-node running with this node's state file?", 10s))
      << first->output();
  std::this_thread::sleep_for(4s);  // a reconnect 1 s after the close would have come
  auto opened = [](const std::string& out) {
    size_t n = 0;
    for (size_t at = out.find("node socket open"); at != std::string::npos; at = out.find("node socket open", at + 1)) {
      ++n;
    }
    return n;
  };
  EXPECT_EQ(opened(first->output()), 1u) << first->output();
  EXPECT_EQ(second->output().find("node_reattached"), std::string::npos) << "its socket was left alone";
  first->Signal(SIGTERM);
  second->Signal(SIGTERM);
  EXPECT_EQ(first->Wait(20s), 0) << first->output();
  EXPECT_EQ(second->Wait(20s), 0) << second->output();
}

// A task cancelled while smart-node runs it: the node is told, stops the job
// and takes the next task at once instead of finishing work nobody wants.
TEST(SmartdNodes, ACancelledTaskIsStoppedOnTheNode) {
  Smartd s(NetworkEnv());
  ASSERT_NE(s.port(), 0);
  testing::TempDir state;
  Session root = CreateAdmin(s, "root@example.com");
  Session alice = FundedAlice(s, root);
  Operator op = MakeOperator(s, root, "op@example.com");
  auto node = StartNode(s, op, "one-worker", state.path(), "30", "auto", "1");
  ASSERT_TRUE(node->WaitForLine("node socket open", 20s)) << node->output();
  std::string slow =
      Submit(s.port(), alice.access, R"({"type":"echo","input":"x","parameters":{"delay_ms":30000},"timeout_s":60})");
  WaitFor(s.port(), alice.access, slow, "in_progress");
  auto r = As(s.port(), "POST", "/api/v1/tasks/" + slow + "/cancel", alice.access);
  ASSERT_EQ(r->status, 200) << r->body;
  ASSERT_TRUE(node->WaitForLine("task cancelled: not reported", 5s)) << node->output();
  // Its only worker is free again: the next task is done long before the cancelled one would have been.
  auto start = std::chrono::steady_clock::now();
  std::string quick = Submit(s.port(), alice.access, R"({"type":"echo","input":"quick","timeout_s":60})");
  WaitFor(s.port(), alice.access, quick, "completed", 10s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_EQ(node->output().find("cannot report task"), std::string::npos) << "nothing reported on it";
  node->Signal(SIGTERM);
  EXPECT_EQ(node->Wait(20s), 0);
}

TEST(SmartdNodes, SigtermGivesBackWhatCannotFinish) {
  Smartd s(NetworkEnv());
  ASSERT_NE(s.port(), 0);
  testing::TempDir state;
  Session root = CreateAdmin(s, "root@example.com");
  Session alice = FundedAlice(s, root);
  Operator op = MakeOperator(s, root, "op@example.com");
  auto node = StartNode(s, op, "short-lived", state.path(), "0");
  ASSERT_TRUE(node->WaitForLine("\"msg\":\"running\"", 20s)) << node->output();
  std::string task =
      Submit(s.port(), alice.access, R"({"type":"echo","input":"x","parameters":{"delay_ms":20000},"timeout_s":60})");
  WaitFor(s.port(), alice.access, task, "in_progress");
  node->Signal(SIGTERM);
  EXPECT_EQ(node->Wait(20s), 0);
  std::string back = WaitFor(s.port(), alice.access, task, "pending", 5s);
  EXPECT_NE(back.find("\"released\""), std::string::npos) << back;
  EXPECT_NE(back.find("\"failures\":0"), std::string::npos) << back;
}

}  // namespace
}  // namespace smart::itest
