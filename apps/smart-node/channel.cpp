#include "channel.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "smart/core/thread_name.hpp"

namespace smart::node {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;

struct Channel::Impl : std::enable_shared_from_this<Impl> {
  asio::io_context ioc;
  tcp::resolver resolver{ioc};
  websocket::stream<beast::tcp_stream> ws{ioc};
  beast::flat_buffer buffer;
  // On the I/O thread only. Lease messages waiting together go in one
  // {"type":"batch"} frame, when the server takes batches (its welcome's max_batch).
  struct Outgoing {
    std::string text;
    bool lease = false;  // start, progress, result, fail or release
  };
  std::deque<Outgoing> outbox;
  std::string sending;  // the frame being written
  size_t max_batch = 0;
  bool writing = false;
  std::string host, port, target, credential;
  std::chrono::milliseconds timeout{5000};
  OnTasks on_tasks;
  OnError on_error;
  OnCancelled on_cancelled;
  std::thread thread;

  std::mutex mu;
  std::map<int64_t, std::promise<Result<json::object>>> pending;
  int64_t next_ref = 1;
  std::optional<std::promise<Result<void>>> welcomed;  // until the welcome (or the end) comes
  std::optional<Error> refusal;                        // the server's error before the welcome
  std::atomic<bool> is_open{false};

  void Start(std::string hello) {
    outbox.push_back({std::move(hello)});
    auto self = shared_from_this();
    beast::get_lowest_layer(ws).expires_after(timeout);
    resolver.async_resolve(host, port, [self](beast::error_code ec, tcp::resolver::results_type results) {
      if (ec) return self->End(ec.message());
      beast::get_lowest_layer(self->ws).async_connect(results, [self](beast::error_code ec, const tcp::endpoint&) {
        if (ec) return self->End(ec.message());
        beast::get_lowest_layer(self->ws).expires_never();  // the WebSocket keeps its own time from here
        auto opts = websocket::stream_base::timeout::suggested(beast::role_type::client);
        opts.idle_timeout = std::chrono::seconds(40);  // pings at half; a dead server is noticed
        opts.keep_alive_pings = true;
        opts.handshake_timeout = self->timeout;
        self->ws.set_option(opts);
        self->ws.set_option(websocket::stream_base::decorator(
            [cred = self->credential](websocket::request_type& req) { req.set("X-API-Key", cred); }));
        self->ws.async_handshake(self->host + ":" + self->port, self->target, [self](beast::error_code ec) {
          if (ec) return self->End(ec.message());
          self->is_open = true;
          self->Write();
          self->Read();
        });
      });
    });
    thread = std::thread([self] {
      NameThread("node-socket");
      self->ioc.run();
    });
  }

  void Read() {
    auto self = shared_from_this();
    ws.async_read(buffer, [self](beast::error_code ec, size_t) {
      if (ec) return self->End(ec.message());
      std::string text = beast::buffers_to_string(self->buffer.data());
      self->buffer.consume(self->buffer.size());
      self->Dispatch(text);
      self->Read();
    });
  }

  void Dispatch(const std::string& text) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object()) return;
    Handle(v.as_object());
  }

  void Handle(json::object& o) {
    const auto* type = o.if_contains("type");
    if (!type || !type->is_string()) return;
    if (*type == "tasks") {
      if (const auto* tasks = o.if_contains("tasks"); tasks && tasks->is_array() && on_tasks)
        on_tasks(tasks->as_array());
      return;
    }
    if (*type == "cancelled") {
      if (const auto* id = o.if_contains("task_id"); id && id->is_string() && on_cancelled)
        on_cancelled(std::string(id->as_string()));
      return;
    }
    if (*type == "batch") {  // the answers of a batch, each as if it came alone
      if (auto* answers = o.if_contains("answers"); answers && answers->is_array()) {
        for (auto& a : answers->as_array()) {
          if (a.is_object()) Handle(a.as_object());
        }
      }
      return;
    }
    if (*type == "welcome") {
      if (const auto* n = o.if_contains("max_batch"); n && n->is_int64() && n->as_int64() > 1) {
        max_batch = static_cast<size_t>(std::min<int64_t>(n->as_int64(), 1000));
      }
    }
    std::lock_guard lk(mu);
    if (*type == "welcome") {
      if (welcomed) welcomed->set_value(Ok());
      welcomed.reset();
      return;
    }
    const auto* ref = o.if_contains("ref");
    if (!ref || !ref->is_int64()) {
      if (*type != "error") return;
      if (welcomed) {
        refusal = AsError(o);  // a refused hello: the close follows
      } else if (on_error) {
        on_error(AsError(o));
      }
      return;
    }
    auto it = pending.find(ref->as_int64());
    if (it == pending.end()) return;  // its caller gave up waiting
    if (*type == "error") {
      it->second.set_value(AsError(o));
    } else {
      it->second.set_value(std::move(o));
    }
    pending.erase(it);
  }

  static Error AsError(const json::object& o) {
    auto field = [&](std::string_view k) {
      const auto* v = o.if_contains(k);
      return v && v->is_string() ? std::string(v->as_string()) : std::string();
    };
    std::string code = field("code"), detail = field("detail");
    if (code == "lease_stale" || code == "node_deactivated") return Error::Conflict(code, detail);
    if (code == "task_not_found" || code == "node_not_found") return Error::NotFound(code, detail);
    if (code == "node_not_yours") return Error::PermissionDenied(code, detail);
    return Error::Invalid(code, detail);
  }

  void Write() {
    if (writing || outbox.empty() || !is_open) return;
    writing = true;
    size_t n = 1;
    if (outbox.front().lease) {
      while (n < outbox.size() && n < max_batch && outbox[n].lease) ++n;
    }
    if (n == 1) {
      sending = std::move(outbox.front().text);
    } else {
      sending = R"({"type":"batch","messages":[)";
      for (size_t i = 0; i < n; ++i) sending.append(i ? "," : "").append(outbox[i].text);
      sending += "]}";
    }
    outbox.erase(outbox.begin(), outbox.begin() + static_cast<std::ptrdiff_t>(n));
    auto self = shared_from_this();
    ws.async_write(asio::buffer(sending), [self](beast::error_code ec, size_t) {
      self->writing = false;
      if (ec) return self->End(ec.message());
      self->Write();
    });
  }

  void Post(const json::object& message) {
    const auto* type = message.if_contains("type");
    bool lease =
        type && type->is_string() &&
        (*type == "start" || *type == "progress" || *type == "result" || *type == "fail" || *type == "release");
    asio::post(ioc, [self = shared_from_this(), out = Outgoing{json::serialize(message), lease}]() mutable {
      self->outbox.push_back(std::move(out));
      self->Write();
    });
  }

  // The connection is over: every waiter learns it.
  void End(const std::string& why) {
    is_open = false;
    beast::error_code ignored;
    beast::get_lowest_layer(ws).socket().close(ignored);
    std::lock_guard lk(mu);
    for (auto& [ref, p] : pending) p.set_value(Error::Unavailable("connection_closed", why));
    pending.clear();
    if (welcomed) welcomed->set_value(refusal ? *refusal : Error::Unavailable("websocket_unavailable", why));
    welcomed.reset();
    ioc.stop();  // nothing more to do here (the WebSocket's own timers would keep it running)
  }
};

Channel::Channel(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Channel::~Channel() {
  Close();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<Channel>> Channel::Open(const std::string& server, const std::string& credential,
                                               const std::string& node_id, int credit,
                                               const std::vector<std::string>& holding, OnTasks on_tasks,
                                               OnError on_error, OnCancelled on_cancelled,
                                               std::chrono::milliseconds timeout) {
  constexpr std::string_view kScheme = "http://";
  if (server.rfind(kScheme, 0) != 0) {
    return Error::Unavailable("websocket_unavailable", "the node socket is used with http:// servers only");
  }
  std::string rest = server.substr(kScheme.size());
  std::string prefix;
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    prefix = rest.substr(slash);
    rest.resize(slash);
  }
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  auto impl = std::make_shared<Impl>();
  if (auto colon = rest.rfind(':'); colon != std::string::npos && rest.find(']') == std::string::npos) {
    impl->host = rest.substr(0, colon);
    impl->port = rest.substr(colon + 1);
  } else {
    impl->host = rest;
    impl->port = "80";
  }
  impl->target = prefix + "/api/v1/nodes/ws";
  impl->credential = credential;
  impl->timeout = timeout;
  impl->on_tasks = std::move(on_tasks);
  impl->on_error = std::move(on_error);
  impl->on_cancelled = std::move(on_cancelled);
  json::array held;
  for (const auto& id : holding) held.emplace_back(id);
  std::future<Result<void>> welcome;
  {
    std::lock_guard lk(impl->mu);
    impl->welcomed.emplace();
    welcome = impl->welcomed->get_future();
  }
  auto channel = std::unique_ptr<Channel>(new Channel(impl));
  impl->Start(json::serialize(
      json::object{{"type", "hello"}, {"node_id", node_id}, {"credit", credit}, {"holding", std::move(held)}}));
  if (welcome.wait_for(timeout + std::chrono::seconds(1)) != std::future_status::ready) {
    return Error::Unavailable("websocket_unavailable", "no welcome from the server in time");
  }
  SMART_TRY(welcome.get());
  return channel;
}

Result<json::object> Channel::Call(json::object message, std::chrono::milliseconds timeout) {
  std::future<Result<json::object>> answer;
  int64_t ref;
  {
    std::lock_guard lk(impl_->mu);
    if (!impl_->is_open) return Error::Unavailable("connection_closed", "the node socket is closed");
    ref = impl_->next_ref++;
    answer = impl_->pending[ref].get_future();
  }
  message["ref"] = ref;
  impl_->Post(message);
  if (answer.wait_for(timeout) != std::future_status::ready) {
    std::lock_guard lk(impl_->mu);
    impl_->pending.erase(ref);
    return Error::Unavailable("timeout", "no answer on the node socket in time");
  }
  return answer.get();
}

void Channel::Send(const json::object& message) {
  if (impl_->is_open) impl_->Post(message);
}

bool Channel::open() const { return impl_->is_open; }

void Channel::Close() {
  asio::post(impl_->ioc, [impl = impl_] {
    if (!impl->is_open) return impl->End("closed");
    impl->is_open = false;
    // At most 2 s for the server's close frame, on a timer of its own: the
    // stream's timer may not be set while a read and a write are both
    // pending (a heartbeat on its way when the node stops; Beast asserts).
    auto timer = std::make_shared<asio::steady_timer>(impl->ioc, std::chrono::seconds(2));
    timer->async_wait([impl, timer](beast::error_code ec) {
      if (!ec) impl->End("closed");
    });
    impl->ws.async_close(websocket::close_code::normal, [impl, timer](beast::error_code) {
      timer->cancel();
      impl->End("closed");
    });
  });
}

}  // namespace smart::node
