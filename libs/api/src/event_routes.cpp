// GET /api/v1/ws: clients' real-time events over WebSocket.
//
// Authenticate with the upgrade's Authorization / X-API-Key header, or with a
// first message {"type":"auth","token":"..."}. Then:
//   {"type":"subscribe","tasks":"own"}            every task of yours
//   {"type":"subscribe","task_ids":["task_…"]}    given tasks of yours
//   {"type":"subscribe","network_stats":true}     network_stats every few seconds
//   {"type":"subscribe","nodes":true}             node_status events
//   {"type":"unsubscribe", …the same fields…}
//   {"type":"resume","last_event_id":N}           what you missed since N (kept for a window)
// Server messages: events {"id","type","ts","data"} and replies
// {"type":"subscribed"|"unsubscribed"|"authenticated"|"error"|"gap", ...}.
// A client that falls behind (its send queue is full) is closed with 1008.
#include <boost/json.hpp>
#include <chrono>
#include <unordered_map>

#include "routes_internal.hpp"
#include "smart/events/subscriptions.hpp"
#include "smart/kv/shared_cap.hpp"
#include "smart/metrics/metrics.hpp"

namespace smart::api {
namespace json = boost::json;
namespace {

constexpr size_t kMaxTaskIds = 10000;  // task ids one connection may follow
constexpr size_t kMaxResume = 1000;    // events one resume replays (the send queue holds 1,024 by default)
// Why a connection is closed that did not authenticate first (in time: http.header_timeout_s).
constexpr std::string_view kAuthenticateFirst = "authenticate first: {\"type\":\"auth\",\"token\":\"...\"}";

// What a connection may send: 10 messages a second, in bursts of 20 (a token
// bucket; a client subscribes and resumes now and then, it does not stream).
class MessageBudget {
 public:
  bool Take() {
    auto now = std::chrono::steady_clock::now();
    tokens_ = std::min(kBurst, tokens_ + std::chrono::duration<double>(now - at_).count() * kPerSecond);
    at_ = now;
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

 private:
  static constexpr double kPerSecond = 10, kBurst = 20;
  double tokens_ = kBurst;
  std::chrono::steady_clock::time_point at_ = std::chrono::steady_clock::now();
};

std::string TooMany(size_t cap) {
  return "this account has " + std::to_string(cap) + " event connections open, the most allowed";
}

// The connections and what each wants (indexed: an event costs its
// subscribers, not every connection). Connections are known by an id.
struct Hub {
  std::mutex mu;
  events::Subscriptions subs;
  std::unordered_map<uint64_t, std::weak_ptr<http::WebSocket>> sockets;
  uint64_t next_id = 1;
  size_t per_user = 0;                          // connections an account may hold
  metrics::Counter* slow_closed = nullptr;      // closed: their queue was full
  metrics::Counter* over_cap_closed = nullptr;  // closed: let go by the shared cap
  // With Redis: the account's connections on the other instances count too.
  // Last, so that it stops (and its thread with it) before the rest goes.
  std::unique_ptr<kv::SharedCap> shared;

  // Sets connection `id`'s account, if it may hold one more. Under mu.
  bool SetUser(uint64_t id, const std::string& user) {
    size_t others = shared ? std::min(per_user, shared->Others(user)) : 0;
    if (!subs.SetUser(id, user, per_user - others)) return false;
    if (shared) shared->Add(user, id, per_user);
    return true;
  }
  // Connection `id` is gone. Under mu.
  void Remove(uint64_t id) {
    if (auto* interest = subs.Find(id); shared && interest && !interest->user.empty()) {
      shared->Remove(interest->user, id);
    }
    subs.Remove(id);
    sockets.erase(id);
  }
  // Closes the connections let go by the shared cap (admitted here while
  // another instance took the account's last places first).
  void LetGo(const std::vector<uint64_t>& ids) {
    std::vector<std::shared_ptr<http::WebSocket>> closing;
    {
      std::lock_guard lk(mu);
      for (uint64_t id : ids) {
        auto it = sockets.find(id);
        if (auto ws = it == sockets.end() ? nullptr : it->second.lock()) closing.push_back(std::move(ws));
      }
    }
    over_cap_closed->Inc(closing.size());
    for (const auto& ws : closing) ws->Close(http::close_code::kPolicyViolation, TooMany(per_user));
  }
};

void Deliver(const Hub& hub, const std::weak_ptr<http::WebSocket>& weak, std::shared_ptr<const std::string> text,
             std::function<void()> on_written = nullptr) {
  auto ws = weak.lock();
  if (!ws) return;
  if (ws->Send(std::move(text), std::move(on_written)) == http::WebSocket::SendResult::kQueueFull) {
    hub.slow_closed->Inc();
    ws->Close(http::close_code::kPolicyViolation, "slow consumer: events were not read in time");
  }
}

std::string Reply(std::string_view type, std::initializer_list<std::pair<std::string_view, json::value>> fields = {}) {
  json::object o{{"type", type}};
  for (const auto& [k, v] : fields) o[k] = v;
  return json::serialize(o);
}

}  // namespace

void RegisterEventRoutes(http::Router& router, const Deps& deps) {
  auto hub = std::make_shared<Hub>();
  hub->per_user = deps.event_connections_per_user;
  auto& closed = deps.registry.AddCounter("smart_ws_event_closed_total",
                                          "Client event WebSockets the server closed, by reason.", {"reason"});
  hub->slow_closed = &closed.WithLabels({"slow_consumer"});
  hub->over_cap_closed = &closed.WithLabels({"over_cap"});
  if (!deps.redis_url.empty()) {
    hub->shared = kv::NewSharedCap({.url = deps.redis_url,
                                    .prefix = deps.redis_prefix,
                                    .name = "ws",
                                    .on_over = [h = hub.get()](std::vector<uint64_t> ids) { h->LetGo(ids); }});
  }
  // From publishing an event to its frame handed to each subscriber's socket:
  // the server's own fan-out delay (what clients see adds the network and themselves).
  auto& delivery = deps.registry.AddHistogram(
      "smart_ws_event_delivery_seconds", "From an event's publication to its write on each client WebSocket.", {"type"},
      {0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5});
  deps.bus.Subscribe([hub, &delivery](const events::Event& e) {
    const auto start = std::chrono::steady_clock::now();
    thread_local std::vector<uint64_t> ids;
    std::vector<std::weak_ptr<http::WebSocket>> targets;
    {
      std::lock_guard lk(hub->mu);
      ids.clear();
      hub->subs.Match(e, ids);
      targets.reserve(ids.size());
      for (uint64_t id : ids) {
        if (auto it = hub->sockets.find(id); it != hub->sockets.end()) targets.push_back(it->second);
      }
    }
    if (targets.empty()) return;
    auto text = std::make_shared<const std::string>(e.Json());  // one copy for every subscriber
    metrics::Histogram* seconds = &delivery.WithLabels({e.type});
    for (const auto& ws : targets) {
      Deliver(*hub, ws, text, [seconds, start] {
        seconds->Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      });
    }
  });

  auto* connections =
      &deps.registry.AddGauge("smart_ws_event_connections", "Client event WebSockets (/api/v1/ws) open now.")
           .WithLabels({});
  router.AddWebSocket("/api/v1/ws", [&deps, hub, connections](http::Request& req, std::shared_ptr<http::WebSocket> ws) {
    std::string user;
    if (HasCredentials(req)) {
      auto who = Authenticate(deps, req);
      if (!who) return http::WsAccept{.reject = Unauthorized(req, who.error())};
      if (!who->Has(auth::scope::kTasksRead)) {
        return http::WsAccept{
            .reject = http::MakeProblem(
                req, {.status = 403, .code = "insufficient_scope", .detail = "Events need the scope tasks:read."})};
      }
      user = who->user_id;
    }
    uint64_t id;
    {
      std::lock_guard lk(hub->mu);
      id = hub->next_id++;
      if (!user.empty() && !hub->SetUser(id, user)) {
        return http::WsAccept{
            .reject = http::MakeProblem(
                req, {.status = 429, .code = "too_many_connections", .detail = TooMany(hub->per_user)})};
      }
      hub->sockets.emplace(id, ws);
      connections->Set(static_cast<double>(hub->sockets.size()));
    }
    std::weak_ptr<http::WebSocket> weak = ws;
    http::WsCallbacks callbacks;
    // Messages of one connection arrive one at a time, on its I/O thread.
    callbacks.on_message = [&deps, hub, id, weak,
                            budget = std::make_shared<MessageBudget>()](std::string_view message) {
      auto ws = weak.lock();
      if (!ws) return;
      if (!budget->Take()) {
        ws->Send(Reply("error", {{"code", "rate_limited"},
                                 {"detail", "at most 10 messages a second, in bursts of 20; this one was ignored"}}));
        return;
      }
      bool authenticated;
      {
        std::lock_guard lk(hub->mu);
        auto* interest = hub->subs.Find(id);
        authenticated = interest && !interest->user.empty();
      }
      boost::system::error_code ec;
      auto v = json::parse(message, ec);
      if (ec || !v.is_object() || !v.as_object().contains("type") || !v.as_object().at("type").is_string()) {
        if (!authenticated) {
          ws->Close(http::close_code::kPolicyViolation, std::string(kAuthenticateFirst));
          return;
        }
        ws->Send(Reply("error", {{"code", "invalid_message"}, {"detail", "send a JSON object with a type"}}));
        return;
      }
      const auto& o = v.as_object();
      std::string type(o.at("type").as_string());
      if (type == "auth") {
        if (authenticated) return;
        auto token = o.if_contains("token");
        if (!token || !token->is_string()) {
          ws->Close(http::close_code::kPolicyViolation, "auth needs a token");
          return;
        }
        auto who = deps.auth.Authenticate(std::string(token->as_string()));
        if (!who || !who->Has(auth::scope::kTasksRead)) {
          ws->Close(http::close_code::kPolicyViolation, "invalid credentials");
          return;
        }
        bool set;
        {
          std::lock_guard lk(hub->mu);
          set = hub->SetUser(id, who->user_id);
        }
        if (!set) {
          ws->Close(http::close_code::kPolicyViolation, TooMany(hub->per_user));
          return;
        }
        ws->Admit();
        ws->Send(Reply("authenticated", {{"user_id", json::value(who->user_id)}}));
        return;
      }
      if (!authenticated) {
        ws->Close(http::close_code::kPolicyViolation, std::string(kAuthenticateFirst));
        return;
      }
      if (type == "subscribe" || type == "unsubscribe") {
        bool on = type == "subscribe";
        bool own, stats, nodes;
        size_t tasks;
        {
          std::lock_guard lk(hub->mu);
          auto& subs = hub->subs;
          if (auto t = o.if_contains("tasks"); t && t->is_string() && t->as_string() == "own") subs.Own(id, on);
          if (auto s = o.if_contains("network_stats"); s && s->is_bool() && s->as_bool()) subs.Stats(id, on);
          if (auto n = o.if_contains("nodes"); n && n->is_bool() && n->as_bool()) subs.Nodes(id, on);
          if (auto ids = o.if_contains("task_ids"); ids && ids->is_array()) {
            for (const auto& task : ids->as_array()) {
              if (task.is_string()) subs.Task(id, std::string(task.as_string()), on, kMaxTaskIds);
            }
          }
          const auto& now = *subs.Find(id);
          own = now.own, stats = now.stats, nodes = now.nodes, tasks = now.tasks.size();
        }
        ws->Send(Reply(on ? "subscribed" : "unsubscribed", {{"tasks", own ? "own" : ""},
                                                            {"task_ids", static_cast<int64_t>(tasks)},
                                                            {"network_stats", stats},
                                                            {"nodes", nodes}}));
        return;
      }
      if (type == "resume") {
        // A non-negative integer; anything else (a fraction, -1, 1e30) is refused, never thrown on.
        auto last = o.if_contains("last_event_id");
        std::optional<uint64_t> since;
        if (last && last->is_uint64()) since = last->as_uint64();
        if (last && last->is_int64() && last->as_int64() >= 0) since = static_cast<uint64_t>(last->as_int64());
        if (!since) {
          ws->Send(
              Reply("error", {{"code", "invalid_message"}, {"detail", "resume needs last_event_id, an integer >= 0"}}));
          return;
        }
        events::Subscriptions::Interest interest;  // a copy: the bus filters under its own lock
        {
          std::lock_guard lk(hub->mu);
          interest = *hub->subs.Find(id);
        }
        auto missed = deps.bus.Since(
            *since, [&](const events::Event& e) { return interest.Wants(e); }, kMaxResume);
        if (!missed.complete || missed.more) {
          std::string why = missed.complete ? "" : "some events since then are no longer kept; ";
          if (missed.more) {
            why += "more events since then than one resume replays (" + std::to_string(kMaxResume) + "); ";
          }
          ws->Send(Reply("gap", {{"detail", json::value(why + "re-read the state over HTTP")}}));
        }
        for (const auto& e : missed.events) Deliver(*hub, weak, std::make_shared<const std::string>(e.Json()));
        return;
      }
      ws->Send(Reply("error", {{"code", "unknown_type"}, {"detail", "auth, subscribe, unsubscribe or resume"}}));
    };
    callbacks.on_close = [hub, id, connections](uint16_t) {
      std::lock_guard lk(hub->mu);
      hub->Remove(id);
      connections->Set(static_cast<double>(hub->sockets.size()));
    };
    // Credentials on the upgrade or, within http.header_timeout_s, in the first message.
    return http::WsAccept{.callbacks = std::move(callbacks),
                          .admit_or_close = user.empty() ? std::string(kAuthenticateFirst) : std::string()};
  });
}

}  // namespace smart::api
