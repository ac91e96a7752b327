// The task network through the real smartd: submit, claim, report, pay; bad
// input; cancel; and a restart in the middle of a lease.
#include <signal.h>

#include <chrono>
#include <functional>
#include <optional>
#include <regex>
#include <thread>

#include "harness.hpp"
#include "smart/testing/postgres.hpp"
#include "smart/testing/redis.hpp"

namespace smart::itest {
namespace {

std::vector<std::string> TaskEnv(std::vector<std::string> extra = {}) {
  std::vector<std::string> env = kFastAuth;
  env.push_back("SMART_LEDGER_DEV_FAUCET=true");
  env.push_back("SMART_TASKS_MIN_TIMEOUT_S=1");
  env.push_back("SMART_TASKS_MIN_STAKE=1000000");
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::string Idem(const std::string& key) { return "Idempotency-Key: " + key + "\r\n"; }

std::string Available(uint16_t port, const std::string& token) {
  auto r = As(port, "GET", "/api/v1/user/balances", token);
  std::smatch m;
  std::regex re("\"kind\":\"available\",\"asset\":\"USDC\",\"balance\":\"(-?[0-9]+)\",\"available\":\"([0-9]+)\"");
  return r && std::regex_search(r->body, m, re) ? std::string(m[2]) : "?";
}

int JsonInt(const std::string& body, const std::string& key) {
  std::smatch m;
  std::regex re("\"" + key + "\":([0-9]+)");
  return std::regex_search(body, m, re) ? std::stoi(m[1]) : -1;
}

// `n` requests at once, each on a thread of its own (send(i) makes the i-th);
// Join waits for all of them and gives their answers, in order.
class AtOnce {
 public:
  AtOnce(int n, const std::function<std::optional<testing::HttpResponse>(int)>& send) : answers_(n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this, send, i] { answers_[i] = send(i); });
  }
  AtOnce(const AtOnce&) = delete;
  AtOnce& operator=(const AtOnce&) = delete;
  ~AtOnce() { Join(); }
  const std::vector<std::optional<testing::HttpResponse>>& Join() {
    for (auto& t : threads_) t.join();
    threads_.clear();
    return answers_;
  }

 private:
  std::vector<std::optional<testing::HttpResponse>> answers_;
  std::vector<std::thread> threads_;
};

struct Network {
  Session root, alice, op;
  std::string node_id, node_key;
};

Network StartNetwork(Smartd& s, const std::string& db_env = "") {
  Network n;
  n.root = CreateAdmin(s, "root@example.com", db_env);
  n.alice = RegisterAndLogin(s.port(), "alice@example.com");
  n.op = RegisterAndLogin(s.port(), "op@example.com");
  for (const char* who : {"alice@example.com", "op@example.com"}) {
    auto r = As(s.port(), "POST", "/api/v1/admin/mint", n.root.access,
                std::string(R"({"user":")") + who + R"(","asset":"USDC","amount":"10000000"})",
                Idem(std::string("fund-") + who));
    EXPECT_EQ(r->status, 201) << r->body;
  }
  auto r = As(s.port(), "POST", "/api/v1/nodes/register", n.op.access,
              R"({"name":"box-1","capabilities":["echo","sha256"],"capacity":2,"hardware":{"cpu":"2 cores"}})");
  EXPECT_EQ(r->status, 201) << r->body;
  n.node_id = JsonField(r->body, "id");
  n.node_key = JsonField(r->body, "credential");
  EXPECT_EQ(n.node_key.substr(0, 3), "sk_");
  return n;
}

TEST(SmartdTasks, SubmitClaimReportAndPay) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  EXPECT_EQ(Available(s.port(), n.op.access), "9000000") << "the stake is held";

  auto r = As(s.port(), "POST", "/api/v1/tasks/estimate", n.alice.access, R"({"type":"echo","input":"hi"})");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "cost"), "25000");

  r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access,
         R"({"type":"echo","input":{"text":"hi"},"priority":"high","timeout_s":60})", Idem("t1"));
  ASSERT_EQ(r->status, 201) << r->body;
  std::string task = JsonField(r->body, "id");
  EXPECT_EQ(JsonField(r->body, "status"), "pending");
  r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access,
         R"({"type":"echo","input":{"text":"hi"},"priority":"high","timeout_s":60})", Idem("t1"));
  EXPECT_EQ(JsonField(r->body, "id"), task);
  EXPECT_EQ(r->Header("idempotent-replayed"), "true");
  EXPECT_EQ(Available(s.port(), n.alice.access), "9975000");

  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({"max":2,"wait_s":1})");
  ASSERT_EQ(r->status, 200) << r->body;
  ASSERT_NE(r->body.find(task), std::string::npos) << r->body;
  EXPECT_NE(r->body.find(R"("input":{"text":"hi"})"), std::string::npos) << r->body;
  int lease = JsonInt(r->body, "lease");
  ASSERT_EQ(lease, 1);

  std::string lease_body = R"({"node_id":")" + n.node_id + R"(","lease":1)";
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/start", n.node_key, lease_body + "}");
  ASSERT_EQ(r->status, 200) << r->body;
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/progress", n.node_key,
         lease_body + R"(,"percent":40,"message":"working"})");
  ASSERT_EQ(r->status, 200) << r->body;
  r = As(s.port(), "GET", "/api/v1/tasks/" + task + "/result", n.alice.access);
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(JsonField(r->body, "code"), "no_result");

  const std::string output = R"({"text":"hi"})";
  const std::string proof = "b0c1c7e9d1b2ad8e79e0fd4d28b1ee3ba24b6b43fe3df1f9a9e4c1ad5a4db1c1";  // not the hash
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/result", n.node_key,
         lease_body + R"(,"output":"{\"text\":\"hi\"}","proof_hash":")" + proof + R"("})");
  EXPECT_EQ(r->status, 422);
  EXPECT_EQ(JsonField(r->body, "code"), "invalid_proof");
  // The real proof: sha256 of the output, by the system's sha256sum.
  auto [code, hash] = testing::RunCommand({"/bin/sh", "-c", "printf '%s' '" + output + "' | sha256sum | cut -c1-64"});
  ASSERT_EQ(code, 0);
  hash.erase(hash.find_last_not_of("\n") + 1);
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/result", n.node_key,
         lease_body + R"(,"output":"{\"text\":\"hi\"}","proof_hash":")" + hash + R"("})");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "status"), "completed");

  r = As(s.port(), "GET", "/api/v1/tasks/" + task + "/result", n.alice.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "proof_hash"), hash);
  r = As(s.port(), "GET", "/api/v1/tasks/" + task, n.alice.access);
  for (const char* st : {"\"status\":\"pending\"", "\"status\":\"assigned\"", "\"status\":\"in_progress\"",
                         "\"status\":\"completed\""}) {
    EXPECT_NE(r->body.find(st), std::string::npos) << st << " in " << r->body;
  }
  EXPECT_EQ(As(s.port(), "GET", "/api/v1/tasks/" + task, n.op.access)->status, 404) << "not the operator's task";
  EXPECT_EQ(Available(s.port(), n.alice.access), "9975000");
  EXPECT_EQ(Available(s.port(), n.op.access), "9022500");  // 90% of 25000
  r = As(s.port(), "GET", "/api/v1/nodes/stats", n.alice.access);
  EXPECT_EQ(JsonInt(r->body, "tasks_completed"), 1);
  EXPECT_EQ(JsonInt(r->body, "nodes_online"), 1);
  auto [vcode, vout] = testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", s.dir() + "/data"});
  EXPECT_EQ(vcode, 0) << vout;
}

// GET /tasks/{id} with If-None-Match and Prefer: wait waits for the task to change.
TEST(SmartdTasks, AReadCanWaitForTheTaskToChange) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  auto r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"x","timeout_s":60})");
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string path = "/api/v1/tasks/" + JsonField(r->body, "id");
  r = As(s.port(), "GET", path, n.alice.access);
  ASSERT_EQ(r->status, 200);
  const std::string etag = r->Header("etag");
  ASSERT_EQ(etag.size(), 34u) << "a quoted hash";
  const std::string same = "If-None-Match: " + etag + "\r\n";

  r = As(s.port(), "GET", path, n.alice.access, "", same);
  EXPECT_EQ(r->status, 304) << "unchanged, and no wait asked";
  EXPECT_EQ(r->body, "");
  EXPECT_EQ(r->Header("etag"), etag);
  EXPECT_EQ(As(s.port(), "GET", path, n.alice.access, "", "If-None-Match: \"other\"\r\n")->status, 200);
  auto start = std::chrono::steady_clock::now();
  r = As(s.port(), "GET", path, n.alice.access, "", same + "Prefer: wait=abc\r\n");
  EXPECT_EQ(r->status, 304) << "a wait that is not a number is ignored";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));

  start = std::chrono::steady_clock::now();
  r = As(s.port(), "GET", path, n.alice.access, "", same + "Prefer: wait=1\r\n");
  EXPECT_EQ(r->status, 304) << "nothing changed in the second waited";
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(950));
  EXPECT_EQ(r->Header("preference-applied"), "wait=1");

  // A claim while a read waits: the read answers with the assigned task at once.
  std::optional<testing::HttpResponse> waited;
  std::chrono::steady_clock::duration took{};
  std::thread reader([&] {
    auto t0 = std::chrono::steady_clock::now();
    waited = As(s.port(), "GET", path, n.alice.access, "", same + "Prefer: respond-async, wait=20\r\n");
    took = std::chrono::steady_clock::now() - t0;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({"max":1})");
  ASSERT_EQ(r->status, 200) << r->body;
  reader.join();
  ASSERT_TRUE(waited);
  EXPECT_EQ(waited->status, 200) << waited->body;
  EXPECT_EQ(JsonField(waited->body, "status"), "assigned");
  EXPECT_NE(waited->Header("etag"), etag);
  EXPECT_LT(took, std::chrono::seconds(5)) << "answered on the change, not at the end of the wait";
  EXPECT_EQ(As(s.port(), "GET", path, n.op.access, "", same + "Prefer: wait=5\r\n")->status, 404)
      << "another user's task is not found, waiting or not";

  // Many reads wait at once (no thread each); the node starting the task answers them all.
  const std::string assigned = "If-None-Match: " + waited->Header("etag") + "\r\n";
  AtOnce readers(40,
                 [&](int) { return As(s.port(), "GET", path, n.alice.access, "", assigned + "Prefer: wait=20\r\n"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto t0 = std::chrono::steady_clock::now();
  r = As(s.port(), "POST", path + "/start", n.node_key, R"({"node_id":")" + n.node_id + R"(","lease":1})");
  ASSERT_EQ(r->status, 200) << r->body;
  const auto& answers = readers.Join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  for (const auto& a : answers) {
    ASSERT_TRUE(a);
    EXPECT_EQ(a->status, 200) << a->body;
    EXPECT_EQ(JsonField(a->body, "status"), "in_progress");
    EXPECT_EQ(a->Header("preference-applied"), "wait=20") << "every one of them waited";
  }
}

// HTTP claims that wait hold no thread: more wait at once than the long-poll
// pool has threads (2 here); a task goes to one of them, the rest end with
// none at their deadline, and a task submitted after that stays pending.
TEST(SmartdTasks, ManyClaimsWaitAtOnce) {
  Smartd s(TaskEnv({"SMART_HTTP_LONG_POLL_THREADS=2"}));
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  constexpr int kClaims = 12;
  auto t0 = std::chrono::steady_clock::now();
  AtOnce claims(kClaims, [&](int) {
    return As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({"wait_s":3})");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto metrics = testing::Request(s.port(), "GET", "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("\nsmart_tasks_claims_waiting " + std::to_string(kClaims) + "\n"), std::string::npos)
      << "all of them wait at once";
  auto r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"x","timeout_s":60})");
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string task = JsonField(r->body, "id");
  const auto& answers = claims.Join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(6)) << "the claims waited at once";
  int with_task = 0;
  for (const auto& a : answers) {
    ASSERT_TRUE(a);
    ASSERT_EQ(a->status, 200) << a->body;
    if (a->body.find(task) != std::string::npos)
      ++with_task;
    else
      EXPECT_EQ(a->body, R"({"tasks":[]})");
  }
  EXPECT_EQ(with_task, 1);
  r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"y","timeout_s":60})");
  ASSERT_EQ(r->status, 201) << r->body;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  r = As(s.port(), "GET", "/api/v1/tasks/" + JsonField(r->body, "id"), n.alice.access);
  EXPECT_EQ(JsonField(r->body, "status"), "pending") << "given to a claim that was answered";
}

// SIGTERM answers a claim that waits (with no tasks) at once, and smartd
// stops cleanly: the claim's answer does not wait for its deadline.
TEST(SmartdTasks, AWaitingClaimIsAnsweredAtShutdown) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  AtOnce claim(1, [&](int) {
    return As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({"wait_s":30})");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto t0 = std::chrono::steady_clock::now();
  s.proc().Signal(SIGTERM);
  const auto& answers = claim.Join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "not at its 30 s deadline";
  ASSERT_TRUE(answers[0]);
  EXPECT_EQ(answers[0]->status, 200) << answers[0]->body;
  EXPECT_EQ(answers[0]->body, R"({"tasks":[]})");
  auto code = s.proc().Wait(std::chrono::seconds(15));
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, 0);
}

// HTTP heartbeats wait for their batch's commit (a 50 ms linger) without a
// thread each: with one worker thread, 40 at once are answered together,
// where one after another they would take 40 lingers (2 s).
TEST(SmartdTasks, HeartbeatsOverHttpWaitTogether) {
  Smartd s(TaskEnv({"SMART_HTTP_WORKER_THREADS=1"}));
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  auto t0 = std::chrono::steady_clock::now();
  AtOnce beats(40, [&](int i) {
    return As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/heartbeat", n.node_key,
              R"({"load":)" + std::to_string(i) + R"(,"running":0})");
  });
  const auto& answers = beats.Join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1500));
  for (const auto& a : answers) {
    ASSERT_TRUE(a);
    EXPECT_EQ(a->status, 200) << a->body;
    EXPECT_EQ(JsonField(a->body, "status"), "online");
  }
  auto bad = As(s.port(), "POST", "/api/v1/nodes/node_nope/heartbeat", n.node_key, R"({"load":1})");
  EXPECT_EQ(bad->status, 404) << bad->body;
  EXPECT_EQ(JsonField(bad->body, "code"), "node_not_found");
}

TEST(SmartdTasks, BadInputEverywhere) {
  Smartd s(TaskEnv({"SMART_HTTP_MAX_BODY_BYTES=4194304"}));
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  Session poor = RegisterAndLogin(s.port(), "poor@example.com");
  struct Case {
    std::string token, method, target, body;
    int status;
    std::string code;
  };
  const std::string big = std::string(R"({"type":"echo","input":")") + std::string((1 << 20) + 10, 'x') + "\"}";
  std::vector<Case> cases = {
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"mining","input":"x"})", 422, "unknown_task_type"},
      {n.alice.access, "POST", "/api/v1/tasks", big, 413, "input_too_large"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo"})", 422, "validation_failed"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","timeout_s":-1})", 422,
       "validation_failed"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","timeout_s":1e30})", 422,
       "validation_failed"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","max_attempts":99})", 422,
       "validation_failed"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","max_cost":5})", 422,
       "validation_failed"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","max_cost":"5"})", 422,
       "cost_exceeds_max"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","priority":"asap"})", 422,
       "validation_failed"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","parameters":[1]})", 422,
       "validation_failed"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","colour":"red"})", 400, "unknown_field"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","replicas":1})", 422,
       "validation_failed"},
      {n.alice.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x","replicas":"2"})", 422,
       "validation_failed"},
      {poor.access, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x"})", 402, "insufficient_funds"},
      {n.alice.access, "GET", "/api/v1/tasks/task_nope", "", 404, "task_not_found"},
      {n.alice.access, "POST", "/api/v1/nodes/" + n.node_id + "/claim", R"({"max":1})", 403, "node_not_yours"},
      {n.node_key, "POST", "/api/v1/nodes/" + n.node_id + "/claim", R"({"max":0})", 422, "validation_failed"},
      {n.node_key, "POST", "/api/v1/nodes/" + n.node_id + "/claim", R"({"wait_s":999})", 422, "validation_failed"},
      {n.node_key, "POST", "/api/v1/nodes/node_nope/claim", R"({})", 404, "node_not_found"},
      {n.node_key, "POST", "/api/v1/tasks", R"({"type":"echo","input":"x"})", 403, "insufficient_scope"},
      {n.node_key, "POST", "/api/v1/nodes/" + n.node_id + "/heartbeat", R"({"load":101})", 422, "validation_failed"},
      {n.op.access, "POST", "/api/v1/nodes/register", R"({"name":"box-1","capabilities":["echo"]})", 409,
       "node_name_taken"},
      {n.op.access, "POST", "/api/v1/nodes/register", R"({"name":"x","capabilities":["mining"]})", 422,
       "unknown_task_type"},
      {n.op.access, "POST", "/api/v1/nodes/register", R"({"name":"x","capabilities":["echo"],"capacity":1000})", 422,
       "validation_failed"},
      {poor.access, "POST", "/api/v1/nodes/register", R"({"name":"broke","capabilities":["echo"]})", 402,
       "insufficient_funds"},
      {n.alice.access, "PATCH", "/api/v1/admin/tasks/settings", R"({"paused":true})", 403, "insufficient_scope"},
      {n.root.access, "PATCH", "/api/v1/admin/tasks/settings", R"({"max_tasks_per_node":101})", 422,
       "validation_failed"},
  };
  for (const auto& c : cases) {
    auto r = As(s.port(), c.method, c.target, c.token, c.body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, c.status) << c.method << " " << c.target << " " << c.body.substr(0, 80) << " -> "
                                   << r->body.substr(0, 300);
    EXPECT_EQ(JsonField(r->body, "code"), c.code) << c.target << " " << c.body.substr(0, 80);
  }
  // A refused registration leaves no credential behind.
  auto keys = As(s.port(), "GET", "/api/v1/user/api-keys", poor.access);
  EXPECT_TRUE(std::regex_search(keys->body, std::regex(R"("name":"node broke"[^}]*"revoked_at":"2)")))
      << "revoked: " << keys->body;
  EXPECT_EQ(Available(s.port(), n.alice.access), "10000000") << "nothing was held";

  // Stale and foreign leases; a deactivated node.
  auto r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"x","timeout_s":60})");
  std::string task = JsonField(r->body, "id");
  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({})");
  ASSERT_NE(r->body.find(task), std::string::npos) << r->body;
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/start", n.node_key,
         R"({"node_id":")" + n.node_id + R"(","lease":2})");
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(JsonField(r->body, "code"), "lease_stale");
  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/deactivate", n.node_key);
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(JsonField(r->body, "code"), "node_busy");
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/cancel", n.alice.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Available(s.port(), n.alice.access), "10000000") << "cancel refunds";
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/fail", n.node_key,
         R"({"node_id":")" + n.node_id + R"(","lease":1,"error":"x"})");
  EXPECT_EQ(r->status, 409) << "the lease ended with the cancel";
  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/deactivate", n.node_key);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "status"), "deactivated");
  EXPECT_EQ(Available(s.port(), n.op.access), "10000000") << "the stake came back";
  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({})");
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(JsonField(r->body, "code"), "node_deactivated");

  r = As(s.port(), "PATCH", "/api/v1/admin/tasks/settings", n.root.access, R"({"paused":true})");
  ASSERT_EQ(r->status, 200) << r->body;
  r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"x"})");
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(JsonField(r->body, "code"), "submissions_paused");
}

TEST(SmartdTasks, ATimedOutLeaseSlashesTheNode) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  auto r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"x","timeout_s":1})");
  std::string task = JsonField(r->body, "id");
  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({})");
  ASSERT_NE(r->body.find(task), std::string::npos) << r->body;
  std::string node;
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    node = As(s.port(), "GET", "/api/v1/nodes/" + n.node_id, n.alice.access)->body;
    if (JsonField(node, "slashed") != "0") break;
  }
  EXPECT_EQ(JsonField(node, "stake"), "900000") << node;
  EXPECT_EQ(JsonField(node, "slashed"), "100000") << node;
  EXPECT_EQ(JsonInt(node, "reputation"), 50) << node;
  r = As(s.port(), "GET", "/api/v1/tasks/" + task, n.alice.access);
  EXPECT_EQ(JsonField(r->body, "status"), "pending") << r->body;
  EXPECT_NE(r->body.find("\"timed_out\""), std::string::npos) << r->body;
  r = As(
      s.port(), "POST", "/api/v1/tasks/" + task + "/result", n.node_key,
      R"({"node_id":")" + n.node_id +
          R"(","lease":1,"output":"x","proof_hash":"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"})");
  EXPECT_EQ(r->status, 409) << "too late: " << r->body;
  auto [vcode, vout] = testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", s.data_dir()});
  EXPECT_EQ(vcode, 0) << vout;
}

TEST(SmartdTasks, ScheduledDeadLetteredAndRetried) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  auto r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access,
              R"({"type":"echo","input":"tomorrow","not_before":"2099-01-01T00:00:00Z"})");
  EXPECT_EQ(r->status, 422) << "at most 30 days ahead: " << r->body;
  r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"x","deadline":"yesterday"})");
  EXPECT_EQ(r->status, 422);
  r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"once","max_attempts":1})");
  ASSERT_EQ(r->status, 201) << r->body;
  std::string task = JsonField(r->body, "id");
  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({})");
  ASSERT_NE(r->body.find(task), std::string::npos);
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/fail", n.node_key,
         R"({"node_id":")" + n.node_id + R"(","lease":1,"error":"no luck"})");
  ASSERT_EQ(r->status, 200) << r->body;
  r = As(s.port(), "GET", "/api/v1/tasks/dead-letter", n.alice.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->body.find(task), std::string::npos);
  EXPECT_EQ(Available(s.port(), n.alice.access), "10000000") << "refunded";
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/retry", n.alice.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "status"), "pending");
  EXPECT_EQ(JsonInt(r->body, "retries"), 1);
  EXPECT_EQ(Available(s.port(), n.alice.access), "9975000") << "held again";
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/retry", n.alice.access);
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(JsonField(r->body, "code"), "not_dead_lettered");
  auto [vcode, vout] = testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", s.data_dir()});
  EXPECT_EQ(vcode, 0) << vout;
}

// A restart between claim and result: the lease survives, the result is taken
// and paid once.
TEST(SmartdTasks, LeasesSurviveARestart) {
  testing::TempDir dir;
  const std::string data = dir.path() + "/data";
  std::string task, node_id, node_key;
  Session alice;
  {
    Smartd s(TaskEnv(), {}, data);
    ASSERT_NE(s.port(), 0);
    Network n = StartNetwork(s);
    node_id = n.node_id;
    node_key = n.node_key;
    auto r =
        As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"sha256","input":"abc","timeout_s":120})");
    task = JsonField(r->body, "id");
    r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"sha256","input":"later","timeout_s":120})");
    ASSERT_EQ(r->status, 201);
    r = As(s.port(), "POST", "/api/v1/nodes/" + node_id + "/claim", node_key, R"({"max":1})");
    ASSERT_NE(r->body.find(task), std::string::npos) << r->body;
    s.proc().Signal(SIGKILL);
  }
  Smartd s(TaskEnv(), {}, data);
  ASSERT_NE(s.port(), 0);
  const std::string abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";  // sha256("abc")
  auto r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/result", node_key,
              R"({"node_id":")" + node_id + R"(","lease":1,"output":"abc","proof_hash":")" + abc + R"("})");
  ASSERT_EQ(r->status, 200) << r->body;
  r = As(s.port(), "POST", "/api/v1/nodes/" + node_id + "/claim", node_key, R"({"max":1})");
  EXPECT_NE(r->body.find("\"input\":\"later\""), std::string::npos) << "the pending task is still queued: " << r->body;
  Session op = Login(s.port(), "op@example.com", "correct horse battery");
  EXPECT_EQ(Available(s.port(), op.access), "9022500") << "paid once";
  auto [vcode, vout] = testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", data});
  EXPECT_EQ(vcode, 0) << vout;
}

TEST(SmartdTasks, BatchesAreAllOrNothing) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  auto r = As(s.port(), "POST", "/api/v1/tasks/batch", n.alice.access,
              R"({"tasks":[{"type":"echo","input":"a"},{"type":"echo"},{"type":"echo","input":"c","colour":1},7]})");
  ASSERT_EQ(r->status, 422) << r->body;
  EXPECT_NE(r->body.find("tasks[1].input"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("tasks[2].colour"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"tasks[3]\""), std::string::npos) << r->body;
  r = As(s.port(), "POST", "/api/v1/tasks/batch", n.alice.access, R"({"tasks":[]})");
  EXPECT_EQ(r->status, 422) << r->body;
  r = As(s.port(), "POST", "/api/v1/tasks/batch", n.alice.access,
         R"({"tasks":[{"type":"echo","input":"a"},{"type":"mining","input":"b"}]})");
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_EQ(JsonField(r->body, "code"), "unknown_task_type");
  EXPECT_EQ(Available(s.port(), n.alice.access), "10000000") << "nothing held for a refused batch";
  std::string two = R"({"tasks":[{"type":"echo","input":"a"},{"type":"echo","input":"b","priority":"high"}]})";
  r = As(s.port(), "POST", "/api/v1/tasks/batch", n.alice.access, two, Idem("batch-1"));
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(Available(s.port(), n.alice.access), "9950000");
  auto again = As(s.port(), "POST", "/api/v1/tasks/batch", n.alice.access, two, Idem("batch-1"));
  ASSERT_EQ(again->status, 201);
  EXPECT_EQ(JsonField(again->body, "id"), JsonField(r->body, "id")) << "the same tasks";
  EXPECT_EQ(again->Header("idempotent-replayed"), "true");
  EXPECT_EQ(Available(s.port(), n.alice.access), "9950000");
  auto claimed = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({"max":2})");
  EXPECT_NE(claimed->body.find("\"input\":\"b\""), std::string::npos) << "both are queued: " << claimed->body;
}

// Says hello on the node socket with `credit`; returns the welcome.
std::string Hello(WsClient& node, const Network& n, int credit) {
  node.Send(R"({"type":"hello","node_id":")" + n.node_id + R"(","credit":)" + std::to_string(credit) + "}");
  return node.Read();
}

// Submits an echo task as alice; returns its id.
std::string SubmitEcho(const Smartd& s, const Network& n, const std::string& input) {
  auto r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access,
              R"({"type":"echo","input":")" + input + R"(","timeout_s":60})");
  EXPECT_EQ(r->status, 201) << r->body;
  return JsonField(r->body, "id");
}

// A task cancelled by its owner while a node runs it: the node is told on
// its socket at once, for a replicated task each node running a replica.
TEST(SmartdTasks, ANodeIsToldAtOnceWhenItsTaskIsCancelled) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  auto r = As(s.port(), "POST", "/api/v1/nodes/register", n.op.access, R"({"name":"box-2","capabilities":["echo"]})");
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string second = JsonField(r->body, "id");
  WsClient node(s.port(), "/api/v1/nodes/ws", n.node_key);
  ASSERT_NE(Hello(node, n, 1).find("\"welcome\""), std::string::npos);

  std::string t = SubmitEcho(s, n, "slow");
  ASSERT_NE(node.ReadUntil("\"type\":\"tasks\"").find(t), std::string::npos);
  r = As(s.port(), "POST", "/api/v1/tasks/" + t + "/cancel", n.alice.access);
  ASSERT_EQ(r->status, 200) << r->body;
  std::string told = node.ReadUntil("\"type\":\"cancelled\"");
  EXPECT_NE(told.find("\"task_id\":\"" + t + "\""), std::string::npos) << told;
  // Its report is refused all the same: the lease is gone.
  node.Send(
      R"({"type":"result","task_id":")" + t +
      R"(","lease":1,"output":"slow","proof_hash":"5e0cf7bd1dfa3831788b0cf6dedcdd228fba6f34dc238d371e746567e80bc7b6"})");
  std::string refused = node.ReadUntil("\"type\":\"error\"");
  EXPECT_NE(refused.find("lease_stale"), std::string::npos) << refused;

  // Two replicas on two nodes, the task cancelled: each node hears of its own replica.
  WsClient other(s.port(), "/api/v1/nodes/ws", n.node_key);
  other.Send(R"({"type":"hello","node_id":")" + second + R"(","credit":1})");
  ASSERT_NE(other.Read().find("\"welcome\""), std::string::npos);
  node.Send(R"({"type":"credit","n":1})");
  r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"twice","replicas":2})");
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string parent = JsonField(r->body, "id");
  std::string a = node.ReadUntil("\"type\":\"tasks\""), b = other.ReadUntil("\"type\":\"tasks\"");
  ASSERT_FALSE(a.empty() || b.empty()) << "a replica each";
  const std::string ra = JsonField(a, "id"), rb = JsonField(b, "id");
  ASSERT_NE(ra, rb);
  r = As(s.port(), "POST", "/api/v1/tasks/" + parent + "/cancel", n.alice.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(node.ReadUntil("\"type\":\"cancelled\"").find(ra), std::string::npos);
  EXPECT_NE(other.ReadUntil("\"type\":\"cancelled\"").find(rb), std::string::npos);

  // Three replicas, two agree: the third's node hears that its replica is no longer wanted.
  r = As(s.port(), "POST", "/api/v1/nodes/register", n.op.access, R"({"name":"box-3","capabilities":["echo"]})");
  ASSERT_EQ(r->status, 201) << r->body;
  WsClient third(s.port(), "/api/v1/nodes/ws", n.node_key);
  third.Send(R"({"type":"hello","node_id":")" + JsonField(r->body, "id") + R"(","credit":1})");
  ASSERT_NE(third.Read().find("\"welcome\""), std::string::npos);
  node.Send(R"({"type":"credit","n":1})");
  other.Send(R"({"type":"credit","n":1})");
  r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"thrice","replicas":3})");
  ASSERT_EQ(r->status, 201) << r->body;
  std::string ids[3];
  WsClient* nodes[3] = {&node, &other, &third};
  for (int i = 0; i < 3; ++i) {
    ids[i] = JsonField(nodes[i]->ReadUntil("\"type\":\"tasks\""), "id");
    ASSERT_FALSE(ids[i].empty()) << i;
  }
  for (int i = 0; i < 2; ++i) {
    nodes[i]->Send(
        R"({"type":"result","ref":1,"task_id":")" + ids[i] +
        R"(","lease":1,"output":"thrice","proof_hash":"dbeed8d35fad4bb99e91dd527394fdcd36af1ac3bfc0fe3af6697c2023464f37"})");
    EXPECT_NE(nodes[i]->ReadUntil("\"type\":\"ack\"").find("completed"), std::string::npos) << i;
  }
  EXPECT_NE(third.ReadUntil("\"type\":\"cancelled\"").find(ids[2]), std::string::npos)
      << "the third replica is no longer wanted";
}

// The node WebSocket: hello, pushed work within the credit, results and
// heartbeats on the same connection, and what a bad node is told.
TEST(SmartdTasks, NodeSocketPushesWorkAndTakesResults) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  WsClient node(s.port(), "/api/v1/nodes/ws", n.node_key);
  std::string m = Hello(node, n, 1);
  EXPECT_NE(m.find("\"type\":\"welcome\""), std::string::npos) << m;
  EXPECT_NE(m.find("\"heartbeat_s\":5"), std::string::npos) << m;

  std::string t1 = SubmitEcho(s, n, "first"), t2 = SubmitEcho(s, n, "second");
  m = node.ReadUntil("\"type\":\"tasks\"");
  ASSERT_NE(m.find(t1), std::string::npos) << "pushed without asking: " << m;
  EXPECT_EQ(m.find(t2), std::string::npos) << "one credit, one task: " << m;
  EXPECT_NE(m.find("\"input\":\"first\""), std::string::npos) << m;

  // The result, with a ref and one more credit: the ack, then the second task.
  node.Send(
      R"({"type":"result","ref":7,"credit":1,"task_id":")" + t1 +
      R"(","lease":1,"output":"first","proof_hash":"a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e"})");
  std::string ack, pushed;
  for (int i = 0; i < 4 && (ack.empty() || pushed.empty()); ++i) {
    m = node.Read();
    if (m.find("\"type\":\"ack\"") != std::string::npos) ack = m;
    if (m.find("\"type\":\"tasks\"") != std::string::npos) pushed = m;
  }
  EXPECT_NE(ack.find("\"ref\":7"), std::string::npos) << ack;
  EXPECT_NE(ack.find("\"status\":\"completed\""), std::string::npos) << ack;
  EXPECT_NE(pushed.find(t2), std::string::npos) << pushed;
  auto r = As(s.port(), "GET", "/api/v1/tasks/" + t1, n.alice.access);
  EXPECT_EQ(JsonField(r->body, "status"), "completed");
  EXPECT_EQ(Available(s.port(), n.op.access), "9022500") << "paid 90% of 25000 once";

  // Refusals are answered on the connection, which stays open.
  node.Send(R"({"type":"result","ref":"x","task_id":")" + t2 + R"(","lease":1,"output":"second","proof_hash":"00"})");
  m = node.ReadUntil("\"type\":\"error\"");
  EXPECT_NE(m.find("invalid_proof"), std::string::npos) << m;
  EXPECT_NE(m.find("\"ref\":\"x\""), std::string::npos) << m;
  node.Send(R"({"type":"start","task_id":")" + t2 + R"(","lease":9})");
  std::string refused = node.ReadUntil("\"type\":\"error\"");
  EXPECT_NE(refused.find("lease_stale"), std::string::npos) << refused;
  node.Send(R"({"type":"progress","task_id":")" + t2 + R"(","lease":1,"percent":250})");
  EXPECT_NE(node.ReadUntil("\"type\":\"error\"").find("invalid_percent"), std::string::npos);
  node.Send("not json");
  EXPECT_NE(node.ReadUntil("\"type\":\"error\"").find("invalid_message"), std::string::npos);
  node.Send(R"({"type":"dance"})");
  EXPECT_NE(node.ReadUntil("\"type\":\"error\"").find("unknown_type"), std::string::npos);
  node.Send(R"({"type":"credit","n":0})");
  EXPECT_NE(node.ReadUntil("\"type\":\"error\"").find("invalid_message"), std::string::npos);
  node.Send(R"({"type":"heartbeat","ref":1,"load":20,"running":1})");
  m = node.ReadUntil("\"type\":\"heartbeat\"");
  EXPECT_NE(m.find("\"status\":\"online\""), std::string::npos) << m;
  // Without a ref a heartbeat is recorded and not answered: the next answer is the one asked for.
  node.Send(R"({"type":"heartbeat","load":30,"running":1})");
  node.Send(R"({"type":"heartbeat","ref":"second","load":40,"running":1})");
  auto answer = [&] {  // the next message that is not pushed work
    std::string next;
    do next = node.Read();
    while (next.find("\"type\":\"tasks\"") != std::string::npos);
    return next;
  };
  m = answer();
  EXPECT_NE(m.find("\"ref\":\"second\""), std::string::npos) << m;
  node.Send(R"({"type":"heartbeat","load":101})");
  m = answer();
  EXPECT_NE(m.find("invalid_message"), std::string::npos) << "a refusal is answered without a ref too: " << m;
  node.Send(R"({"type":"fail","task_id":")" + t2 + R"(","lease":1,"error":"no luck"})");
  m = node.ReadUntil("\"type\":\"ack\"");
  EXPECT_NE(m.find("\"status\":\"pending\""), std::string::npos) << "requeued: " << m;

  // A node that is not the caller's is told so and closed.
  auto other = RegisterAndLogin(s.port(), "mallory@example.com");
  WsClient bad(s.port(), "/api/v1/nodes/ws", "");
  bad.Send(R"({"type":"hello","token":")" + other.access + R"(","node_id":")" + n.node_id + R"(","credit":1})");
  // (her session has the scope nodes; the node is not hers)
  std::string seen;
  for (int i = 0; i < 5 && m.find("node_not_yours") == std::string::npos; ++i) seen += (m = bad.Read()) + "\n";
  EXPECT_NE(m.find("node_not_yours"), std::string::npos) << seen << " close " << bad.close_code();
  EXPECT_EQ(bad.Read(), "");
  EXPECT_EQ(bad.close_code(), 1008);
  // Anything before hello closes the connection.
  WsClient early(s.port(), "/api/v1/nodes/ws", n.node_key);
  early.Send(R"({"type":"credit","n":1})");
  EXPECT_EQ(early.Read(), "");
  EXPECT_EQ(early.close_code(), 1008);
  EXPECT_THROW(WsClient(s.port(), "/api/v1/nodes/ws", "sk_wrong"), std::exception);
  // Open now: the node's own socket only (the closed ones counted out, the refused one never in).
  EXPECT_NE(MetricsWith(s.port(), "smart_ws_node_connections 1\n").find("smart_ws_node_connections 1\n"),
            std::string::npos);
}

// Lease messages in one frame, answered in one frame, each answer what the
// message alone would get, in order.
TEST(SmartdTasks, NodeSocketTakesLeaseMessagesInBatches) {
  Smartd s(TaskEnv());
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  WsClient node(s.port(), "/api/v1/nodes/ws", n.node_key);
  std::string m = Hello(node, n, 2);
  EXPECT_NE(m.find("\"max_batch\":256"), std::string::npos) << m;
  std::vector<std::string> ids = {SubmitEcho(s, n, "b1"), SubmitEcho(s, n, "b2")};  // the node's capacity
  std::string pushed;
  for (int i = 0; i < 2 && pushed.find(ids[1]) == std::string::npos; ++i)
    pushed += node.ReadUntil("\"type\":\"tasks\"");
  for (const auto& id : ids) ASSERT_NE(pushed.find(id), std::string::npos) << pushed;

  auto result = [](const std::string& id, const std::string& output, const std::string& proof) {
    return R"({"type":"result","ref":")" + id + R"(","task_id":")" + id + R"(","lease":1,"output":")" + output +
           R"(","proof_hash":")" + proof + R"("})";
  };
  const std::string b1 = "7dc96f776c8423e57a2785489a3f9c43fb6e756876d6ad9a9cac4aa4e72ec193",
                    b2 = "4814d92093ac8a0f4a2163ab87dee509ba306a58f5888be0edcb2fcd0712028b";
  node.Send(R"({"type":"batch","ref":"b","messages":[)" + result(ids[0], "b1", b1) + "," + result(ids[1], "b2", "00") +
            R"(,{"type":"heartbeat"},42,{"type":"start","task_id":")" + ids[1] + R"("}]})");
  m = node.ReadUntil("\"type\":\"batch\"");
  EXPECT_NE(m.find("\"ref\":\"b\""), std::string::npos) << m;
  // In order: the ack, the bad proof, two unknown types, a start without its lease.
  std::vector<size_t> at;
  for (const std::string& needle :
       {"\"ref\":\"" + ids[0] + "\",\"task_id\":\"" + ids[0] + "\",\"status\":\"completed\"",
        std::string("invalid_proof"), std::string("unknown_type"), std::string("unknown_type"),
        std::string("task_id and lease are required")}) {
    size_t from = at.empty() ? 0 : at.back() + 1;
    at.push_back(m.find(needle, from));
    ASSERT_NE(at.back(), std::string::npos) << needle << " in order in " << m;
  }
  EXPECT_EQ(JsonField(As(s.port(), "GET", "/api/v1/tasks/" + ids[0], n.alice.access)->body, "status"), "completed");
  EXPECT_EQ(JsonField(As(s.port(), "GET", "/api/v1/tasks/" + ids[1], n.alice.access)->body, "status"), "assigned");
  node.Send(R"({"type":"batch","messages":[)" + result(ids[1], "b2", b2) + "]}");
  m = node.ReadUntil("\"type\":\"batch\"");
  EXPECT_NE(m.find("\"status\":\"completed\""), std::string::npos) << m;
  EXPECT_EQ(Available(s.port(), n.op.access), "9045000") << "paid 90% of 25000 for each of the two";

  // Malformed batches are refused whole, and the connection stays open.
  std::string too_many = R"({"type":"batch","messages":[)";
  for (int i = 0; i < 257; ++i) too_many += std::string(i ? "," : "") + R"({"type":"start"})";
  for (const std::string& bad :
       {std::string(R"({"type":"batch","ref":1,"messages":[]})"), std::string(R"({"type":"batch","messages":{}})"),
        std::string(R"({"type":"batch"})"), too_many + "]}"}) {
    node.Send(bad);
    m = node.ReadUntil("\"type\":\"error\"");
    EXPECT_NE(m.find("invalid_message"), std::string::npos) << m;
  }
  node.Send(R"({"type":"heartbeat","ref":"hb","load":1,"running":0})");
  EXPECT_NE(node.ReadUntil("\"ref\":\"hb\"").find("\"status\":\"online\""), std::string::npos);
}

TEST(SmartdTasks, ANodeSocketBoundsItsUnansweredMessages) {
  Smartd s(TaskEnv({"SMART_TASKS_NODE_MAX_UNANSWERED=2"}));
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s);
  WsClient node(s.port(), "/api/v1/nodes/ws", n.node_key);
  ASSERT_NE(Hello(node, n, 0).find("\"type\":\"welcome\""), std::string::npos);
  // Each a write the coordinator answers (lease_stale): sent without waiting,
  // more than two are refused until answers catch up; every one is answered.
  constexpr int kSent = 200;
  for (int i = 0; i < kSent; ++i) {
    node.Send(R"({"type":"start","ref":)" + std::to_string(i) + R"(,"task_id":"task_none","lease":1})");
  }
  int not_found = 0, refused = 0;
  for (int i = 0; i < kSent; ++i) {
    std::string m = node.Read();
    ASSERT_NE(m.find("\"type\":\"error\""), std::string::npos) << m;
    if (m.find("task_not_found") != std::string::npos) ++not_found;
    if (m.find("too_many_unanswered") != std::string::npos) ++refused;
  }
  EXPECT_EQ(not_found + refused, kSent);
  EXPECT_GE(not_found, 2);
  EXPECT_GT(refused, 0);
  // A batch's messages take a place each.
  std::string batch = R"({"type":"batch","messages":[)";
  for (int i = 0; i < 50; ++i)
    batch += std::string(i ? "," : "") + R"({"type":"start","task_id":"task_none","lease":1})";
  node.Send(batch + "]}");
  std::string all = node.ReadUntil("\"type\":\"batch\"");
  not_found = refused = 0;
  for (size_t at = 0; (at = all.find("task_not_found", at)) != std::string::npos; ++at) ++not_found;
  for (size_t at = 0; (at = all.find("too_many_unanswered", at)) != std::string::npos; ++at) ++refused;
  EXPECT_EQ(not_found + refused, 50) << all;
  EXPECT_GE(not_found, 2);
  EXPECT_GT(refused, 0);
  // Once answered, the places are free again.
  node.Send(R"({"type":"heartbeat","ref":"hb","load":1,"running":0})");
  std::string m = node.ReadUntil("\"ref\":\"hb\"");
  EXPECT_NE(m.find("\"status\":\"online\""), std::string::npos) << m;
}

TEST(SmartdPostgres, TasksOnPostgres) {
  std::string url = testing::FreshPostgresDatabase();
  ASSERT_FALSE(url.empty());
  Smartd s(TaskEnv({"SMART_DATABASE_URL=" + url}));
  ASSERT_NE(s.port(), 0);
  Network n = StartNetwork(s, "SMART_DATABASE_URL='" + url + "'");
  auto r = As(s.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"sha256","input":"abc","timeout_s":60})");
  ASSERT_EQ(r->status, 201) << r->body;
  std::string task = JsonField(r->body, "id");
  r = As(s.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({"max":1,"wait_s":1})");
  ASSERT_NE(r->body.find(task), std::string::npos) << r->body;
  const std::string abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  r = As(s.port(), "POST", "/api/v1/tasks/" + task + "/result", n.node_key,
         R"({"node_id":")" + n.node_id + R"(","lease":1,"output":"abc","proof_hash":")" + abc + R"("})");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Available(s.port(), n.op.access), "9022500");
  // A full batch is several multi-row statements: every task in the order asked.
  int64_t before = std::stoll(Available(s.port(), n.alice.access));
  std::string batch = R"({"tasks":[)";
  for (int i = 0; i < 100; ++i) {
    batch += (i ? "," : "") + std::string(R"({"type":"echo","input":"in-)") + std::to_string(i) + R"("})";
  }
  r = As(s.port(), "POST", "/api/v1/tasks/batch", n.alice.access, batch + "]}");
  ASSERT_EQ(r->status, 201) << r->body;
  std::regex id_re("\"id\":\"(task_[0-9A-Z]+)\"");
  std::vector<std::string> ids;
  for (std::sregex_iterator it(r->body.begin(), r->body.end(), id_re), end; it != end; ++it) ids.push_back((*it)[1]);
  ASSERT_EQ(ids.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    auto got = As(s.port(), "GET", "/api/v1/tasks/" + ids[static_cast<size_t>(i)], n.alice.access);
    ASSERT_EQ(got->status, 200) << got->body;
    EXPECT_EQ(JsonField(got->body, "input"), "in-" + std::to_string(i)) << "the tasks in the order asked";
  }
  EXPECT_EQ(std::stoll(Available(s.port(), n.alice.access)), before - 100 * 25'000);
}

// A node that attaches again on another instance while its old socket on the
// first still looks open (a reconnect through a load balancer): the new
// socket gets again what was sent to the old one, and the first instance
// ends the old socket at its next claim instead of pushing more to it.
TEST(SmartdPostgres, ANodeAttachedAgainOnAnotherInstanceIsNoLongerPushedWorkOnTheFirst) {
  std::string url = testing::FreshPostgresDatabase();
  ASSERT_FALSE(url.empty());
  auto env = TaskEnv({"SMART_DATABASE_URL=" + url});
  Smartd a(env), b(env);
  ASSERT_NE(a.port(), 0);
  ASSERT_NE(b.port(), 0);
  Network n = StartNetwork(a, "SMART_DATABASE_URL='" + url + "'");
  WsClient old(a.port(), "/api/v1/nodes/ws", n.node_key);
  ASSERT_NE(Hello(old, n, 2).find("\"welcome\""), std::string::npos);
  std::string first = SubmitEcho(a, n, "before the reconnect");
  ASSERT_NE(old.ReadUntil("\"type\":\"tasks\"").find(first), std::string::npos);
  // The new socket says it holds nothing and has room for one: what the old
  // one was sent comes again and fills it, so that only the old one may
  // claim the next task (neither instance's dispatcher races the other's).
  WsClient fresh(b.port(), "/api/v1/nodes/ws", n.node_key);
  ASSERT_NE(Hello(fresh, n, 1).find("\"welcome\""), std::string::npos);
  std::string m = fresh.ReadUntil("\"type\":\"tasks\"");
  ASSERT_NE(m.find(first), std::string::npos) << "sent again to the new socket: " << m;
  std::string second = SubmitEcho(a, n, "after the reconnect");
  m = old.Read();
  EXPECT_EQ(m.find(second), std::string::npos) << "pushed to the old socket: " << m;
  EXPECT_NE(m.find("node_reattached"), std::string::npos) << m;
  EXPECT_EQ(old.Read(), "");
  EXPECT_EQ(old.close_code(), 1008);
  fresh.Send(R"({"type":"credit","n":1})");
  m = fresh.ReadUntil("\"type\":\"tasks\"");
  EXPECT_NE(m.find(second), std::string::npos) << m;
}

// Several instances on one database and one Redis: a client's events come
// from every instance, with the same ids on each, and network_stats once a
// period, not once per instance.
TEST(SmartdPostgres, ClientEventsReachEveryInstanceThroughRedis) {
  testing::RedisServer redis;
  ASSERT_FALSE(redis.url().empty());
  std::string url = testing::FreshPostgresDatabase();
  ASSERT_FALSE(url.empty());
  auto env = TaskEnv({"SMART_DATABASE_URL=" + url, "SMART_AUTH_JWT_SECRET=" + std::string(40, 's'),
                      "SMART_REDIS_URL=" + redis.url(), "SMART_EVENTS_STATS_INTERVAL_S=1"});
  Smartd a(env), b(env);
  ASSERT_NE(a.port(), 0);
  ASSERT_NE(b.port(), 0);
  EXPECT_NE(a.proc().output().find("\"events\":\"redis\""), std::string::npos);
  Network n = StartNetwork(a, "SMART_DATABASE_URL='" + url + "'");
  WsClient watch(a.port(), "/api/v1/ws", n.alice.access);
  watch.Send(R"({"type":"subscribe","tasks":"own"})");
  ASSERT_NE(watch.Read().find("\"subscribed\""), std::string::npos);

  // Submitted, claimed and completed through b: a's client hears each step,
  // and a reader waiting on a for a change is answered when b makes it.
  auto r = As(b.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"sha256","input":"abc","timeout_s":60})");
  ASSERT_EQ(r->status, 201) << r->body;
  std::string task = JsonField(r->body, "id");
  std::string pending = watch.ReadUntil("\"status\":\"pending\"");
  ASSERT_NE(pending.find(task), std::string::npos) << pending;
  const std::string path = "/api/v1/tasks/" + task;
  r = As(a.port(), "GET", path, n.alice.access);
  std::string etag = r->Header("etag");
  std::optional<testing::HttpResponse> waited;
  auto asked = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration answered_after{};
  std::thread poll([&] {
    waited = As(a.port(), "GET", path, n.alice.access, "", "If-None-Match: " + etag + "\r\nPrefer: wait=20\r\n");
    answered_after = std::chrono::steady_clock::now() - asked;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  r = As(b.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({"max":1,"wait_s":1})");
  ASSERT_NE(r->body.find(task), std::string::npos) << r->body;
  poll.join();
  ASSERT_TRUE(waited);
  EXPECT_EQ(waited->status, 200) << waited->body;
  EXPECT_EQ(JsonField(waited->body, "status"), "assigned");
  EXPECT_LT(answered_after, std::chrono::seconds(5)) << "woken by b's change, not by its deadline";
  const std::string abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  r = As(b.port(), "POST", path + "/result", n.node_key,
         R"({"node_id":")" + n.node_id + R"(","lease":1,"output":"abc","proof_hash":")" + abc + R"("})");
  ASSERT_EQ(r->status, 200) << r->body;
  std::string done = watch.ReadUntil("\"status\":\"completed\"");
  ASSERT_NE(done.find(task), std::string::npos) << done;

  // A client resuming on b gets what it missed there, with the same ids.
  WsClient again(b.port(), "/api/v1/ws", n.alice.access);
  again.Send(R"({"type":"subscribe","tasks":"own"})");
  ASSERT_NE(again.Read().find("\"subscribed\""), std::string::npos);
  again.Send(R"({"type":"resume","last_event_id":)" + std::to_string(EventId(pending)) + "}");
  std::string first = again.Read();
  EXPECT_NE(first.find("\"status\":\"assigned\""), std::string::npos) << "no gap, the next step first: " << first;
  std::string replayed = again.ReadUntil("\"status\":\"completed\"");
  EXPECT_EQ(EventId(replayed), EventId(done));

  // Redis away: tasks go on (events wait for it), and the log says so.
  redis.Stop();
  r = As(b.port(), "POST", "/api/v1/tasks", n.alice.access, R"({"type":"echo","input":"while away","timeout_s":60})");
  ASSERT_EQ(r->status, 201) << r->body;
  std::string during = JsonField(r->body, "id");
  EXPECT_TRUE(b.proc().WaitForLine("sharing events through Redis failed", std::chrono::seconds(10)));
  EXPECT_NE(MetricsWith(b.port(), "smart_events_relay_up 0").find("smart_events_relay_up 0"), std::string::npos);
  // A read waiting on b for a change b makes is answered at once all the same.
  r = As(b.port(), "GET", "/api/v1/tasks/" + during, n.alice.access);
  etag = r->Header("etag");
  asked = std::chrono::steady_clock::now();
  std::thread away_poll([&] {
    waited = As(b.port(), "GET", "/api/v1/tasks/" + during, n.alice.access, "",
                "If-None-Match: " + etag + "\r\nPrefer: wait=20\r\n");
    answered_after = std::chrono::steady_clock::now() - asked;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  r = As(b.port(), "POST", "/api/v1/nodes/" + n.node_id + "/claim", n.node_key, R"({"max":1})");
  ASSERT_NE(r->body.find(during), std::string::npos) << r->body;
  away_poll.join();
  ASSERT_TRUE(waited);
  EXPECT_EQ(JsonField(waited->body, "status"), "assigned") << waited->body;
  EXPECT_LT(answered_after, std::chrono::seconds(5)) << "woken by b's own change, not by its deadline";
  ASSERT_TRUE(redis.Start());
  std::string late = watch.ReadUntil(during);
  EXPECT_NE(late.find("\"status\":\"pending\""), std::string::npos) << "sent once Redis is back: " << late;
  EXPECT_TRUE(b.proc().WaitForLine("sharing events through Redis again", std::chrono::seconds(10)));
  EXPECT_NE(MetricsWith(b.port(), "smart_events_relay_up 1").find("smart_events_relay_up 1"), std::string::npos);

  // network_stats: two instances, one event a second.
  WsClient stats(b.port(), "/api/v1/ws", n.alice.access);
  stats.Send(R"({"type":"subscribe","network_stats":true})");
  ASSERT_NE(stats.Read().find("\"subscribed\""), std::string::npos);
  stats.ReadUntil("network_stats");
  auto from = std::chrono::steady_clock::now();
  int heard = 0;
  while (std::chrono::steady_clock::now() - from < std::chrono::milliseconds(4500)) {
    if (stats.Read().find("\"network_stats\"") != std::string::npos) ++heard;
  }
  EXPECT_GE(heard, 3);
  EXPECT_LE(heard, 6) << "each instance publishing its own would be ~9";
}

}  // namespace
}  // namespace smart::itest
