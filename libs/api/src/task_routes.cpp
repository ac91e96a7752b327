// Tasks (submit, read, cancel, estimate), nodes (register, heartbeat, claim,
// deactivate, read), the leased task operations, and the admin settings.
#include <array>
#include <boost/json.hpp>
#include <charconv>
#include <map>
#include <mutex>

#include "json_body.hpp"
#include "routes_internal.hpp"
#include "smart/core/crypto.hpp"
#include "smart/core/json_text.hpp"
#include "smart/events/bus.hpp"
#include "smart/tasks/coordinator.hpp"

namespace smart::api {
namespace json = boost::json;
namespace {

json::value TimeOrNull(int64_t ms) { return ms > 0 ? json::value(FormatTimestampMs(ms)) : json::value(nullptr); }
json::value TextOrNull(const std::string& s) { return s.empty() ? json::value(nullptr) : json::value(s); }

std::string Display(const Deps& deps, const std::string& asset, ledger::Amount a) {
  const ledger::Asset* info = deps.ledger.FindAsset(asset);
  return ledger::DisplayAmount(a, info ? info->decimals : 0, asset);
}

}  // namespace

json::object TaskJson(const Deps& deps, const tasks::Task& t, bool full) {
  json::object o{
      {"id", t.id},
      {"type", t.type},
      {"status", t.status},
      {"priority", std::string(tasks::ToString(t.priority))},
      {"asset", t.asset},
      {"cost", ledger::FormatAmount(t.cost)},
      {"display", Display(deps, t.asset, t.cost)},
      {"max_cost", t.max_cost ? json::value(ledger::FormatAmount(*t.max_cost)) : json::value(nullptr)},
      {"timeout_s", t.timeout_s},
      {"max_attempts", t.max_attempts},
      {"attempt", t.attempt},
      {"failures", t.failures},
      {"node_id", TextOrNull(t.node_id)},
      {"lease", t.status == "assigned" || t.status == "in_progress" ? json::value(t.attempt) : json::value(nullptr)},
      {"lease_expires_at", TimeOrNull(t.lease_expires_ms)},
      {"progress", t.progress},
      {"progress_message", t.progress_message},
      {"error", TextOrNull(t.error)},
      {"proof_hash", TextOrNull(t.proof_hash)},
      {"created_at", FormatTimestampMs(t.created_ms)},
      {"updated_at", FormatTimestampMs(t.updated_ms)},
      {"completed_at", TimeOrNull(t.completed_ms)},
      {"not_before", TimeOrNull(t.not_before_ms)},
      {"deadline", TimeOrNull(t.deadline_ms)},
      {"retries", t.retries},
      {"replicas", t.replicas},
      {"parent_id", TextOrNull(t.parent_id)},
  };
  if (full) {
    boost::system::error_code ec;
    json::value input(t.input);
    if (t.input_is_json) {
      auto parsed = json::parse(t.input, ec);
      if (!ec) input = std::move(parsed);
    }
    o["input"] = std::move(input);
    auto params = json::parse(t.parameters, ec);
    o["parameters"] = ec ? json::value(json::object{}) : std::move(params);
    o["output"] = t.status == "completed" ? json::value(t.output) : json::value(nullptr);
  }
  return o;
}

namespace {

json::object NodeJson(const Deps& deps, const tasks::Node& n) {
  json::array caps;
  for (const auto& c : n.capabilities) caps.emplace_back(c);
  boost::system::error_code ec;
  auto hardware = json::parse(n.hardware, ec);
  return json::object{
      {"id", n.id},
      {"name", n.name},
      {"operator_id", n.operator_id},
      {"status", n.status},
      {"capabilities", std::move(caps)},
      {"capacity", n.capacity},
      {"hardware", ec ? json::value(json::object{}) : std::move(hardware)},
      {"endpoint", TextOrNull(n.endpoint)},
      {"reputation", n.reputation},
      {"stake", ledger::FormatAmount(n.stake)},
      {"slashed", ledger::FormatAmount(n.slashed)},
      {"asset", deps.tasks.config().asset},
      {"load", n.load},
      {"running", n.running},
      {"assigned", n.assigned},
      {"completed", n.completed},
      {"failed", n.failed},
      {"timed_out", n.timed_out},
      {"last_heartbeat_at", TimeOrNull(n.last_heartbeat_ms)},
      {"created_at", FormatTimestampMs(n.created_ms)},
      {"heartbeat_s", deps.tasks.config().heartbeat_s},
  };
}

json::object TaskPageJson(const Deps& deps, const Page<tasks::Task>& page) {
  json::array items;
  for (const auto& t : page.items) items.push_back(TaskJson(deps, t, false));
  json::object o{{"items", std::move(items)}};
  o["next_cursor"] = page.next_cursor ? json::value(*page.next_cursor) : json::value(nullptr);
  return o;
}

json::object SettingsJson(const tasks::Settings& s) {
  return json::object{{"paused", s.paused},
                      {"min_stake", ledger::FormatAmount(s.min_stake)},
                      {"max_tasks_per_node", s.max_tasks_per_node},
                      {"min_timeout_s", s.min_timeout_s},
                      {"max_timeout_s", s.max_timeout_s}};
}

http::Response Json(int status, const json::object& o) { return http::Response::Json(status, json::serialize(o)); }

// insufficient_funds is 402 here: paying is what the caller must do.
http::Response TaskError(const http::Request& req, const Error& e) {
  if (e.code == "insufficient_funds") {
    return http::MakeProblem(req, {.status = 402, .code = e.code, .detail = e.message});
  }
  if (e.code == "input_too_large") return http::MakeProblem(req, {.status = 413, .code = e.code, .detail = e.message});
  if (e.code == "submissions_paused") {
    auto res = http::MakeProblem(req, {.status = 503, .code = e.code, .detail = e.message});
    res.headers.Add("Retry-After", "60");
    return res;
  }
  return ErrorResponse(req, e);
}

// The optional Idempotency-Key of a submission.
std::optional<std::string> OptionalKey(const http::Request& req, std::optional<http::Response>* bad) {
  auto key = req.headers.Get("Idempotency-Key");
  if (!key) return std::nullopt;
  bool ok = !key->empty() && key->size() <= 200;
  for (unsigned char c : *key) ok = ok && c > 0x20 && c < 0x7f;
  if (!ok) {
    *bad = http::MakeProblem(req, {.status = 400,
                                   .code = "invalid_idempotency_key",
                                   .detail = "Idempotency-Key: 1 to 200 visible ASCII characters"});
  }
  return std::string(*key);
}

constexpr std::array<std::string_view, 10> kSubmitFields = {"type",     "input",     "parameters",   "priority",
                                                            "max_cost", "timeout_s", "max_attempts", "not_before",
                                                            "deadline", "replicas"};

// A submission's fields (problems are left in `f`).
tasks::SubmitRequest ReadSubmit(FieldReader& f, const auth::Principal& who) {
  tasks::SubmitRequest s;
  auto type = f.String("type", true);
  auto params = f.Object("parameters", false, 64 * 1024);
  auto priority = f.String("priority", false);
  auto max_cost = f.Amount("max_cost", false);
  auto timeout = f.Int("timeout_s", false, 1, 86400);
  auto attempts = f.Int("max_attempts", false, 1, 10);
  auto not_before = f.Timestamp("not_before", false), deadline = f.Timestamp("deadline", false);
  auto replicas = f.Int("replicas", false, 2, 3);
  const json::value* input = f.object().if_contains("input");
  if (!input || input->is_null()) {
    f.Add({f.prefix() + "input", "is required"});
  } else if (input->is_string()) {
    s.input = std::string(input->as_string());
  } else {
    s.input = json::serialize(*input);
    s.input_is_json = true;
  }
  if (priority && !tasks::ParsePriority(*priority)) f.Add({f.prefix() + "priority", "low, normal, high or urgent"});
  if (type) s.type = *type;
  if (params) s.parameters = *params;
  if (priority && tasks::ParsePriority(*priority)) s.priority = *tasks::ParsePriority(*priority);
  s.max_cost = max_cost;
  s.timeout_s = timeout;
  if (attempts) s.max_attempts = static_cast<int>(*attempts);
  if (not_before) s.not_before_ms = *not_before * 1000;
  if (deadline) s.deadline_ms = *deadline * 1000;
  if (replicas) s.replicas = static_cast<int>(*replicas);
  // Fair queueing shares follow the rate-limit tier.
  s.weight = who.tier == "pro" ? 4 : who.tier == "free" ? 1 : 2;
  return s;
}

// {node_id, lease} of the leased operations.
struct LeaseRef {
  std::string node_id;
  int lease = 0;
};

// GET /tasks/{id} asked to wait for a change (If-None-Match + Prefer: wait):
// the requests waiting (answered later: no thread waits), by task id; a
// task_update event answers those of its task.
struct TaskWatch {
  static constexpr size_t kMaxWaiting = 10'000;  // beyond it a read answers at once
  std::mutex mu;
  struct Waiter {
    uint64_t token;
    http::Reply reply;
    std::function<http::Response()> respond;  // reads the task again and answers
  };
  std::multimap<std::string, Waiter, std::less<>> waiting;  // by task id
  uint64_t next_token = 1;

  // Takes back the waiter `token` of `id`, if it is still there.
  void Forget(const std::string& id, uint64_t token) {
    std::lock_guard lk(mu);
    auto [from, to] = waiting.equal_range(id);
    for (auto it = from; it != to; ++it) {
      if (it->second.token == token) {
        waiting.erase(it);
        return;
      }
    }
  }
};

// The task with its history, as GET /tasks/{id} answers it.
Result<std::string> TaskDocument(const Deps& deps, const std::string& user, std::string_view id) {
  std::vector<tasks::TaskEvent> events;
  auto t = deps.tasks.Get(user, id, &events);
  if (!t) return t.take_error();
  auto o = TaskJson(deps, *t, true);
  json::array history;
  for (const auto& e : events) {
    boost::system::error_code ec;
    auto detail = json::parse(e.detail, ec);
    history.push_back(json::object{{"seq", e.seq},
                                   {"at", FormatTimestampMs(e.ts_ms)},
                                   {"status", e.status},
                                   {"node_id", TextOrNull(e.node_id)},
                                   {"detail", ec ? json::value(json::object{}) : std::move(detail)}});
  }
  o["events"] = std::move(history);
  return json::serialize(o);
}

std::string ETagOf(std::string_view body) {
  std::string etag = "\"";
  etag += std::string_view(crypto::Sha256Hex(body)).substr(0, 32);
  etag += '"';
  return etag;
}

// If-None-Match names `etag` (one of a list, or *).
bool NoneMatchNames(const http::Request& req, std::string_view etag) {
  auto h = req.headers.Get("If-None-Match");
  if (!h) return false;
  std::string_view rest = *h;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string_view one = rest.substr(0, comma);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    if (one.starts_with("W/")) one.remove_prefix(2);
    if (one == etag || one == "*") return true;
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return false;
}

// Prefer: wait=N (RFC 7240), at most 30 s; 0 when absent or not a number.
int PreferredWait(const http::Request& req) {
  auto h = req.headers.Get("Prefer");
  if (!h) return 0;
  auto at = h->find("wait=");
  if (at == std::string_view::npos ||
      (at > 0 && std::string_view(" ,;").find((*h)[at - 1]) == std::string_view::npos)) {
    return 0;
  }
  int n = 0;
  auto digits = h->substr(at + 5);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || n < 0) return 0;
  return std::min(n, 30);
}

}  // namespace

void RegisterTaskRoutes(http::Router& router, const Deps& deps) {
  router.Add(http::Method::kPost, "/api/v1/tasks", [&deps](http::Request& req) {
    auto who = Require(deps, req, auth::scope::kTasksWrite);
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    std::optional<http::Response> bad_key;
    auto key = OptionalKey(req, &bad_key);
    if (bad_key) return std::move(*bad_key);
    auto body = ParseJsonObject(req, kSubmitFields);
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    FieldReader f(std::get<json::object>(body));
    auto s = ReadSubmit(f, std::get<auth::Principal>(who));
    if (!f.ok()) return f.Problem(req);
    // Answered once durable, without holding a thread meanwhile.
    auto [res, reply] = http::Response::Later();
    deps.tasks.SubmitAsync(std::get<auth::Principal>(who).user_id, s, key.value_or(""),
                           [&deps, &req, reply](Result<tasks::Task> t) {
                             reply([&deps, &req, t = std::move(t)] {
                               if (!t) return TaskError(req, t.error());
                               auto created = Json(201, TaskJson(deps, *t, false));
                               if (t->replayed) created.headers.Add("Idempotent-Replayed", "true");
                               return created;
                             });
                           });
    return res;
  });

  // Up to 100 tasks in one request and one transaction: all are created, or none.
  router.Add(http::Method::kPost, "/api/v1/tasks/batch", [&deps](http::Request& req) {
    auto who = Require(deps, req, auth::scope::kTasksWrite);
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    std::optional<http::Response> bad_key;
    auto key = OptionalKey(req, &bad_key);
    if (bad_key) return std::move(*bad_key);
    auto body = ParseJsonObject(req, {"tasks"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    const auto* items = std::get<json::object>(body).if_contains("tasks");
    if (!items || !items->is_array() || items->as_array().empty() || items->as_array().size() > 100) {
      return http::MakeProblem(req, {.status = 422,
                                     .code = "validation_failed",
                                     .detail = "tasks: an array of 1 to 100 tasks",
                                     .errors = {{"tasks", "must be an array of 1 to 100 tasks"}}});
    }
    std::vector<tasks::SubmitRequest> reqs;
    std::vector<http::FieldError> errors;
    const json::array& list = items->as_array();
    for (size_t i = 0; i < list.size(); ++i) {
      std::string where = "tasks[" + std::to_string(i) + "]";
      if (!list[i].is_object()) {
        errors.push_back({where, "must be an object"});
        continue;
      }
      for (const auto& kv : list[i].as_object()) {
        if (std::find(kSubmitFields.begin(), kSubmitFields.end(), kv.key()) == kSubmitFields.end()) {
          errors.push_back({where + "." + std::string(kv.key()), "unknown field"});
        }
      }
      FieldReader f(list[i].as_object(), where + ".");
      reqs.push_back(ReadSubmit(f, std::get<auth::Principal>(who)));
      errors.insert(errors.end(), f.errors().begin(), f.errors().end());
    }
    if (!errors.empty()) {
      return http::MakeProblem(
          req, {.status = 422, .code = "validation_failed", .detail = "Some tasks are invalid.", .errors = errors});
    }
    auto [res, reply] = http::Response::Later();
    deps.tasks.SubmitBatchAsync(std::get<auth::Principal>(who).user_id, std::move(reqs), key.value_or(""),
                                [&deps, &req, reply](Result<std::vector<tasks::Task>> done) {
                                  reply([&deps, &req, done = std::move(done)] {
                                    if (!done) return TaskError(req, done.error());
                                    json::array out;
                                    bool replayed = true;
                                    for (const auto& t : *done) {
                                      out.push_back(TaskJson(deps, t, false));
                                      replayed = replayed && t.replayed;
                                    }
                                    auto created = Json(201, {{"tasks", std::move(out)}});
                                    if (replayed) created.headers.Add("Idempotent-Replayed", "true");
                                    return created;
                                  });
                                });
    return res;
  });

  router.Add(http::Method::kPost, "/api/v1/tasks/estimate", [&deps](http::Request& req) {
    auto who = Require(deps, req, auth::scope::kTasksRead);
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    auto body = ParseJsonObject(req, {"type", "input"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    const auto& o = std::get<json::object>(body);
    FieldReader f(o);
    auto type = f.String("type", true);
    if (!f.ok()) return f.Problem(req);
    size_t bytes = 0;
    if (auto in = o.find("input"); in != o.end() && !in->value().is_null()) {
      bytes = in->value().is_string() ? in->value().as_string().size() : json::serialize(in->value()).size();
    }
    auto cost = deps.tasks.Estimate(*type, bytes);
    if (!cost) return TaskError(req, cost.error());
    const std::string& asset = deps.tasks.config().asset;
    return Json(200, {{"type", *type},
                      {"input_bytes", bytes},
                      {"asset", asset},
                      {"cost", ledger::FormatAmount(*cost)},
                      {"display", Display(deps, asset, *cost)}});
  });

  router.Add(
      http::Method::kGet, "/api/v1/tasks",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kTasksRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto q = ParsePageQuery(req);
        if (auto* res = std::get_if<http::Response>(&q)) return std::move(*res);
        auto page = deps.tasks.List(std::get<auth::Principal>(who).user_id,
                                    {.status = req.Query("status"), .type = req.Query("type")},
                                    std::get<PageQuery>(q).limit, std::get<PageQuery>(q).cursor);
        if (!page) return TaskError(req, page.error());
        return Json(200, TaskPageJson(deps, *page));
      },
      kBlocking);

  // A task changed: answer whoever waits on it (each reads it again). A
  // change made here answers at once, even with Redis away (SubscribeOwn).
  auto watch = std::make_shared<TaskWatch>();
  deps.bus.SubscribeOwn([watch](const events::Event& e) {
    if (e.type != "task_update") return;
    std::vector<TaskWatch::Waiter> changed;
    {
      std::lock_guard lk(watch->mu);
      auto [from, to] = watch->waiting.equal_range(e.subject);
      for (auto it = from; it != to; ++it) changed.push_back(std::move(it->second));
      watch->waiting.erase(from, to);
    }
    for (auto& w : changed) w.reply(std::move(w.respond));
  });
  // The task and its history, with an ETag. If-None-Match naming the current
  // ETag gets 304; with Prefer: wait=N as well, the answer waits up to N
  // seconds for the task to change first (a long poll: `smart tasks watch`).
  router.Add(
      http::Method::kGet, "/api/v1/tasks/{id}",
      [&deps, watch](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kTasksRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        const auto& user = std::get<auth::Principal>(who).user_id;
        const std::string id(req.Param("id"));
        auto answer = [&req](std::string body) {
          std::string etag = ETagOf(body);
          http::Response res =
              NoneMatchNames(req, etag) ? http::Response::Empty(304) : http::Response::Json(200, std::move(body));
          res.headers.Set("ETag", std::move(etag));
          return res;
        };
        auto doc = TaskDocument(deps, user, id);
        if (!doc) return TaskError(req, doc.error());
        int wait = PreferredWait(req);
        if (wait == 0 || !NoneMatchNames(req, ETagOf(*doc))) return answer(std::move(*doc));
        // The answer, whenever it comes (a change, the deadline, shutdown):
        // the task read again, on the connection's thread.
        uint64_t token = 0;
        {
          std::lock_guard lk(watch->mu);
          if (watch->waiting.size() >= TaskWatch::kMaxWaiting) {
            return answer(std::move(*doc));  // without Preference-Applied: the client paces itself
          }
          token = watch->next_token++;
        }
        auto respond = [&deps, &req, watch, user, id, wait, token, answer] {
          watch->Forget(id, token);
          auto now = TaskDocument(deps, user, id);
          if (!now) return TaskError(req, now.error());
          http::Response res = answer(std::move(*now));
          res.headers.Set("Preference-Applied", "wait=" + std::to_string(wait));
          return res;
        };
        auto [res, reply] = http::Response::Later(std::chrono::seconds(wait), respond);
        {
          std::lock_guard lk(watch->mu);
          watch->waiting.emplace(id, TaskWatch::Waiter{token, reply, respond});
        }
        // Read again now that a change would answer: one between the first read and here is not missed.
        auto again = TaskDocument(deps, user, id);
        if (!again || !NoneMatchNames(req, ETagOf(*again))) reply(respond);
        return res;
      },
      http::RouteOptions{.long_poll = true});

  router.Add(
      http::Method::kGet, "/api/v1/tasks/{id}/result",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kTasksRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto t = deps.tasks.Get(std::get<auth::Principal>(who).user_id, req.Param("id"));
        if (!t) return TaskError(req, t.error());
        if (t->status != "completed") {
          std::string detail = t->Final() ? "The task ended " + t->status + (t->error.empty() ? "" : ": " + t->error)
                                          : "The task is " + t->status + "; no result yet.";
          return http::MakeProblem(req, {.status = 409, .code = "no_result", .detail = detail});
        }
        return Json(200, {{"id", t->id},
                          {"status", t->status},
                          {"output", t->output},
                          {"proof_hash", t->proof_hash},
                          {"node_id", t->node_id},
                          {"completed_at", FormatTimestampMs(t->completed_ms)}});
      },
      kBlocking);

  router.Add(
      http::Method::kGet, "/api/v1/tasks/dead-letter",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kTasksRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto q = ParsePageQuery(req);
        if (auto* res = std::get_if<http::Response>(&q)) return std::move(*res);
        auto page = deps.tasks.DeadLetters(std::get<auth::Principal>(who).user_id, std::get<PageQuery>(q).limit,
                                           std::get<PageQuery>(q).cursor);
        if (!page) return TaskError(req, page.error());
        return Json(200, TaskPageJson(deps, *page));
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/tasks/{id}/retry",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kTasksWrite);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto t = deps.tasks.Retry(std::get<auth::Principal>(who).user_id, req.Param("id"));
        if (!t) return TaskError(req, t.error());
        return Json(200, TaskJson(deps, *t, false));
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/tasks/{id}/cancel",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kTasksWrite);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto t = deps.tasks.Cancel(std::get<auth::Principal>(who).user_id, req.Param("id"));
        if (!t) return TaskError(req, t.error());
        return Json(200, TaskJson(deps, *t, false));
      },
      kBlocking);

  // The leased operations: a node credential, the node's id and its lease.
  auto leased = [&deps](const char* action, std::initializer_list<std::string_view> fields) {
    return [&deps, action, allowed = std::vector<std::string_view>(fields)](http::Request& req) -> http::Response {
      auto who = Require(deps, req, auth::scope::kNodes);
      if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
      std::vector<std::string_view> names = {"node_id", "lease"};
      names.insert(names.end(), allowed.begin(), allowed.end());
      auto parsed = [&]() -> std::variant<json::object, http::Response> {
        // Every leased operation's fields, then this operation's only.
        auto b = ParseJsonObject(req, {"node_id", "lease", "percent", "message", "output", "proof_hash", "error"});
        if (auto* res = std::get_if<http::Response>(&b)) return std::move(*res);
        for (const auto& kv : std::get<json::object>(b)) {
          if (std::find(names.begin(), names.end(), kv.key()) == names.end()) {
            return http::MakeProblem(
                req, {.status = 400,
                      .code = "unknown_field",
                      .detail = "This endpoint does not take the field '" + std::string(kv.key()) + "'.",
                      .errors = {{std::string(kv.key()), "unknown field"}}});
          }
        }
        return std::move(std::get<json::object>(b));
      }();
      if (auto* res = std::get_if<http::Response>(&parsed)) return std::move(*res);
      const auto& o = std::get<json::object>(parsed);
      FieldReader f(o);
      auto node = f.String("node_id", true);
      auto lease = f.Int("lease", true, 1, 1'000'000);
      std::string what(action);
      tasks::LeaseOp op{.task_id = std::string(req.Param("id"))};
      if (what == "start") {
        op.kind = tasks::LeaseOp::Kind::kStart;
      } else if (what == "progress") {
        op.kind = tasks::LeaseOp::Kind::kProgress;
        op.percent = static_cast<int>(f.Int("percent", true, 0, 100).value_or(0));
        op.message = f.String("message", false).value_or("");
      } else if (what == "result") {
        op.kind = tasks::LeaseOp::Kind::kResult;
        op.output = f.String("output", true).value_or("");
        op.proof_hash = f.String("proof_hash", true).value_or("");
      } else if (what == "release") {
        op.kind = tasks::LeaseOp::Kind::kRelease;
      } else {
        op.kind = tasks::LeaseOp::Kind::kFail;
        op.error = f.String("error", true).value_or("");
      }
      if (!f.ok()) return f.Problem(req);
      op.lease = static_cast<int>(*lease);
      // Answered once durable, without holding a thread meanwhile.
      auto [res, reply] = http::Response::Later();
      deps.tasks.Apply(std::get<auth::Principal>(who).user_id, *node, std::move(op),
                       [&deps, &req, reply](Result<tasks::Task> t) {
                         reply([&deps, &req, t = std::move(t)] {
                           if (!t) return TaskError(req, t.error());
                           return Json(200, TaskJson(deps, *t, false));
                         });
                       });
      return res;
    };
  };
  router.Add(http::Method::kPost, "/api/v1/tasks/{id}/start", leased("start", {}));
  router.Add(http::Method::kPost, "/api/v1/tasks/{id}/progress", leased("progress", {"percent", "message"}));
  router.Add(http::Method::kPost, "/api/v1/tasks/{id}/result", leased("result", {"output", "proof_hash"}));
  router.Add(http::Method::kPost, "/api/v1/tasks/{id}/fail", leased("fail", {"error"}));
  router.Add(http::Method::kPost, "/api/v1/tasks/{id}/release", leased("release", {}));

  router.Add(
      http::Method::kPost, "/api/v1/nodes/register",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kNodes);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto body = ParseJsonObject(req, {"name", "capabilities", "capacity", "hardware", "endpoint"});
        if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
        FieldReader f(std::get<json::object>(body));
        auto name = f.String("name", true);
        auto caps = f.StringList("capabilities", true);
        auto capacity = f.Int("capacity", false, 1, 100);
        auto hardware = f.Object("hardware", false, 4096);
        auto endpoint = f.String("endpoint", false);
        if (!f.ok()) return f.Problem(req);
        const auto& owner = std::get<auth::Principal>(who);
        // The node's credential first: a refused registration revokes it, so
        // nothing half-made remains.
        auto key = deps.auth.CreateApiKey(owner, "node " + *name, {std::string(auth::scope::kNodes)}, std::nullopt);
        if (!key) return TaskError(req, key.error());
        auto node = deps.tasks.RegisterNode(owner.user_id, {.name = *name,
                                                            .capabilities = *caps,
                                                            .capacity = static_cast<int>(capacity.value_or(1)),
                                                            .hardware = hardware.value_or("{}"),
                                                            .endpoint = endpoint.value_or("")});
        if (!node) {
          (void)deps.auth.RevokeApiKey(owner.user_id, key->key.id);
          return TaskError(req, node.error());
        }
        auto o = NodeJson(deps, *node);
        o["credential"] = key->secret;
        o["credential_id"] = key->key.id;
        return Json(201, o);
      },
      kBlocking);

  router.Add(
      http::Method::kGet, "/api/v1/nodes",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kTasksRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto q = ParsePageQuery(req);
        if (auto* res = std::get_if<http::Response>(&q)) return std::move(*res);
        auto page = deps.tasks.ListNodes(std::get<PageQuery>(q).limit, std::get<PageQuery>(q).cursor);
        if (!page) return TaskError(req, page.error());
        json::array items;
        for (const auto& n : page->items) items.push_back(NodeJson(deps, n));
        json::object o{{"items", std::move(items)}};
        o["next_cursor"] = page->next_cursor ? json::value(*page->next_cursor) : json::value(nullptr);
        return Json(200, o);
      },
      kBlocking);

  router.Add(
      http::Method::kGet, "/api/v1/nodes/stats",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kTasksRead);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto s = deps.tasks.GetStats();
        if (!s) return TaskError(req, s.error());
        return Json(200, {{"nodes_online", s->nodes_online},
                          {"nodes_total", s->nodes_total},
                          {"tasks_pending", s->pending},
                          {"tasks_running", s->running},
                          {"tasks_completed", s->completed},
                          {"tasks_failed", s->failed}});
      },
      kBlocking);

  auto get_node = [&deps](bool status_only) {
    return [&deps, status_only](http::Request& req) -> http::Response {
      auto who = Require(deps, req, auth::scope::kTasksRead);
      if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
      auto n = deps.tasks.GetNode(req.Param("id"));
      if (!n) return TaskError(req, n.error());
      if (!status_only) return Json(200, NodeJson(deps, *n));
      return Json(200, {{"id", n->id},
                        {"status", n->status},
                        {"load", n->load},
                        {"running", n->running},
                        {"assigned", n->assigned},
                        {"reputation", n->reputation},
                        {"last_heartbeat_at", TimeOrNull(n->last_heartbeat_ms)}});
    };
  };
  router.Add(http::Method::kGet, "/api/v1/nodes/{id}", get_node(false), kBlocking);
  router.Add(http::Method::kGet, "/api/v1/nodes/{id}/status", get_node(true), kBlocking);

  router.Add(http::Method::kPost, "/api/v1/nodes/{id}/heartbeat", [&deps](http::Request& req) {
    auto who = Require(deps, req, auth::scope::kNodes);
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    auto body = ParseJsonObject(req, {"load", "running"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    FieldReader f(std::get<json::object>(body));
    auto load = f.Int("load", false, 0, 100), running = f.Int("running", false, 0, 10000);
    if (!f.ok()) return f.Problem(req);
    // Written with the others that arrive within 50 ms (one commit: the
    // answer is awaited) and answered then, without a thread waiting meanwhile.
    auto [res, reply] = http::Response::Later();
    deps.tasks.HeartbeatAsync(
        std::get<auth::Principal>(who).user_id, std::string(req.Param("id")), static_cast<int>(load.value_or(0)),
        static_cast<int>(running.value_or(0)), tasks::Coordinator::BeatAnswer::kAwaited,
        [&deps, &req, reply](Result<std::string> status) {
          reply([&deps, &req, status = std::move(status)] {
            if (!status) return TaskError(req, status.error());
            return Json(
                200, {{"id", req.Param("id")}, {"status", *status}, {"heartbeat_s", deps.tasks.config().heartbeat_s}});
          });
        });
    return res;
  });

  router.Add(
      http::Method::kPost, "/api/v1/nodes/{id}/maintenance",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kNodes);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto body = ParseJsonObject(req, {"enabled"});
        if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
        FieldReader f(std::get<json::object>(body));
        auto enabled = f.Bool("enabled", true);
        if (!f.ok()) return f.Problem(req);
        auto n = deps.tasks.SetMaintenance(std::get<auth::Principal>(who).user_id, req.Param("id"), *enabled);
        if (!n) return TaskError(req, n.error());
        return Json(200, NodeJson(deps, *n));
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/nodes/{id}/deactivate",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kNodes);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto n = deps.tasks.Deactivate(std::get<auth::Principal>(who).user_id, req.Param("id"));
        if (!n) return TaskError(req, n.error());
        return Json(200, NodeJson(deps, *n));
      },
      kBlocking);

  router.Add(http::Method::kPost, "/api/v1/nodes/{id}/claim", [&deps](http::Request& req) {
    auto who = Require(deps, req, auth::scope::kNodes);
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    auto body = ParseJsonObject(req, {"max", "wait_s", "holding"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    FieldReader f(std::get<json::object>(body));
    auto max = f.Int("max", false, 1, 100), wait = f.Int("wait_s", false, 0, 30);
    auto holding = f.StringList("holding", false);
    if (!f.ok()) return f.Problem(req);
    if (holding && holding->size() > 1000) {
      return http::MakeProblem(req, {.status = 422,
                                     .code = "validation_failed",
                                     .detail = "holding: at most 1000 task ids",
                                     .errors = {{"holding", "at most 1000 task ids"}}});
    }
    // A waiting claim holds no thread: answered by the coordinator, with
    // the first tasks it is given or none at its deadline (or at shutdown).
    auto [res, reply] = http::Response::Later();
    deps.tasks.ClaimAsync(std::get<auth::Principal>(who).user_id, std::string(req.Param("id")),
                          static_cast<int>(max.value_or(1)), wait.value_or(0) * 1000, std::move(holding),
                          [&deps, &req, reply](Result<std::vector<tasks::Task>> claimed) {
                            reply([&deps, &req, claimed = std::move(claimed)] {
                              if (!claimed) return TaskError(req, claimed.error());
                              json::array items;
                              for (const auto& t : *claimed) items.push_back(TaskJson(deps, t, true));
                              return Json(200, {{"tasks", std::move(items)}});
                            });
                          });
    return res;
  });

  router.Add(
      http::Method::kGet, "/api/v1/admin/tasks/settings",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kAdmin);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto s = deps.tasks.GetSettings();
        if (!s) return TaskError(req, s.error());
        return Json(200, SettingsJson(*s));
      },
      kBlocking);

  router.Add(
      http::Method::kPatch, "/api/v1/admin/tasks/settings",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kAdmin);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto body =
            ParseJsonObject(req, {"paused", "min_stake", "max_tasks_per_node", "min_timeout_s", "max_timeout_s"});
        if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
        FieldReader f(std::get<json::object>(body));
        auto paused = f.Bool("paused", false);
        auto stake = f.Amount("min_stake", false);
        auto per_node = f.Int("max_tasks_per_node", false, 1, 100);
        auto min_t = f.Int("min_timeout_s", false, 1, 86400), max_t = f.Int("max_timeout_s", false, 1, 86400);
        if (!f.ok()) return f.Problem(req);
        auto s = deps.tasks.GetSettings();
        if (!s) return TaskError(req, s.error());
        if (paused) s->paused = *paused;
        if (stake) s->min_stake = *stake;
        if (per_node) s->max_tasks_per_node = static_cast<int>(*per_node);
        if (min_t) s->min_timeout_s = *min_t;
        if (max_t) s->max_timeout_s = *max_t;
        auto updated = deps.tasks.UpdateSettings(*s);
        if (!updated) return TaskError(req, updated.error());
        (void)deps.auth.Audit(std::get<auth::Principal>(who).user_id, "task_settings_changed", "tasks",
                              req.remote_address, json::serialize(SettingsJson(*updated)));
        return Json(200, SettingsJson(*updated));
      },
      kBlocking);
}

}  // namespace smart::api
