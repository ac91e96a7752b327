// The only translation unit that sees Beast and Asio (see ARCHITECTURE.md on
// compile cost). Each I/O thread owns an io_context; a connection's coroutine
// and everything it touches run on that one thread, so connection state needs
// no locks. Cross-thread calls (Shutdown, WebSocket::Send) post to it.
#include "smart/http/server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "later.hpp"
#include "smart/core/ids.hpp"
#include "smart/core/log.hpp"
#include "smart/core/thread_name.hpp"
#include "smart/metrics/metrics.hpp"

namespace smart::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace websocket = boost::beast::websocket;
using tcp = asio::ip::tcp;
using beast::error_code;

namespace {

// A connection the server can reach during shutdown.
class Tracked {
 public:
  virtual ~Tracked() = default;
  // Runs on the connection's own thread once shutdown begins.
  virtual void OnShutdown() = 0;
  virtual asio::any_io_executor executor() = 0;
};

// What the innermost handler needs from the connection that called the chain.
// Handlers run synchronously on the connection's thread, so a thread-local is
// an exact and allocation-free way to pass it past the user's middlewares.
struct DispatchContext {
  const Router::Match* match = nullptr;
  bool upgrade = false;
  asio::any_io_executor executor;
  std::shared_ptr<WebSocket> ws;  // created by the innermost handler for an accepted upgrade
};
thread_local DispatchContext* t_dispatch = nullptr;

// Takes a waiting connection's wake function back from a Later.
struct WakeGuard {
  detail::Later* later;
  ~WakeGuard() {
    std::lock_guard lk(later->mu);
    later->wake = nullptr;
  }
};

const std::string& HttpDate() {
  thread_local time_t cached = 0;
  thread_local std::string text;
  time_t now = std::time(nullptr);
  if (now != cached) {
    cached = now;
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    text = buf;
  }
  return text;
}

bool IsDisconnect(const error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::operation_aborted || ec == asio::error::broken_pipe || ec == asio::error::bad_descriptor ||
         ec == beast::error::timeout;
}

}  // namespace

class WsConnection;

struct Server::Impl {
  Impl(ServerOptions o, Router r, std::vector<Middleware> mws, log::Logger& l, metrics::Registry& reg)
      : opt(std::move(o)), router(std::move(r)), logger(l) {
    open_connections = &reg.AddGauge("http_open_connections", "Open HTTP and WebSocket connections.").WithLabels({});
    rejected = &reg.AddCounter("http_rejected_connections_total", "Connections refused at the connection limit.")
                    .WithLabels({});
    chain = [this](Request& req) { return Dispatch(req); };
    for (auto it = mws.rbegin(); it != mws.rend(); ++it) {
      chain = [mw = std::move(*it), next = std::move(chain)](Request& req) { return mw(req, next); };
    }
  }

  Response Dispatch(Request& req);
  Response Handle(Request& req, DispatchContext& ctx);
  Response Answer(Request& req, detail::Later& later, bool& threw);
  asio::awaitable<void> Accept();
  asio::awaitable<void> Session(tcp::socket socket);
  asio::awaitable<void> RejectBusy(tcp::socket socket);
  asio::awaitable<bool> Write(beast::tcp_stream& stream, Response res, bool keep_alive, bool head);
  std::optional<Response> ReadFailure(const error_code& ec, std::string_view part);
  asio::awaitable<void> RunWebSocket(std::shared_ptr<WsConnection> ws, bhttp::request<bhttp::string_body> upgrade);

  void Track(Tracked* t, std::weak_ptr<Tracked> w) {
    std::lock_guard lock(tracked_mu);
    tracked.emplace(t, std::move(w));
    open_connections->Add(1);
  }
  void Untrack(Tracked* t) {
    std::lock_guard lock(tracked_mu);
    tracked.erase(t);
    open_connections->Add(-1);
    if (tracked.empty()) tracked_cv.notify_all();
  }
  size_t TrackedCount() {
    std::lock_guard lock(tracked_mu);
    return tracked.size();
  }

  ServerOptions opt;
  Router router;
  log::Logger& logger;
  Handler chain;
  metrics::Gauge* open_connections;
  metrics::Counter* rejected;

  std::mutex tracked_mu;
  std::condition_variable tracked_cv;
  std::unordered_map<Tracked*, std::weak_ptr<Tracked>> tracked;

  std::atomic<bool> draining{false};
  std::atomic<bool> stopped{false};
  std::mutex shutdown_mu;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<asio::thread_pool> workers;
  std::unique_ptr<asio::thread_pool> pollers;
  uint16_t bound_port = 0;
  std::vector<std::thread> threads;
};

// ---------------------------------------------------------------------------
// WebSocket connection

class WsConnection final : public WebSocket, public Tracked, public std::enable_shared_from_this<WsConnection> {
 public:
  WsConnection(Server::Impl& server, asio::any_io_executor ex) : server_(server), ex_(std::move(ex)) {}
  ~WsConnection() override {
    if (tracked_) server_.Untrack(this);
  }

  void SetCallbacks(WsCallbacks callbacks, std::string admit_or_close) {
    callbacks_ = std::move(callbacks);
    admit_or_close_ = std::move(admit_or_close);
    admitted_ = admit_or_close_.empty();
  }

  void Attach(beast::tcp_stream stream) {
    ws_.emplace(std::move(stream));
    server_.Track(this, weak_from_this());
    tracked_ = true;
  }

  websocket::stream<beast::tcp_stream>& stream() { return *ws_; }
  asio::any_io_executor executor() override { return ex_; }

  using WebSocket::Send;
  SendResult Send(std::shared_ptr<const std::string> text, std::function<void()> on_written) override {
    if (closed_.load()) return SendResult::kClosed;
    if (queued_.fetch_add(1) >= server_.opt.ws_send_queue_limit) {
      queued_.fetch_sub(1);
      return SendResult::kQueueFull;
    }
    asio::post(ex_, [self = shared_from_this(), m = Outgoing{std::move(text), std::move(on_written)}]() mutable {
      self->Enqueue(std::move(m));
    });
    return SendResult::kQueued;
  }

  void Close(uint16_t code, std::string reason) override {
    asio::post(ex_, [self = shared_from_this(), code, r = std::move(reason)]() mutable {
      self->StartClose(code, std::move(r));
    });
  }

  size_t queued() const override { return queued_.load(); }

  void Admit() override { admitted_ = true; }

  void OnShutdown() override { StartClose(close_code::kGoingAway, "server shutting down"); }

  // Called on the connection's thread once the handshake has completed.
  void Opened() {
    open_ = true;
    if (!admitted_.load()) {
      admit_timer_.emplace(ex_, server_.opt.header_timeout);
      admit_timer_->async_wait([weak = weak_from_this()](error_code ec) {
        auto self = weak.lock();
        if (ec || !self || self->admitted_.load()) return;
        self->StartClose(close_code::kPolicyViolation, std::move(self->admit_or_close_));
      });
    }
    WriteNext();
  }

  asio::awaitable<void> ReadLoop() {
    beast::flat_buffer buffer;
    error_code ec;
    for (;;) {
      co_await ws_->async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      if (callbacks_.on_message) {
        auto data = buffer.data();
        callbacks_.on_message(std::string_view(static_cast<const char*>(data.data()), data.size()));
      }
      buffer.consume(buffer.size());
    }
    uint16_t code = ws_->reason().code != 0 ? static_cast<uint16_t>(ws_->reason().code) : sent_code_;
    if (ec == websocket::error::message_too_big) code = close_code::kTooBig;
    Ended(code);
  }

  // The connection is over (also when its handshake failed): on_close runs once.
  void Ended(uint16_t code) {
    closed_ = true;
    if (admit_timer_) admit_timer_->cancel();
    if (code == 0) code = 1006;  // closed without a close frame
    auto on_close = std::move(callbacks_.on_close);
    callbacks_ = {};  // breaks cycles through handler captures
    if (on_close) on_close(code);
  }

 private:
  struct Outgoing {
    std::shared_ptr<const std::string> text;
    std::function<void()> on_written;
  };

  void Enqueue(Outgoing m) {
    if (closed_.load() || closing_) {
      queued_.fetch_sub(1);
      return;
    }
    queue_.push_back(std::move(m));
    if (open_ && !writing_) WriteNext();
  }

  void WriteNext() {
    if (queue_.empty()) {
      writing_ = false;
      if (closing_) SendClose();  // what was queued before Close has been written
      return;
    }
    writing_ = true;
    ws_->text(true);
    ws_->async_write(asio::buffer(*queue_.front().text), [self = shared_from_this()](error_code ec, size_t) {
      auto on_written = std::move(self->queue_.front().on_written);
      self->queue_.pop_front();
      self->queued_.fetch_sub(1);
      if (ec) {
        self->writing_ = false;
        return;  // The read loop sees the failure and ends the connection.
      }
      if (on_written) on_written();
      self->WriteNext();
    });
  }

  void StartClose(uint16_t code, std::string reason) {
    if (closing_ || closed_.load() || !ws_) return;
    closing_ = true;
    sent_code_ = code;
    if (!open_) {
      beast::get_lowest_layer(*ws_).close();
      return;
    }
    close_reason_ = websocket::close_reason(static_cast<websocket::close_code>(code), reason);
    // Messages queued before the close go first (an error explaining it), unless
    // there are many: a reader that far behind gets the close at once.
    if (queue_.size() > kFlushOnClose) {
      queued_.fetch_sub(writing_ ? queue_.size() - 1 : queue_.size());
      queue_.erase(writing_ ? queue_.begin() + 1 : queue_.begin(), queue_.end());
    }
    if (!writing_) SendClose();
  }

  void SendClose() {
    ws_->async_close(close_reason_, [self = shared_from_this()](error_code) {});
  }

  static constexpr size_t kFlushOnClose = 16;

  Server::Impl& server_;
  asio::any_io_executor ex_;
  std::optional<websocket::stream<beast::tcp_stream>> ws_;
  WsCallbacks callbacks_;
  std::string admit_or_close_;        // the close reason if not admitted in time
  std::atomic<bool> admitted_{true};  // Admit may come from any thread
  std::optional<asio::steady_timer> admit_timer_;
  std::deque<Outgoing> queue_;
  std::atomic<size_t> queued_{0};
  std::atomic<bool> closed_{false};
  bool open_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool tracked_ = false;
  uint16_t sent_code_ = 0;
  websocket::close_reason close_reason_;
};

// ---------------------------------------------------------------------------
// HTTP connection

namespace {

class HttpConnection final : public Tracked {
 public:
  HttpConnection(Server::Impl& server, tcp::socket socket) : server_(server), stream(std::move(socket)) {}
  ~HttpConnection() override {
    if (tracked_) server_.Untrack(this);
  }
  void Register(std::weak_ptr<Tracked> self) {
    server_.Track(this, std::move(self));
    tracked_ = true;
  }
  asio::any_io_executor executor() override { return stream.get_executor(); }
  void OnShutdown() override {
    if (idle) {
      error_code ec;
      stream.socket().shutdown(tcp::socket::shutdown_both, ec);
      stream.socket().close(ec);
    }
    if (waiting) waiting->cancel();  // a long poll answers now
  }

  Server::Impl& server_;
  beast::tcp_stream stream;
  bool idle = true;
  asio::steady_timer* waiting = nullptr;  // while waiting for a Later answer
  bool tracked_ = false;
};

Request ToRequest(bhttp::request<bhttp::string_body>&& in, const std::string& remote) {
  Request req;
  req.method_text = std::string(in.method_string());
  req.method = ParseMethod(req.method_text);
  req.target = std::string(in.target());
  std::string_view target = req.target;
  if (!target.starts_with("/")) {
    // absolute-form (RFC 9112 §3.2.2): drop scheme and authority.
    auto scheme = target.find("://");
    if (scheme != std::string_view::npos) {
      auto slash = target.find('/', scheme + 3);
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
  }
  auto q = target.find('?');
  req.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));
  for (const auto& f : in) req.headers.Add(std::string(f.name_string()), std::string(f.value()));
  req.keep_alive = in.keep_alive();
  req.body = std::move(in.body());
  req.remote_address = remote;
  return req;
}

}  // namespace

Response Server::Impl::Dispatch(Request& req) {
  DispatchContext* ctx = t_dispatch;
  try {
    return Handle(req, *ctx);
  } catch (const std::exception& e) {
    logger.Error("unhandled exception", {{"request_id", req.request_id}, {"route", req.route}, {"what", e.what()}});
  } catch (...) {
    logger.Error("unhandled exception", {{"request_id", req.request_id}, {"route", req.route}});
  }
  // The one place where an exception becomes a response; internals stay in the log.
  return MakeProblem(req,
                     {.status = 500,
                      .code = "internal_error",
                      .detail = "The server failed to handle this request; quote the request id when reporting it."});
}

Response Server::Impl::Handle(Request& req, DispatchContext& ctx) {
  const Router::Match& m = *ctx.match;
  if (ctx.upgrade && req.method == Method::kGet) {
    auto ws = std::make_shared<WsConnection>(*this, ctx.executor);
    WsAccept accept = (*m.ws)(req, ws);
    if (accept.reject) return std::move(*accept.reject);
    ws->SetCallbacks(std::move(accept.callbacks), std::move(accept.admit_or_close));
    ctx.ws = std::move(ws);
    return Response::Empty(101);
  }
  if (m.handler) return (*m.handler)(req);
  if (!m.path_found) {
    return MakeProblem(req, {.status = 404, .code = "not_found", .detail = "No resource at " + req.path + "."});
  }
  if (req.method == Method::kOptions) {
    Response res = Response::Empty(204);
    res.headers.Add("Allow", std::string(m.allow));
    return res;
  }
  if (m.ws && req.method == Method::kGet) {
    Response res = MakeProblem(req, {.status = 426,
                                     .code = "websocket_upgrade_required",
                                     .detail = req.path + " accepts WebSocket connections only."});
    res.headers.Add("Upgrade", "websocket");
    return res;
  }
  Response res = MakeProblem(req, {.status = 405,
                                   .code = "method_not_allowed",
                                   .detail = req.method_text + " is not allowed on " + std::string(m.route) + "."});
  res.headers.Add("Allow", std::string(m.allow));
  return res;
}

asio::awaitable<void> Server::Impl::Accept() {
  size_t next = 0;
  for (;;) {
    auto& ctx = *contexts[next++ % contexts.size()];
    error_code ec;
    tcp::socket socket = co_await acceptor->async_accept(ctx, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (draining.load() || ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      logger.Warn("accept failed", {{"error", ec.message()}});
      // Out of descriptors: back off rather than spin.
      asio::steady_timer timer(acceptor->get_executor(), std::chrono::milliseconds(50));
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (TrackedCount() >= opt.max_connections) {
      rejected->Inc();
      asio::co_spawn(ctx, RejectBusy(std::move(socket)), asio::detached);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    asio::co_spawn(ctx, Session(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> Server::Impl::RejectBusy(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  Response res = MakeProblem(NewUlid(), {.status = 503,
                                         .code = "too_many_connections",
                                         .detail = "The server is at its connection limit; retry shortly."});
  res.headers.Add("Retry-After", "1");
  co_await Write(stream, std::move(res), false, false);
  error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

asio::awaitable<bool> Server::Impl::Write(beast::tcp_stream& stream, Response res, bool keep_alive, bool head) {
  bhttp::response<bhttp::string_body> out;
  out.version(11);
  out.result(static_cast<unsigned>(res.status));
  for (auto& [k, v] : res.headers.fields()) out.insert(k, v);
  out.set(bhttp::field::date, HttpDate());
  out.keep_alive(keep_alive);
  size_t size = res.body.size();
  out.body() = std::move(res.body);
  if (res.status != 204 && res.status != 304 && res.status >= 200) out.content_length(size);
  if (head) out.body().clear();  // Content-Length still describes the GET body (RFC 9110 §9.3.2).
  stream.expires_after(opt.write_timeout);
  error_code ec;
  co_await bhttp::async_write(stream, out, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

// The final response of a Later, with the middlewares' hooks applied;
// `threw` when a hook threw (a bug: the connection is dropped).
Response Server::Impl::Answer(Request& req, detail::Later& later, bool& threw) {
  std::function<Response()> make;
  {
    std::lock_guard lk(later.mu);
    make = std::move(later.make);
    later.wake = nullptr;
  }
  std::optional<Response> res;
  try {
    if (make) res = make();
  } catch (const std::exception& e) {
    logger.Error("answer failed", {{"request_id", req.request_id}, {"route", req.route}, {"what", e.what()}});
  } catch (...) {
    logger.Error("answer failed", {{"request_id", req.request_id}, {"route", req.route}});
  }
  if (!make) logger.Error("answer lost: the reply was dropped", {{"request_id", req.request_id}, {"route", req.route}});
  if (!res) {
    res = MakeProblem(req,
                      {.status = 500,
                       .code = "internal_error",
                       .detail = "The server failed to answer this request; quote the request id when reporting it."});
  }
  try {
    for (auto& fn : later.then) fn(*res);
  } catch (...) {
    logger.Error("middleware threw", {{"request_id", req.request_id}});
    threw = true;
  }
  return std::move(*res);
}

// GCC 12 mis-allocates coroutine frame slots for same-named locals in sibling
// scopes and for temporaries inside co_await expressions, so these coroutines
// keep one error_code per frame and build responses into named locals.
asio::awaitable<void> Server::Impl::Session(tcp::socket socket) {
  error_code ec;
  auto endpoint = socket.remote_endpoint(ec);
  std::string remote = ec ? std::string("unknown") : endpoint.address().to_string();
  auto conn = std::make_shared<HttpConnection>(*this, std::move(socket));
  conn->Register(conn);
  beast::flat_buffer buffer;
  bool first = true;
  std::optional<Response> failure;  // a final answer before closing, when the request was bad
  for (;;) {
    // Wait for the first bytes of a request with the idle timeout, then give the
    // whole header the (shorter) header timeout: a slow drip cannot hold the connection.
    if (buffer.size() == 0) {
      conn->idle = true;
      if (draining.load()) break;
      conn->stream.expires_after(first ? opt.header_timeout : opt.idle_timeout);
      size_t n =
          co_await conn->stream.async_read_some(buffer.prepare(4096), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      buffer.commit(n);
    }
    conn->idle = false;
    first = false;

    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(static_cast<uint32_t>(opt.max_header_bytes));
    parser.body_limit(opt.max_body_bytes);
    conn->stream.expires_after(opt.header_timeout);
    co_await bhttp::async_read_header(conn->stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      failure = ReadFailure(ec, "header");
      break;
    }
    if (auto len = parser.content_length(); len && *len > opt.max_body_bytes) {
      failure = ReadFailure(bhttp::error::body_limit, "body");
      break;
    }
    bool upgrade = websocket::is_upgrade(parser.get());
    if (!parser.is_done()) {
      if (http::IEquals(parser.get()[bhttp::field::expect], "100-continue")) {
        bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
        co_await bhttp::async_write(conn->stream, cont, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) break;
      }
      conn->stream.expires_after(opt.body_timeout);
      co_await bhttp::async_read(conn->stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        failure = ReadFailure(ec, "body");
        break;
      }
    }

    // Keep a copy of an upgrade request: Beast's handshake needs it after ours is consumed.
    std::optional<bhttp::request<bhttp::string_body>> upgrade_req;
    if (upgrade) upgrade_req = parser.get();
    Request req = ToRequest(parser.release(), remote);
    bool head = req.method == Method::kHead;
    Router::Match match = router.Find(req.method, req.path);
    req.route = match.route;
    req.params = std::move(match.params);
    req.allow = match.allow;

    DispatchContext dctx{&match, upgrade && match.ws != nullptr, conn->stream.get_executor(), nullptr};
    bool offload = match.blocking && !dctx.upgrade;
    if (offload) {
      // Hop to the worker pool; the connection is not touched until we hop back.
      asio::thread_pool& pool = match.long_poll ? *pollers : *workers;
      co_await asio::dispatch(asio::bind_executor(pool.get_executor(), asio::use_awaitable));
      NameThread(match.long_poll ? "http-poll" : "http-worker");
    }
    t_dispatch = &dctx;
    Response res;
    bool threw = false;
    try {
      res = chain(req);
    } catch (const std::exception& e) {
      // A middleware threw (handlers are caught in Dispatch): a bug; drop the connection.
      logger.Error("middleware threw", {{"request_id", req.request_id}, {"what", e.what()}});
      threw = true;
    }
    t_dispatch = nullptr;
    if (offload) co_await asio::dispatch(asio::bind_executor(conn->stream.get_executor(), asio::use_awaitable));
    if (threw) break;
    if (res.later) {
      std::shared_ptr<detail::Later> later = std::move(res.later);
      // Woken from the answering thread by a cancel posted here; a frame
      // destroyed while waiting (the server's end) takes its wake back first.
      // A deadline, or the server's shutdown, answers with on_timeout.
      asio::steady_timer wake(conn->stream.get_executor(),
                              later->deadline.value_or(asio::steady_timer::time_point::max()));
      WakeGuard guard{later.get()};
      {
        std::lock_guard lk(later->mu);
        if (!later->given) later->wake = [&wake] { asio::post(wake.get_executor(), [&wake] { wake.cancel(); }); };
      }
      conn->waiting = &wake;
      while (!later->Given()) {
        if (later->on_timeout && draining.load()) {
          later->Give(later->on_timeout);
          continue;
        }
        co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (later->on_timeout && !ec) later->Give(later->on_timeout);  // the deadline passed
      }
      conn->waiting = nullptr;
      res = Answer(req, *later, threw);
      if (threw) break;
    }

    if (res.status == 101 && dctx.ws) {
      auto ws = std::static_pointer_cast<WsConnection>(dctx.ws);
      conn->stream.expires_never();
      ws->Attach(std::move(conn->stream));
      conn.reset();  // the WebSocket connection is tracked from here on
      co_await RunWebSocket(std::move(ws), std::move(*upgrade_req));
      co_return;
    }
    bool keep = req.keep_alive && !draining.load() && !upgrade;
    bool written = co_await Write(conn->stream, std::move(res), keep, head);
    if (!written || !keep) break;
  }
  if (failure) co_await Write(conn->stream, std::move(*failure), false, false);
  conn->stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  conn->stream.close();
}

std::optional<Response> Server::Impl::ReadFailure(const error_code& ec, std::string_view part) {
  if (ec == bhttp::error::header_limit) {
    return MakeProblem(NewUlid(),
                       {.status = 431,
                        .code = "header_too_large",
                        .detail = "The request's header exceeds " + std::to_string(opt.max_header_bytes) + " bytes."});
  }
  if (ec == bhttp::error::body_limit) {
    return MakeProblem(NewUlid(),
                       {.status = 413,
                        .code = "body_too_large",
                        .detail = "The request body exceeds " + std::to_string(opt.max_body_bytes) + " bytes."});
  }
  if (ec == beast::error::timeout) {
    return MakeProblem(NewUlid(), {.status = 408,
                                   .code = "request_timeout",
                                   .detail = "The request " + std::string(part) + " was not received in time."});
  }
  if (IsDisconnect(ec)) return std::nullopt;
  return MakeProblem(NewUlid(),
                     {.status = 400,
                      .code = "malformed_request",
                      .detail = "The request " + std::string(part) + " is not valid HTTP/1.1: " + ec.message() + "."});
}

asio::awaitable<void> Server::Impl::RunWebSocket(std::shared_ptr<WsConnection> ws,
                                                 bhttp::request<bhttp::string_body> upgrade) {
  auto& stream = ws->stream();
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = opt.header_timeout;
  timeouts.idle_timeout = opt.ws_idle_timeout;
  timeouts.keep_alive_pings = true;  // a ping at half the idle timeout; no answer closes
  stream.set_option(timeouts);
  stream.read_message_max(opt.ws_max_message_bytes);
  stream.auto_fragment(false);
  error_code ec;
  co_await stream.async_accept(upgrade, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    ws->Ended(1006);  // the handler's cleanup runs all the same
    co_return;
  }
  ws->Opened();
  co_await ws->ReadLoop();
}

// ---------------------------------------------------------------------------

Server::Server(ServerOptions options, Router router, std::vector<Middleware> middlewares, log::Logger& logger,
               metrics::Registry& registry)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(router), std::move(middlewares), logger, registry)) {}

Server::~Server() { Shutdown(); }

Result<void> Server::Start() {
  auto& im = *impl_;
  int n = im.opt.threads > 0 ? im.opt.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) {
    im.contexts.push_back(std::make_unique<asio::io_context>(1));
    im.guards.push_back(asio::make_work_guard(*im.contexts.back()));
  }
  error_code ec;
  auto address = asio::ip::make_address(im.opt.host, ec);
  if (ec) return Error::Invalid("bad_address", "http.host '" + im.opt.host + "' is not an IP address");
  tcp::endpoint ep(address, im.opt.port);
  auto acceptor = std::make_unique<tcp::acceptor>(*im.contexts[0]);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error::Unavailable(
        "listen_failed", "cannot listen on " + im.opt.host + ":" + std::to_string(im.opt.port) + ": " + ec.message());
  }
  im.bound_port = acceptor->local_endpoint().port();
  im.workers = std::make_unique<asio::thread_pool>(static_cast<size_t>(std::max(1, im.opt.worker_threads)));
  im.pollers = std::make_unique<asio::thread_pool>(static_cast<size_t>(std::max(1, im.opt.long_poll_threads)));
  im.acceptor = std::move(acceptor);
  asio::co_spawn(*im.contexts[0], im.Accept(), asio::detached);
  for (size_t i = 0; i < im.contexts.size(); ++i) {
    im.threads.emplace_back([c = im.contexts[i].get(), i] {
      NameThread("http-io-" + std::to_string(i));
      c->run();
    });
  }
  return Ok();
}

uint16_t Server::port() const { return impl_->bound_port; }

void Server::Shutdown() {
  auto& im = *impl_;
  std::lock_guard lock(im.shutdown_mu);
  if (im.stopped.exchange(true) || im.contexts.empty()) return;
  im.draining = true;
  asio::post(*im.contexts[0], [&im] {
    error_code ignored;
    if (im.acceptor) im.acceptor->close(ignored);
  });
  // Collect under the lock, notify outside it: the last reference to a
  // connection may be one of these, and its destructor takes the lock.
  std::vector<std::shared_ptr<Tracked>> live;
  {
    std::lock_guard tl(im.tracked_mu);
    for (auto& [ptr, weak] : im.tracked) {
      if (auto conn = weak.lock()) live.push_back(std::move(conn));
    }
  }
  for (auto& conn : live) asio::post(conn->executor(), [conn] { conn->OnShutdown(); });
  live.clear();
  std::unique_lock tl(im.tracked_mu);
  im.tracked_cv.wait_for(tl, im.opt.shutdown_grace, [&] { return im.tracked.empty(); });
  tl.unlock();
  for (auto& g : im.guards) g.reset();
  for (auto& ctx : im.contexts) ctx->stop();
  for (auto& t : im.threads) t.join();
  im.threads.clear();
  if (im.workers) im.workers->join();  // a handler still running finishes; nothing new starts
  if (im.pollers) im.pollers->join();
}

}  // namespace smart::http
