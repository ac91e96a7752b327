// GET /api/v1/nodes/ws: a node's connection for pushed work.
//
// Authenticate with the upgrade's Authorization / X-API-Key header (a node
// credential, scope `nodes`) or with `token` in the first message, which must be
//   {"type":"hello","node_id":"node_…","credit":N,"holding":["task_…"]}
// answered by {"type":"welcome","node_id","heartbeat_s","max_batch"}. From then on the
// server pushes {"type":"tasks","tasks":[…]} the moment work exists for the
// node, never more than its credit (tasks it asked for and has not received);
// the node sends, each with an optional `ref` echoed in the answer and an
// optional `credit` to ask for more work:
//   {"type":"credit","n":K}
//   {"type":"heartbeat","load":0-100,"running":N}        -> {"type":"heartbeat","status"} if it has a ref
//   {"type":"start"|"progress"|"result"|"fail"|"release","task_id","lease",
//    "percent","message" | "output","proof_hash" | "error"} -> {"type":"ack","task_id","status"}
//   {"type":"batch","messages":[up to 256 of the five above]} -> {"type":"batch","ref","answers":[…]}
//     (one frame each way; each answer what its message alone would get, in order)
// A refused message answers {"type":"error","ref","task_id","code","detail"}
// (with or without a ref); an accepted heartbeat without a ref is not answered;
// a node that cannot take work (deactivated, not this operator's) is told so
// and closed with 1008. At most deps.node_max_unanswered heartbeats and lease
// messages may await their answers; past that each is refused (too_many_unanswered).
#include <atomic>
#include <boost/json.hpp>
#include <unordered_map>

#include "routes_internal.hpp"
#include "smart/events/bus.hpp"
#include "smart/metrics/metrics.hpp"
#include "smart/tasks/coordinator.hpp"

namespace smart::api {
namespace json = boost::json;
namespace {

constexpr size_t kMaxBatch = 256;  // lease messages in one batch
// Why a connection is closed that did not begin with a hello (in time: http.header_timeout_s).
constexpr std::string_view kSayHello = "say hello first: {\"type\":\"hello\",\"node_id\":\"...\"}";

struct NodeConn;

// The nodes attached on this instance, by node id: where the end of a task
// that a node runs, not of its doing (its owner cancelled it), is told.
class Attached {
 public:
  void Add(const std::string& node_id, const std::shared_ptr<NodeConn>& conn) {
    std::lock_guard lk(mu_);
    by_node_[node_id] = conn;
  }
  void Remove(const std::string& node_id, const NodeConn* conn) {
    std::lock_guard lk(mu_);
    auto it = by_node_.find(node_id);
    if (it != by_node_.end() && it->second.lock().get() == conn) by_node_.erase(it);  // not a newer connection
  }
  std::shared_ptr<NodeConn> Find(const std::string& node_id) {
    std::lock_guard lk(mu_);
    auto it = by_node_.find(node_id);
    return it == by_node_.end() ? nullptr : it->second.lock();
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::weak_ptr<NodeConn>> by_node_;
};

struct NodeConn {
  std::shared_ptr<Attached> attached;
  std::mutex mu;
  std::weak_ptr<http::WebSocket> ws;
  std::string operator_id;  // from the upgrade's credentials, else from hello
  uint64_t attachment = 0;  // 0 until hello
  std::string node_id;
  bool closed = false;
  // Heartbeats and lease messages handed to the coordinator and not yet
  // answered: bounded, so that one connection cannot queue unbounded work
  // for the writer that every node shares.
  std::atomic<int> unanswered{0};
};

void Send(const std::weak_ptr<http::WebSocket>& weak, const json::object& o) {
  auto ws = weak.lock();
  if (!ws) return;
  if (ws->Send(json::serialize(o)) == http::WebSocket::SendResult::kQueueFull) {
    ws->Close(http::close_code::kPolicyViolation, "slow consumer: answers were not read in time");
  }
}

json::object Problem(const json::value* ref, std::string_view task_id, std::string_view code, std::string detail) {
  json::object o{{"type", "error"}, {"code", code}, {"detail", std::move(detail)}};
  if (ref) o["ref"] = *ref;
  if (!task_id.empty()) o["task_id"] = task_id;
  return o;
}

// Takes a place for a message that will be answered; false (and the message
// refused through `answer`) when the connection has deps.node_max_unanswered
// waiting already.
template <class Answer>
bool TakePlace(const Deps& deps, NodeConn& conn, const json::value* ref, std::string_view task_id,
               const Answer& answer) {
  if (conn.unanswered.fetch_add(1) < deps.node_max_unanswered) return true;
  conn.unanswered.fetch_sub(1);
  answer(Problem(ref, task_id, "too_many_unanswered",
                 std::to_string(deps.node_max_unanswered) +
                     " messages of this connection await their answers; wait for some first"));
  return false;
}

// An integer field within [lo, hi], or nullopt.
std::optional<int64_t> IntField(const json::object& o, std::string_view name, int64_t lo, int64_t hi) {
  auto v = o.if_contains(name);
  if (!v || !v->is_int64()) return std::nullopt;
  int64_t n = v->as_int64();
  if (n < lo || n > hi) return std::nullopt;
  return n;
}

std::optional<std::string> StringField(const json::object& o, std::string_view name) {
  auto v = o.if_contains(name);
  if (!v || !v->is_string()) return std::nullopt;
  return std::string(v->as_string());
}

std::optional<tasks::LeaseOp::Kind> OpKind(std::string_view type) {
  using Kind = tasks::LeaseOp::Kind;
  if (type == "start") return Kind::kStart;
  if (type == "progress") return Kind::kProgress;
  if (type == "result") return Kind::kResult;
  if (type == "fail") return Kind::kFail;
  if (type == "release") return Kind::kRelease;
  return std::nullopt;
}

void Hello(const Deps& deps, const std::shared_ptr<NodeConn>& conn, const std::shared_ptr<http::WebSocket>& ws,
           const json::object& o) {
  std::string operator_id;
  {
    std::lock_guard lk(conn->mu);
    operator_id = conn->operator_id;
  }
  if (operator_id.empty()) {
    auto token = StringField(o, "token");
    auto who = token ? deps.auth.Authenticate(*token) : Result<auth::Principal>(Error::Unauthenticated("", ""));
    if (!who || !who->Has(auth::scope::kNodes)) {
      ws->Close(http::close_code::kPolicyViolation, "hello needs a node credential (scope nodes) as token");
      return;
    }
    operator_id = who->user_id;
  }
  auto node_id = StringField(o, "node_id");
  auto credit = o.contains("credit") ? IntField(o, "credit", 0, 1000) : std::optional<int64_t>(0);
  std::vector<std::string> holding;
  bool holding_ok = true;
  if (auto h = o.if_contains("holding")) {
    holding_ok = h->is_array() && h->as_array().size() <= 1000;
    if (holding_ok) {
      for (const auto& id : h->as_array()) {
        if (!id.is_string()) holding_ok = false;
        if (id.is_string()) holding.emplace_back(id.as_string());
      }
    }
  }
  if (!node_id || node_id->empty() || node_id->size() > 100 || !credit || !holding_ok) {
    ws->Send(
        json::serialize(Problem(nullptr, "", "invalid_message",
                                "hello: node_id (a string), credit (0 to 1000), holding (at most 1000 task ids)")));
    ws->Close(http::close_code::kPolicyViolation, "invalid hello");
    return;
  }
  std::weak_ptr<http::WebSocket> weak = ws;
  uint64_t attachment =
      deps.tasks.Attach(operator_id, *node_id, std::move(holding), [&deps, weak](Result<std::vector<tasks::Task>> r) {
        if (!r) {
          Send(weak, Problem(nullptr, "", r.error().code, r.error().message));
          if (auto ws = weak.lock()) ws->Close(http::close_code::kPolicyViolation, r.error().code);
          return;
        }
        if (r->empty()) return;
        json::array items;
        for (const auto& t : *r) items.push_back(TaskJson(deps, t, true));
        Send(weak, {{"type", "tasks"}, {"tasks", std::move(items)}});
      });
  {
    std::lock_guard lk(conn->mu);
    conn->operator_id = operator_id;
    conn->node_id = *node_id;
    conn->attachment = attachment;
    if (conn->closed) {  // closed meanwhile: on_close found nothing to detach
      deps.tasks.Detach(attachment);
      return;
    }
  }
  conn->attached->Add(*node_id, conn);
  ws->Admit();
  ws->Send(json::serialize(json::object{{"type", "welcome"},
                                        {"node_id", *node_id},
                                        {"heartbeat_s", deps.tasks.config().heartbeat_s},
                                        {"max_batch", kMaxBatch}}));
  if (*credit > 0) deps.tasks.Credit(attachment, static_cast<int>(*credit));
}

using Answer = std::function<void(json::object)>;

// A message's optional credit (more work wanted); false, and the message
// refused through `answer`, when it is out of range.
template <class AnswerFn>
bool AddCredit(const Deps& deps, uint64_t attachment, const json::object& o, const AnswerFn& answer) {
  if (!o.contains("credit")) return true;
  auto credit = IntField(o, "credit", 0, 1000);
  if (!credit) {
    answer(Problem(o.if_contains("ref"), "", "invalid_message", "credit: 0 to 1000"));
    return false;
  }
  deps.tasks.Credit(attachment, static_cast<int>(*credit));
  return true;
}

// A lease message (start, progress, result, fail, release): `answer` gets
// exactly one ack or error for it, maybe on the committer's thread.
void LeaseMessage(const Deps& deps, const std::shared_ptr<NodeConn>& conn, const json::object& o,
                  tasks::LeaseOp::Kind kind, const std::string& operator_id, const std::string& node_id,
                  Answer answer) {
  const json::value* ref = o.if_contains("ref");
  const std::string_view type = o.at("type").as_string();
  tasks::LeaseOp op{.kind = kind};
  auto task_id = StringField(o, "task_id");
  auto lease = IntField(o, "lease", 1, 1'000'000);
  if (!task_id || !lease) {
    return answer(Problem(ref, task_id.value_or(""), "invalid_message", "task_id and lease are required"));
  }
  op.task_id = *task_id;
  op.lease = static_cast<int>(*lease);
  std::string missing;
  if (kind == tasks::LeaseOp::Kind::kProgress) {
    auto percent = IntField(o, "percent", -1000, 1000);  // the range is the coordinator's to check
    if (!percent) missing = "percent (an integer)";
    op.percent = static_cast<int>(percent.value_or(0));
    op.message = StringField(o, "message").value_or("");
  } else if (kind == tasks::LeaseOp::Kind::kResult) {
    auto output = StringField(o, "output"), proof = StringField(o, "proof_hash");
    if (!output || !proof) missing = "output and proof_hash (strings)";
    op.output = output.value_or("");
    op.proof_hash = proof.value_or("");
  } else if (kind == tasks::LeaseOp::Kind::kFail) {
    auto error = StringField(o, "error");
    if (!error) missing = "error (a string)";
    op.error = error.value_or("");
  }
  if (!missing.empty()) {
    return answer(Problem(ref, op.task_id, "invalid_message", std::string(type) + " needs " + missing));
  }
  json::value echo = ref ? *ref : json::value(nullptr);
  if (!TakePlace(deps, *conn, ref, op.task_id, answer)) return;
  deps.tasks.Apply(operator_id, node_id, std::move(op),
                   [echo, conn, id = *task_id, answer = std::move(answer)](Result<tasks::Task> t) {
                     conn->unanswered.fetch_sub(1);
                     if (!t) return answer(Problem(&echo, id, t.error().code, t.error().message));
                     answer({{"type", "ack"}, {"ref", echo}, {"task_id", t->id}, {"status", t->status}});
                   });
}

// {"type":"batch","messages":[...]}: up to kMaxBatch lease messages in one
// frame, answered by one {"type":"batch","answers":[...]} once all are, each
// answer what its message alone would have got, in the messages' order.
void Batch(const Deps& deps, const std::shared_ptr<NodeConn>& conn, const std::shared_ptr<http::WebSocket>& ws,
           const json::object& o, uint64_t attachment, const std::string& operator_id, const std::string& node_id) {
  const json::value* ref = o.if_contains("ref");
  const json::value* messages = o.if_contains("messages");
  if (!messages || !messages->is_array() || messages->as_array().empty() || messages->as_array().size() > kMaxBatch) {
    ws->Send(json::serialize(Problem(ref, "", "invalid_message",
                                     "batch: messages, an array of 1 to " + std::to_string(kMaxBatch) +
                                         " start, progress, result, fail or release messages")));
    return;
  }
  const json::array& list = messages->as_array();
  struct Answers {
    std::mutex mu;
    json::array answers;
    size_t left = 0;
  };
  auto all = std::make_shared<Answers>();
  all->answers.resize(list.size());
  all->left = list.size();
  std::weak_ptr<http::WebSocket> weak = ws;
  json::value echo = ref ? *ref : json::value(nullptr);
  for (size_t i = 0; i < list.size(); ++i) {
    Answer answer = [all, i, weak, echo](json::object a) {
      json::array done;
      {
        std::lock_guard lk(all->mu);
        all->answers[i] = std::move(a);
        if (--all->left > 0) return;
        done = std::move(all->answers);
      }
      json::object out{{"type", "batch"}, {"answers", std::move(done)}};
      if (!echo.is_null()) out["ref"] = echo;
      Send(weak, out);
    };
    const json::value& m = list[i];
    const json::object* item = m.if_object();
    const json::value* type = item ? item->if_contains("type") : nullptr;
    auto kind = type && type->is_string() ? OpKind(type->as_string()) : std::nullopt;
    if (!kind) {
      answer(Problem(item ? item->if_contains("ref") : nullptr, "", "unknown_type",
                     "a batch carries start, progress, result, fail or release messages"));
      continue;
    }
    if (!AddCredit(deps, attachment, *item, answer)) continue;
    LeaseMessage(deps, conn, *item, *kind, operator_id, node_id, std::move(answer));
  }
}

void OnMessage(const Deps& deps, const std::shared_ptr<NodeConn>& conn, std::string_view message) {
  auto ws = conn->ws.lock();
  if (!ws) return;
  uint64_t attachment;
  std::string operator_id, node_id;
  {
    std::lock_guard lk(conn->mu);
    attachment = conn->attachment;
    operator_id = conn->operator_id;
    node_id = conn->node_id;
  }
  boost::system::error_code ec;
  auto v = json::parse(message, ec);
  bool typed = !ec && v.is_object() && v.as_object().contains("type") && v.as_object().at("type").is_string();
  if (attachment == 0 && (!typed || v.as_object().at("type").as_string() != "hello")) {
    ws->Close(http::close_code::kPolicyViolation, std::string(kSayHello));
    return;
  }
  if (!typed) {
    ws->Send(json::serialize(Problem(nullptr, "", "invalid_message", "send a JSON object with a type")));
    return;
  }
  const auto& o = v.as_object();
  std::string type(o.at("type").as_string());
  const json::value* ref = o.if_contains("ref");
  if (attachment == 0) return Hello(deps, conn, ws, o);
  auto direct = [&ws](const json::object& a) { ws->Send(json::serialize(a)); };
  if (!AddCredit(deps, attachment, o, direct)) return;
  std::weak_ptr<http::WebSocket> weak = ws;
  if (type == "credit") {
    auto n = IntField(o, "n", 1, 1000);
    if (!n) {
      ws->Send(json::serialize(Problem(ref, "", "invalid_message", "n: 1 to 1000")));
      return;
    }
    deps.tasks.Credit(attachment, static_cast<int>(*n));
    return;
  }
  if (type == "heartbeat") {
    auto load = IntField(o, "load", 0, 100), running = IntField(o, "running", 0, 10000);
    if ((o.contains("load") && !load) || (o.contains("running") && !running)) {
      ws->Send(json::serialize(Problem(ref, "", "invalid_message", "heartbeat: load 0 to 100, running 0 to 10000")));
      return;
    }
    // Answered only when asked (a ref): 10,000 nodes beating need no 2,000 replies a second.
    std::optional<json::value> echo;
    if (ref) echo = *ref;
    if (!TakePlace(deps, *conn, ref, "", direct)) return;
    deps.tasks.HeartbeatAsync(
        operator_id, node_id, static_cast<int>(load.value_or(0)), static_cast<int>(running.value_or(0)),
        echo ? tasks::Coordinator::BeatAnswer::kAwaited : tasks::Coordinator::BeatAnswer::kUnawaited,
        [weak, echo, conn](Result<std::string> status) {
          conn->unanswered.fetch_sub(1);
          if (!status)
            return Send(weak, Problem(echo ? &*echo : nullptr, "", status.error().code, status.error().message));
          if (echo) Send(weak, {{"type", "heartbeat"}, {"ref", *echo}, {"status", *status}});
        });
    return;
  }
  if (type == "batch") return Batch(deps, conn, ws, o, attachment, operator_id, node_id);
  auto kind = OpKind(type);
  if (!kind) {
    ws->Send(json::serialize(
        Problem(ref, "", "unknown_type", "credit, heartbeat, start, progress, result, fail, release or batch")));
    return;
  }
  std::weak_ptr<http::WebSocket> answer_to = ws;
  LeaseMessage(deps, conn, o, *kind, operator_id, node_id, [answer_to](json::object a) { Send(answer_to, a); });
}

}  // namespace

void RegisterNodeSocket(http::Router& router, const Deps& deps) {
  auto* connections =
      &deps.registry.AddGauge("smart_ws_node_connections", "Node WebSockets (/api/v1/nodes/ws) open now.")
           .WithLabels({});
  // A task cancelled while a node attached here runs it: the node is told at
  // once (it can stop the work; a report would be refused, lease_stale).
  // Every instance's cancellations, with redis.url.
  auto attached = std::make_shared<Attached>();
  deps.bus.SubscribeOwn([attached](const events::Event& e) {
    if (e.type != "task_update" || e.data.find(R"("status":"cancelled")") == std::string::npos) return;
    boost::system::error_code ec;
    auto v = json::parse(e.data, ec);
    const json::value* node = !ec && v.is_object() ? v.as_object().if_contains("node_id") : nullptr;
    if (!node || !node->is_string()) return;  // it was not running
    auto conn = attached->Find(std::string(node->as_string()));
    if (!conn) return;
    std::weak_ptr<http::WebSocket> ws;
    {
      std::lock_guard lk(conn->mu);
      ws = conn->ws;
    }
    Send(ws, {{"type", "cancelled"}, {"task_id", e.subject}});
  });
  router.AddWebSocket("/api/v1/nodes/ws", [&deps, connections, attached](http::Request& req,
                                                                         std::shared_ptr<http::WebSocket> ws) {
    auto conn = std::make_shared<NodeConn>();
    conn->attached = attached;
    conn->ws = ws;
    if (HasCredentials(req)) {
      auto who = Authenticate(deps, req);
      if (!who) return http::WsAccept{.reject = Unauthorized(req, who.error())};
      if (!who->Has(auth::scope::kNodes)) {
        return http::WsAccept{.reject = http::MakeProblem(req, {.status = 403,
                                                                .code = "insufficient_scope",
                                                                .detail = "The node socket needs the scope nodes."})};
      }
      conn->operator_id = who->user_id;
    }
    http::WsCallbacks callbacks;
    callbacks.on_message = [&deps, conn](std::string_view message) { OnMessage(deps, conn, message); };
    connections->Add(1);
    callbacks.on_close = [&deps, connections, conn](uint16_t) {
      connections->Add(-1);
      std::lock_guard lk(conn->mu);
      conn->closed = true;
      if (conn->attachment != 0) {
        deps.tasks.Detach(conn->attachment);
        conn->attached->Remove(conn->node_id, conn.get());
      }
    };
    return http::WsAccept{.callbacks = std::move(callbacks), .admit_or_close = std::string(kSayHello)};
  });
}

}  // namespace smart::api
