#include "runner.hpp"

#include <boost/json.hpp>
#include <thread>

#include "smart/core/crypto.hpp"
#include "smart/core/json_text.hpp"
#include "smart/core/thread_name.hpp"
#include "smart/http/client.hpp"

namespace smart::node {
namespace json = boost::json;
using namespace std::chrono_literals;

Result<std::string> CallApi(const std::string& server, const std::string& credential, const std::string& method,
                            const std::string& path, const std::string& body, std::chrono::milliseconds timeout) {
  http::ClientRequest req{
      .method = method, .url = server + path, .headers = {{"X-API-Key", credential}}, .body = body, .timeout = timeout};
  if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
  auto res = http::Send(req);
  if (!res) return res.take_error();
  if (res->status < 400) return std::move(res->body);
  std::string code = "http_" + std::to_string(res->status), detail = res->body.substr(0, 300);
  boost::system::error_code ec;
  auto v = json::parse(res->body, ec);
  if (!ec && v.is_object()) {
    const auto& o = v.as_object();
    if (o.contains("code") && o.at("code").is_string()) code = std::string(o.at("code").as_string());
    if (o.contains("detail") && o.at("detail").is_string()) detail = std::string(o.at("detail").as_string());
  }
  if (res->status >= 500 || res->status == 429 || res->status == 408) return Error::Unavailable(code, detail);
  if (res->status == 409) return Error::Conflict(code, detail);
  if (res->status == 404) return Error::NotFound(code, detail);
  if (res->status == 401) return Error::Unauthenticated(code, detail);
  if (res->status == 403) return Error::PermissionDenied(code, detail);
  return Error::Invalid(code, detail);
}

// One task of a claim's answer; nullopt when a field is missing or of the wrong type.
std::optional<Runner::Leased> Runner::ParseLeased(const json::value& item) {
  const auto* o = item.if_object();
  if (!o) return std::nullopt;
  const auto* id = o->if_contains("id");
  const auto* type = o->if_contains("type");
  const auto* input = o->if_contains("input");
  const auto* params = o->if_contains("parameters");
  const auto* lease = o->if_contains("lease");
  if (!id || !id->is_string() || !type || !type->is_string() || !input || !lease || !lease->is_int64()) {
    return std::nullopt;
  }
  Leased t;
  t.job.id = std::string(id->as_string());
  t.job.type = std::string(type->as_string());
  t.job.input_is_json = !input->is_string();
  t.job.input = input->is_string() ? std::string(input->as_string()) : json::serialize(*input);
  t.job.parameters = params && params->is_object() ? json::serialize(*params) : "{}";
  t.lease = static_cast<int>(lease->as_int64());
  return t;
}

Runner::Runner(RunnerConfig config, const Executors& executors, log::Logger& logger)
    : config_(std::move(config)), executors_(executors), logger_(logger) {}

Result<std::string> Runner::Retry(const std::string& path, const std::string& body,
                                  std::chrono::milliseconds for_how_long) {
  auto deadline = std::chrono::steady_clock::now() + for_how_long;
  auto pause = 200ms;
  while (true) {
    auto r = CallApi(config_.server, config_.credential, "POST", path, body);
    if (r || r.error().kind != ErrorKind::kUnavailable || std::chrono::steady_clock::now() + pause > deadline) return r;
    logger_.Warn("retrying", {{"path", path}, {"error", r.error().message}, {"in_ms", pause.count()}});
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::milliseconds>(pause * 2, 5s);
  }
}

std::shared_ptr<Channel> Runner::channel() {
  std::lock_guard lk(mu_);
  return channel_ && channel_->open() ? channel_ : nullptr;
}

Result<void> Runner::Report(const Leased& t, const std::string& op, json::object fields,
                            std::chrono::milliseconds for_how_long) {
  fields["lease"] = t.lease;
  if (auto ch = channel()) {
    json::object message = fields;
    message["type"] = op;
    message["task_id"] = t.job.id;
    auto r = ch->Call(std::move(message), 30s);
    if (r || r.error().kind != ErrorKind::kUnavailable) return r ? Ok() : Result<void>(r.take_error());
    logger_.Warn("node socket lost; reporting over HTTP", {{"task_id", t.job.id}, {"op", op}});
  }
  fields["node_id"] = config_.node_id;
  auto r = Retry("/api/v1/tasks/" + t.job.id + "/" + op, json::serialize(fields), for_how_long);
  return r ? Ok() : Result<void>(r.take_error());
}

void Runner::Handle(const Leased& t, Stop& stop) {
  if (cancel_.load()) {  // never started: give it back
    (void)Report(t, "release", {}, 10s);
    return;
  }
  auto started = Report(t, "start", {}, 60s);
  if (!started) {
    logger_.Warn("cannot start task", {{"task_id", t.job.id}, {"error", started.error().message}});
    return;
  }
  auto last_progress = std::chrono::steady_clock::now() - 1h;
  auto progress = [&](int percent, const std::string& message) {
    auto now = std::chrono::steady_clock::now();
    if (now - last_progress < 1s) return;  // at most one report a second
    last_progress = now;
    json::object fields{{"percent", std::clamp(percent, 0, 100)}, {"message", message.substr(0, 200)}};
    if (auto ch = channel()) {
      fields["type"] = "progress";
      fields["task_id"] = t.job.id;
      fields["lease"] = t.lease;
      (void)ch->Call(std::move(fields), 5s);
      return;
    }
    fields["node_id"] = config_.node_id;
    fields["lease"] = t.lease;
    (void)CallApi(config_.server, config_.credential, "POST", "/api/v1/tasks/" + t.job.id + "/progress",
                  json::serialize(fields), 5s);
  };
  auto out = executors_.Run(t.job, progress, stop.stop);
  Result<void> reported = Ok();
  if (stop.cancelled.load()) {  // its lease is gone: a report would be refused
    logger_.Info("task cancelled: not reported", {{"task_id", t.job.id}, {"job", out ? "finished" : "stopped"}});
    return;
  }
  if (out) {
    reported = Report(t, "result", {{"output", *out}, {"proof_hash", crypto::Sha256Hex(*out)}}, 120s);
    if (reported) logger_.Info("task completed", {{"task_id", t.job.id}, {"type", t.job.type}});
  } else if (out.error().code == "cancelled") {
    reported = Report(t, "release", {}, 10s);
    if (reported) logger_.Info("task released", {{"task_id", t.job.id}});
  } else {
    reported = Report(t, "fail", {{"error", out.error().message.substr(0, 4000)}}, 120s);
    if (reported) logger_.Info("task failed", {{"task_id", t.job.id}, {"error", out.error().message}});
  }
  if (!reported) logger_.Warn("cannot report task", {{"task_id", t.job.id}, {"error", reported.error().message}});
}

void Runner::Work() {
  while (true) {
    Leased t;
    auto stop = std::make_shared<Stop>();
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return !queue_.empty() || closing_; });
      if (queue_.empty()) return;
      t = std::move(queue_.front());
      queue_.pop_front();
      running_[t.job.id] = stop;  // from here a cancellation stops it, not the queue
      ++busy_;
    }
    Handle(t, *stop);
    {
      std::lock_guard lk(mu_);
      --busy_;
      held_.erase(t.job.id);
      running_.erase(t.job.id);
    }
    cv_.notify_all();
    if (auto ch = channel()) ch->Send({{"type", "credit"}, {"n", 1}});  // a worker is free again
  }
}

int Runner::Accept(const json::array& tasks) {
  int fresh = 0;
  {
    std::lock_guard lk(mu_);
    for (const auto& item : tasks) {
      auto t = ParseLeased(item);
      if (!t) {
        logger_.Warn("ignoring a malformed task", {{"task", json::serialize(item).substr(0, 200)}});
        continue;
      }
      if (held_.count(t->job.id)) continue;  // already ours
      logger_.Info("task assigned", {{"task_id", t->job.id}, {"lease", t->lease}});
      held_.insert(t->job.id);
      queue_.push_back(std::move(*t));
      ++fresh;
    }
  }
  cv_.notify_all();
  return fresh;
}

void Runner::Cancelled(const std::string& task_id) {
  bool dropped = false;
  {
    std::lock_guard lk(mu_);
    auto waiting = std::find_if(queue_.begin(), queue_.end(), [&](const Leased& t) { return t.job.id == task_id; });
    if (waiting != queue_.end()) {
      queue_.erase(waiting);
      held_.erase(task_id);
      dropped = true;
    } else if (auto it = running_.find(task_id); it != running_.end()) {
      it->second->cancelled = true;
      it->second->stop = true;
    } else {
      return;  // not (or no longer) ours
    }
  }
  logger_.Info("task cancelled by the server", {{"task_id", task_id}, {"was", dropped ? "waiting" : "running"}});
  cv_.notify_all();
  if (auto ch = channel(); ch && dropped) ch->Send({{"type", "credit"}, {"n", 1}});  // its place is free
}

void Runner::Heartbeat() {
  int running;
  {
    std::lock_guard lk(mu_);
    running = busy_ + static_cast<int>(queue_.size());
  }
  int load = std::min(100, running * 100 / std::max(1, config_.workers));
  json::object body{{"load", load}, {"running", running}};
  if (auto ch = channel()) {
    body["type"] = "heartbeat";
    ch->Send(body);  // answered only if refused (the channel's OnError)
    return;
  }
  auto r = CallApi(config_.server, config_.credential, "POST", "/api/v1/nodes/" + config_.node_id + "/heartbeat",
                   json::serialize(body), 5s);
  if (!r) logger_.Warn("heartbeat failed", {{"error", r.error().message}});
}

bool Runner::ServeSocket(const std::atomic<bool>& stop) {
  std::vector<std::string> holding;
  int free;
  {
    std::lock_guard lk(mu_);
    holding.assign(held_.begin(), held_.end());
    free = std::max(0, config_.workers - busy_ - static_cast<int>(queue_.size()));
  }
  // Pushed tasks that were ours already used a credit for nothing: give it back.
  auto weak = std::make_shared<std::weak_ptr<Channel>>();
  auto opened = Channel::Open(
      config_.server, config_.credential, config_.node_id, free, holding,
      [this, weak](const json::array& tasks) {
        int fresh = Accept(tasks);
        int wasted = static_cast<int>(tasks.size()) - fresh;
        if (auto ch = weak->lock(); ch && wasted > 0) {
          ch->Send({{"type", "credit"}, {"n", wasted}});
        }
      },
      [this](const Error& e) {
        if (e.code != "node_reattached") {
          logger_.Warn("refused on the node socket", {{"code", e.code}, {"error", e.message}});
          return;
        }
        replaced_ = true;
        logger_.Error(
            "another connection attached as this node and took its socket: is a second smart-node "
            "running with this node's state file? This one claims over HTTP meanwhile",
            {{"code", e.code}, {"node_id", config_.node_id}, {"retry_in_ms", config_.ws_retry.count()}});
      },
      [this](const std::string& task_id) { Cancelled(task_id); });
  if (!opened) {
    logger_.Warn("node socket unavailable; claiming over HTTP",
                 {{"error", opened.error().message}, {"retry_in_ms", config_.ws_retry.count()}});
    return false;
  }
  std::shared_ptr<Channel> ch = std::move(opened).value();
  *weak = ch;
  {
    std::lock_guard lk(mu_);
    channel_ = ch;
  }
  logger_.Info("node socket open: work is pushed", {{"credit", free}});
  while (!stop.load() && ch->open()) std::this_thread::sleep_for(50ms);
  {
    std::lock_guard lk(mu_);
    channel_.reset();
  }
  ch->Close();
  if (!stop.load()) logger_.Warn("node socket closed; claiming over HTTP until it is back");
  return true;
}

void Runner::ClaimOverHttp(const std::atomic<bool>& stop, std::chrono::milliseconds& pause) {
  int free;
  std::string holding;
  {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, 200ms, [&] { return busy_ + static_cast<int>(queue_.size()) < config_.workers || stop.load(); });
    free = config_.workers - busy_ - static_cast<int>(queue_.size());
    // The tasks it holds, so that any assignment whose answer was lost comes again.
    for (const auto& id : held_) holding += (holding.empty() ? "\"" : ",\"") + id + "\"";
  }
  if (free <= 0 || stop.load()) return;
  // A short wait: stop requests are noticed within a couple of seconds.
  std::string body = "{\"max\":" + std::to_string(free) +
                     ",\"wait_s\":" + std::to_string(std::min(config_.claim_wait_s, 2)) + ",\"holding\":[" + holding +
                     "]}";
  auto r = CallApi(config_.server, config_.credential, "POST", "/api/v1/nodes/" + config_.node_id + "/claim", body,
                   std::chrono::seconds(config_.claim_wait_s + 10));
  if (!r) {
    logger_.Warn("claim failed", {{"error", r.error().message}, {"retry_in_ms", pause.count()}});
    if (r.error().kind != ErrorKind::kUnavailable) pause = 5s;  // a refusal: no point hurrying
    for (auto slept = 0ms; slept < pause && !stop.load(); slept += 50ms) std::this_thread::sleep_for(50ms);
    pause = std::min<std::chrono::milliseconds>(pause * 2, 10s);
    return;
  }
  pause = 200ms;
  boost::system::error_code ec;
  auto v = json::parse(*r, ec);
  if (ec || !v.is_object()) return;
  const auto* tasks = v.as_object().if_contains("tasks");
  if (tasks && tasks->is_array()) Accept(tasks->as_array());
}

void Runner::Run(const std::atomic<bool>& stop) {
  std::vector<std::thread> workers;
  for (int i = 0; i < config_.workers; ++i)
    workers.emplace_back([this] {
      NameThread("node-worker");
      Work();
    });
  std::atomic<bool> beat_stop{false};
  std::thread heartbeats([&] {
    NameThread("node-beats");
    while (!beat_stop.load()) {
      Heartbeat();
      for (auto slept = 0ms; slept < config_.heartbeat && !beat_stop.load(); slept += 50ms)
        std::this_thread::sleep_for(50ms);
    }
  });

  auto pause = 200ms;
  auto next_socket = std::chrono::steady_clock::now();
  while (!stop.load()) {
    if (config_.transport != "http" && std::chrono::steady_clock::now() >= next_socket) {
      bool served = ServeSocket(stop);
      // Closed after serving: try again soon; could not open, or taken by
      // another connection of this node: HTTP for a while.
      bool replaced = replaced_.exchange(false);
      next_socket = std::chrono::steady_clock::now() + (served && !replaced ? 1s : config_.ws_retry);
      continue;
    }
    ClaimOverHttp(stop, pause);
  }

  // Draining: finish what runs, give back what waits, then cancel the rest.
  logger_.Info("stopping: no new claims", {{"drain_ms", config_.drain.count()}});
  std::deque<Leased> waiting;
  {
    std::lock_guard lk(mu_);
    waiting.swap(queue_);
    closing_ = true;
  }
  cv_.notify_all();
  for (const auto& t : waiting) (void)Report(t, "release", {}, 10s);
  {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, config_.drain, [&] { return busy_ == 0; })) {
      cancel_ = true;
      for (auto& [id, stop] : running_) stop->stop = true;
    }
  }
  for (auto& w : workers) w.join();
  beat_stop = true;
  heartbeats.join();
  logger_.Info("stopped");
}

}  // namespace smart::node
