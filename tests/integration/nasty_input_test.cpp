// Every route the OpenAPI document names, fed malformed bodies, wrong-typed
// fields and odd query strings: each answer is below 500, and each refusal
// is a problem document with a code; the server stays ready and the ledger
// verifies afterwards. A route added later is covered without a change here.
#include <boost/json.hpp>
#include <string>
#include <vector>

#include "harness.hpp"

namespace smart::itest {
namespace {

namespace json = boost::json;

// Bodies that are not what any route takes, each small enough to be read whole.
std::vector<std::string> RawBodies() {
  return {"",
          "null",
          "[]",
          "{}",
          "{",
          "\"text\"",
          "1e999",
          "\xff\xfe{}",
          std::string(5000, '[') + std::string(5000, ']'),
          R"({"a":1,"a":2})",
          R"({"x":"\ud800"})",
          "{\"x\":\"\xc3\x28\"}",
          std::string(R"({"x":")") + std::string(300 * 1024, 'x') + "\"}"};
}

// Values of every JSON type and edge: what a field's handler must refuse or take exactly.
std::vector<std::string> OddValues() {
  return {"null",
          "true",
          "-1",
          "0",
          "1.5",
          "1e308",
          "18446744073709551616",
          "-9223372036854775809",
          R"("")",
          "\"" + std::string(70000, 'y') + "\"",
          "[]",
          "[[[[[[[[1]]]]]]]]",
          "{}",
          R"("\u0000")",
          R"("-1")",
          R"("1e400")",
          R"("99999999999999999999999999999999999999999")",
          R"({"$gt":""})"};
}

const json::object* Resolve(const json::object& doc, const json::value* schema) {
  if (!schema || !schema->is_object()) return nullptr;
  const auto& o = schema->as_object();
  auto ref = o.if_contains("$ref");
  if (!ref || !ref->is_string()) return &o;
  std::string_view path = ref->as_string();  // "#/components/schemas/Name"
  auto name = path.substr(path.rfind('/') + 1);
  const auto* schemas = doc.at("components").as_object().at("schemas").as_object().if_contains(name);
  return schemas && schemas->is_object() ? &schemas->as_object() : nullptr;
}

// The properties of a route's JSON body, if its document says.
std::vector<std::string> BodyFields(const json::object& doc, const json::object& op) {
  std::vector<std::string> out;
  const auto* body = op.if_contains("requestBody");
  if (!body || !body->is_object()) return out;
  const auto* content = body->as_object().if_contains("content");
  if (!content || !content->is_object()) return out;
  const auto* media = content->as_object().if_contains("application/json");
  if (!media || !media->is_object()) return out;
  const auto* schema = Resolve(doc, media->as_object().if_contains("schema"));
  if (!schema) return out;
  if (const auto* props = schema->if_contains("properties"); props && props->is_object()) {
    for (const auto& kv : props->as_object()) out.emplace_back(kv.key());
  }
  return out;
}

// Mint and burn answer instead of refusing outright.
std::vector<std::string> FaucetEnv() {
  std::vector<std::string> env = kFastAuth;
  env.push_back("SMART_LEDGER_DEV_FAUCET=true");
  return env;
}

// An admin with funds, a node of theirs and a task of theirs: real ids for the routes that take one.
struct World {
  Session root;
  std::string node, task;
};
World MakeWorld(Smartd& s) {
  World w{CreateAdmin(s, "root@example.com"), "", ""};
  auto r = As(s.port(), "POST", "/api/v1/admin/mint", w.root.access,
              R"({"user":"root@example.com","asset":"USDC","amount":"100000000"})", "Idempotency-Key: fund\r\n");
  EXPECT_EQ(r->status, 201) << r->body;
  r = As(s.port(), "POST", "/api/v1/nodes/register", w.root.access, R"({"name":"box","capabilities":["echo"]})");
  EXPECT_EQ(r->status, 201) << r->body;
  w.node = JsonField(r->body, "id");
  r = As(s.port(), "POST", "/api/v1/tasks", w.root.access, R"({"type":"echo","input":"hi"})");
  EXPECT_EQ(r->status, 201) << r->body;
  w.task = JsonField(r->body, "id");
  return w;
}

TEST(Smartd, EveryDocumentedRouteAnswersOddInputWithAProblemNeverA5xx) {
  Smartd s(FaucetEnv());
  ASSERT_NE(s.port(), 0);
  const World w = MakeWorld(s);
  const Session& root = w.root;
  const std::string &node = w.node, &task = w.task;
  const std::string user = JsonField(As(s.port(), "GET", "/api/v1/user/profile", root.access)->body, "id");
  ASSERT_FALSE(user.empty());

  auto spec = testing::Request(s.port(), "GET", "/openapi.json");
  ASSERT_TRUE(spec && spec->status == 200);
  const json::object doc = json::parse(spec->body).as_object();

  // A path's parameters: the real task, node and user where the route names
  // one (so that the handlers get past their lookups), a stranger elsewhere.
  auto concrete = [&](std::string path) {
    for (auto [name, value] : {std::pair<std::string, std::string>{"/tasks/{id}", "/tasks/" + task},
                               {"/nodes/{id}", "/nodes/" + node},
                               {"/admin/users/{id}", "/admin/users/" + user},
                               {"{asset}", "USDC"},
                               {"{holder}", user},
                               {"{id}", "key_01ARZ3NDEKTSV4RRFFQ69G5FAV"}}) {
      for (auto at = path.find(name); at != std::string::npos; at = path.find(name))
        path.replace(at, name.size(), value);
    }
    return path;
  };
  int checked = 0, with_fields = 0;
  auto check = [&](const std::string& method, const std::string& target, const std::string& body) {
    auto res = testing::Request(s.port(), method, target, body,
                                "Authorization: Bearer " + root.access + "\r\nContent-Type: application/json\r\n");
    ++checked;
    ASSERT_TRUE(res) << method << " " << target << " " << body.substr(0, 80) << ": no answer";
    EXPECT_LT(res->status, 500) << method << " " << target << " " << body.substr(0, 80) << " -> "
                                << res->body.substr(0, 300);
    if (res->status >= 400) {
      EXPECT_EQ(res->Header("content-type"), "application/problem+json")
          << method << " " << target << " " << body.substr(0, 80) << " -> " << res->status;
      EXPECT_NE(res->body.find("\"code\":\""), std::string::npos)
          << method << " " << target << " " << body.substr(0, 80) << " -> " << res->body.substr(0, 300);
    }
  };
  const std::vector<std::string> queries = {
      "limit=-1",   "limit=99999999999999999999",       "limit=abc",  "limit=",
      "cursor=%00", "cursor=" + std::string(5000, 'c'), "status=%ff", "type=%00&type=x",
      "&&==&"};
  for (const auto& [path, item] : doc.at("paths").as_object()) {
    const std::string target = concrete(std::string(path));
    if (target.ends_with("/ws")) continue;  // WebSocket upgrades: tests/integration/events_test.cpp
    for (const auto& [method, op] : item.as_object()) {
      std::string m(method);
      for (auto& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (m == "GET") {
        for (const auto& q : queries) check("GET", target + "?" + q, "");
        continue;
      }
      if (m != "POST" && m != "PATCH" && m != "PUT" && m != "DELETE") continue;
      if (target == "/api/v1/auth/logout") continue;  // would end the session the others use
      for (const auto& body : RawBodies()) check(m, target, body);
      auto fields = BodyFields(doc, op.as_object());
      with_fields += fields.empty() ? 0 : 1;
      for (const auto& field : fields) {
        for (const auto& value : OddValues()) check(m, target, "{\"" + field + "\":" + value + "}");
      }
    }
  }
  EXPECT_GT(with_fields, 15) << "the OpenAPI document's request bodies were not found";
  EXPECT_GT(checked, 1000);
  // Nothing broke on the way: still ready, and every transfer made verifies.
  auto r = testing::Request(s.port(), "GET", "/ready");
  EXPECT_EQ(r->status, 200);
  auto [code, out] = testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", s.data_dir()});
  EXPECT_EQ(code, 0) << out;
}

// The two WebSockets, fed every message type with each field odd: every
// message is answered (an error or an ack) and the connection stays usable;
// a connection refused for its first message is closed with 1008.
TEST(Smartd, BothWebSocketsAnswerOddMessagesAndStayOpen) {
  Smartd s(FaucetEnv());
  ASSERT_NE(s.port(), 0);
  const World w = MakeWorld(s);
  const Session& root = w.root;
  const std::string &node = w.node, &task = w.task;
  const std::string hello = R"({"type":"hello","node_id":")" + node + R"(","credit":1})";

  // Not a message at all: before the hello it closes the connection with
  // 1008 (a hello comes first), after it each is answered.
  const std::vector<std::string> raw = {"",
                                        "null",
                                        "[]",
                                        "{}",
                                        "{",
                                        "\"x\"",
                                        "1e999",
                                        R"({"type":1})",
                                        R"({"type":null})",
                                        std::string(3000, '[') + std::string(3000, ']')};
  for (const auto& m : raw) {
    WsClient first(s.port(), "/api/v1/nodes/ws", root.access);
    first.Send(m);
    while (!first.Read().empty()) {
    }
    EXPECT_EQ(first.close_code(), 1008) << m.substr(0, 40);
  }
  {
    WsClient ws(s.port(), "/api/v1/nodes/ws", root.access);
    ws.Send(hello);
    ASSERT_NE(ws.ReadUntil("\"type\":\"welcome\"").find(node), std::string::npos);
    int sent = 0;
    auto odd = [&](const std::string& m) {
      ws.Send(m);
      ++sent;
    };
    for (const auto& m : raw) odd(m);
    const std::vector<std::pair<std::string, std::vector<std::string>>> types = {
        {"credit", {"n"}},
        {"heartbeat", {"load", "running", "ref"}},
        {"start", {"task_id", "lease", "ref", "credit"}},
        {"progress", {"task_id", "lease", "percent", "message"}},
        {"result", {"task_id", "lease", "output", "proof_hash"}},
        {"fail", {"task_id", "lease", "error"}},
        {"release", {"task_id", "lease"}},
        {"batch", {"messages", "ref"}}};
    for (const auto& [type, fields] : types) {
      for (const auto& field : fields) {
        for (const auto& value : OddValues()) {
          std::string m = R"({"type":")" + type + R"(","task_id":")" + task + R"(","lease":1)";
          odd(m + ",\"" + field + "\":" + value + "}");
        }
      }
    }
    for (const auto& value : OddValues()) odd(R"({"type":"batch","messages":[)" + value + R"(,{"type":"batch"}]})");
    // Still open and answering, after all that.
    ws.Send(R"({"type":"heartbeat","ref":"still-here"})");
    EXPECT_NE(ws.ReadUntil("\"ref\":\"still-here\"", sent + 100), "") << "after " << sent << " odd messages";
    EXPECT_EQ(ws.close_code(), 0);
  }

  // The client socket: a refused first message closes with 1008; after auth,
  // odd subscriptions and resumes are answered and the connection stays open
  // (in rounds under its message budget: 10 a second, bursts of 20).
  for (const auto& m : raw) {
    WsClient first(s.port(), "/api/v1/ws", "");
    first.Send(m);
    while (!first.Read().empty()) {
    }
    EXPECT_EQ(first.close_code(), 1008) << m.substr(0, 40);
  }
  std::vector<std::string> messages;
  for (const auto& [type, fields] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"auth", {"token"}},
           {"subscribe", {"tasks", "task_ids", "network_stats", "nodes"}},
           {"unsubscribe", {"tasks", "task_ids"}},
           {"resume", {"last_event_id"}}}) {
    for (const auto& field : fields) {
      for (const auto& value : OddValues())
        messages.push_back(R"({"type":")" + type + R"(",")" + field + "\":" + value + "}");
    }
  }
  for (const auto& m : raw) messages.push_back(m);
  for (size_t from = 0; from < messages.size(); from += 15) {
    WsClient ws(s.port(), "/api/v1/ws", root.access);
    for (size_t i = from; i < std::min(messages.size(), from + 15); ++i) ws.Send(messages[i]);
    ws.Send(R"({"type":"subscribe","tasks":"own"})");
    EXPECT_NE(ws.ReadUntil("\"type\":\"subscribed\"", 40), "") << "after " << messages[from].substr(0, 60);
    EXPECT_EQ(ws.close_code(), 0);
  }
  // A text frame that is not UTF-8 fails the connection (RFC 6455: 1007), on either socket.
  for (const char* target : {"/api/v1/nodes/ws", "/api/v1/ws"}) {
    WsClient ws(s.port(), target, root.access);
    ws.Send("\xff\xfe");
    while (!ws.Read().empty()) {
    }
    EXPECT_EQ(ws.close_code(), 1007) << target;
  }
  auto r = testing::Request(s.port(), "GET", "/ready");
  EXPECT_EQ(r->status, 200);
}

}  // namespace
}  // namespace smart::itest
