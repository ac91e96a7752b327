// The server in-process, spoken to over real sockets: raw bytes for HTTP edge
// cases and Beast's own client for WebSocket.
#include "smart/http/server.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "smart/core/log.hpp"
#include "smart/http/client.hpp"
#include "smart/http/middleware.hpp"
#include "smart/metrics/metrics.hpp"
#include "smart/testing/http_client.hpp"

namespace smart::http {
namespace {

using namespace std::chrono_literals;
using testing::RawConnection;

class ServerTest : public ::testing::Test {
 protected:
  void StartServer(ServerOptions opt = {}, int threads = 2) {
    opt.port = 0;
    opt.threads = threads;
    Router r;
    r.Add(Method::kGet, "/hello", [](Request&) { return Response::Json(200, "{\"hello\":\"world\"}"); });
    r.Add(Method::kPost, "/echo", [](Request& req) { return Response::Text(200, req.body); });
    r.Add(Method::kGet, "/items/{id}", [](Request& req) { return Response::Text(200, std::string(req.Param("id"))); });
    r.Add(Method::kGet, "/throw", [](Request&) -> Response { throw std::runtime_error("secret internals"); });
    r.Add(Method::kGet, "/slow", [this](Request&) {
      slow_started_ = true;
      std::this_thread::sleep_for(1500ms);
      return Response::Text(200, "done");
    });
    r.Add(Method::kGet, "/blocking",
          [](Request&) {
            std::this_thread::sleep_for(800ms);
            return Response::Text(200, "slept");
          },
          {.blocking = true});
    // Answered later from another thread, after {ms} milliseconds; the
    // answer reads the request, which must still be alive.
    r.Add(Method::kGet, "/later/{ms}", [this](Request& req) {
      auto [res, reply] = Response::Later();
      int ms = std::stoi(std::string(req.Param("ms")));
      std::lock_guard lk(answerers_mu_);
      answerers_.emplace_back([reply, ms, &req] {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        reply([&req] { return Response::Text(201, "later " + std::string(req.Param("ms"))); });
      });
      return res;
    });
    // A long poll: answered at {ms} milliseconds unless /poke comes first.
    r.Add(Method::kGet, "/poll/{ms}", [this](Request& req) {
      auto [res, reply] = Response::Later(std::chrono::milliseconds(std::stoi(std::string(req.Param("ms")))),
                                          [] { return Response::Text(200, "timed out"); });
      std::lock_guard lk(answerers_mu_);
      polls_.push_back(reply);
      return res;
    });
    r.Add(Method::kPost, "/poke", [this](Request&) {
      std::lock_guard lk(answerers_mu_);
      for (auto& reply : polls_) reply([] { return Response::Text(200, "poked"); });
      polls_.clear();
      return Response::Empty(204);
    });
    r.Add(Method::kGet, "/later-at-once", [](Request&) {
      auto [res, reply] = Response::Later();
      reply([] { return Response::Text(200, "at once"); });
      reply([] { return Response::Text(200, "twice"); });  // the first answer wins
      return res;
    });
    r.Add(Method::kGet, "/later-dropped", [](Request&) { return Response::Later().first; });
    r.Add(Method::kGet, "/later-throws", [](Request&) {
      auto [res, reply] = Response::Later();
      reply([]() -> Response { throw std::runtime_error("secret internals"); });
      return res;
    });
    r.AddWebSocket("/ws/echo", [this](Request& req, std::shared_ptr<WebSocket> ws) {
      if (req.Query("token") == "bad") {
        return WsAccept{.reject = MakeProblem(req, {.status = 401, .code = "unauthorized", .detail = "no"})};
      }
      ws->Send("welcome");
      ++ws_accepted_;
      std::weak_ptr<WebSocket> weak = ws;
      return WsAccept{.callbacks = {.on_message =
                                        [this, weak](std::string_view msg) {
                                          auto self = weak.lock();
                                          if (!self) return;
                                          if (msg == "explain and close") {  // the reason first, then the close
                                            for (int i = 0; i < 3; ++i) self->Send("reason " + std::to_string(i));
                                            self->Close(close_code::kPolicyViolation, "policy");
                                            return;
                                          }
                                          if (msg == "flood") {
                                            for (int i = 0; i < 100; ++i) {
                                              auto r = self->Send("x");
                                              flood_queued_ += r == WebSocket::SendResult::kQueued;
                                              flood_full_ += r == WebSocket::SendResult::kQueueFull;
                                            }
                                            return;
                                          }
                                          self->Send("echo:" + std::string(msg));
                                        },
                                    .on_close =
                                        [this](uint16_t code) {
                                          last_close_code_ = code;
                                          ++ws_closed_;
                                        }}};
    });
    // Must say "me" (Admit) within the header timeout.
    r.AddWebSocket("/ws/admit", [](Request&, std::shared_ptr<WebSocket> ws) {
      std::weak_ptr<WebSocket> weak = ws;
      return WsAccept{.callbacks = {.on_message =
                                        [weak](std::string_view msg) {
                                          auto self = weak.lock();
                                          if (!self) return;
                                          if (msg == "me") self->Admit();
                                          self->Send("echo:" + std::string(msg));
                                        }},
                      .admit_or_close = "say who you are"};
    });
    server_ = std::make_unique<Server>(opt, std::move(r),
                                       std::vector<Middleware>{RequestId(), AccessLog(logger_), Metrics(registry_),
                                                               SecurityHeaders(), Cors({"https://app.example"})},
                                       logger_, registry_);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    for (auto& t : answerers_) t.join();
  }

  log::Logger logger_{log::Level::kError};
  metrics::Registry registry_;
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
  std::atomic<bool> slow_started_{false};
  std::atomic<int> last_close_code_{0};
  std::atomic<int> flood_queued_{0}, flood_full_{0};
  std::atomic<int> ws_accepted_{0}, ws_closed_{0};  // handler accepted, on_close called
  std::mutex answerers_mu_;
  std::vector<std::thread> answerers_;  // answering /later requests
  std::vector<Reply> polls_;            // /poll requests waiting for /poke
};

TEST_F(ServerTest, KeepAliveServesManyRequestsOnOneConnection) {
  StartServer();
  RawConnection c(port_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto r = c.ReadResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "{\"hello\":\"world\"}");
    EXPECT_EQ(r->Header("content-type"), "application/json");
    EXPECT_FALSE(r->Header("date").empty());
    EXPECT_EQ(r->Header("x-content-type-options"), "nosniff");
    EXPECT_EQ(r->Header("x-request-id").size(), 26u);
  }
}

// /hello is served within `limit` (while another request waits on the one I/O thread).
void ExpectHelloWithin(uint16_t port, std::chrono::milliseconds limit) {
  auto start = std::chrono::steady_clock::now();
  auto r = testing::Request(port, "GET", "/hello");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - start, limit) << "served while the other request waits";
}

TEST_F(ServerTest, BlockingHandlersDoNotStallTheIoThread) {
  StartServer({}, 1);  // one I/O thread: an inline sleep would stall every connection
  RawConnection slow(port_);
  slow.Send("GET /blocking HTTP/1.1\r\nHost: x\r\n\r\n");
  std::this_thread::sleep_for(100ms);
  ExpectHelloWithin(port_, 400ms);
  auto s = slow.ReadResponse();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->body, "slept");
  // The connection still works after hopping back from the pool.
  slow.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  auto again = slow.ReadResponse();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
}

TEST_F(ServerTest, ALaterAnswerHoldsNoThreadAndPassesTheMiddlewares) {
  StartServer({}, 1);  // one I/O thread: were it held by the waiting request, /hello would wait too
  RawConnection waiting(port_);
  waiting.Send("GET /later/600 HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nX-Request-Id: r-1\r\n\r\n");
  std::this_thread::sleep_for(100ms);
  ExpectHelloWithin(port_, 300ms);
  auto later = waiting.ReadResponse();
  ASSERT_TRUE(later);
  EXPECT_EQ(later->status, 201);
  EXPECT_EQ(later->body, "later 600");
  // Each middleware's work lands on the final response, not on the placeholder.
  EXPECT_EQ(later->Header("x-request-id"), "r-1");
  EXPECT_EQ(later->Header("x-content-type-options"), "nosniff");
  EXPECT_EQ(later->Header("access-control-allow-origin"), "https://app.example");
  std::string text = registry_.Render();
  EXPECT_NE(text.find("http_requests_total{method=\"GET\",route=\"/later/{ms}\",status=\"201\"} 1"), std::string::npos)
      << text;
  // The connection goes on.
  waiting.Send("GET /later/0 HTTP/1.1\r\nHost: x\r\n\r\n");
  auto again = waiting.ReadResponse();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->body, "later 0");
}

TEST_F(ServerTest, ALaterAnswerGivenAtOnceDroppedOrThrowing) {
  StartServer();
  auto r = testing::Request(port_, "GET", "/later-at-once");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "at once");
  for (const char* path : {"/later-dropped", "/later-throws"}) {
    r = testing::Request(port_, "GET", path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 500) << path;
    EXPECT_NE(r->body.find("internal_error"), std::string::npos) << path;
    EXPECT_EQ(r->body.find("secret internals"), std::string::npos) << path;
    EXPECT_EQ(r->Header("x-request-id").size(), 26u) << path;
  }
  r = testing::Request(port_, "GET", "/hello");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServerTest, ALongPollIsAnsweredByItsReplyOrAtItsDeadline) {
  StartServer({}, 1);
  auto start = std::chrono::steady_clock::now();
  auto r = testing::Request(port_, "GET", "/poll/300");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "timed out");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 290ms);
  EXPECT_EQ(r->Header("x-request-id").size(), 26u) << "the middlewares saw the timeout's answer";
  // Many wait at once without a thread each; a poke answers them all, and
  // their deadlines (passing later) change nothing.
  std::vector<std::unique_ptr<RawConnection>> polls;
  for (int i = 0; i < 50; ++i) {
    polls.push_back(std::make_unique<RawConnection>(port_));
    polls.back()->Send("GET /poll/500 HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  std::this_thread::sleep_for(100ms);
  start = std::chrono::steady_clock::now();
  ASSERT_EQ(testing::Request(port_, "POST", "/poke")->status, 204);
  for (auto& c : polls) {
    auto p = c->ReadResponse();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->body, "poked");
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 300ms);
  std::this_thread::sleep_for(500ms);
  polls[0]->Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  auto next = polls[0]->ReadResponse();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200) << "no second answer to the poll came first";
}

TEST_F(ServerTest, ShutdownAnswersALongPollAtOnce) {
  StartServer();
  RawConnection waiting(port_);
  waiting.Send("GET /poll/20000 HTTP/1.1\r\nHost: x\r\n\r\n");
  std::this_thread::sleep_for(100ms);
  auto start = std::chrono::steady_clock::now();
  std::thread stopper([this] { server_->Shutdown(); });
  auto r = waiting.ReadResponse(false, 5s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "timed out");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  stopper.join();
}

TEST_F(ServerTest, ShutdownWaitsForALaterAnswer) {
  StartServer();
  RawConnection waiting(port_);
  waiting.Send("GET /later/500 HTTP/1.1\r\nHost: x\r\n\r\n");
  std::this_thread::sleep_for(100ms);
  std::thread stopper([this] { server_->Shutdown(); });
  auto r = waiting.ReadResponse(false, 5s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "later 500");
  EXPECT_EQ(r->Header("connection"), "close");
  stopper.join();
}

TEST_F(ServerTest, PathParametersAndPostBodies) {
  StartServer();
  auto r = testing::Request(port_, "GET", "/items/abc%2F1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "abc/1");
  r = testing::Request(port_, "POST", "/echo", "payload");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "payload");
  // Chunked request bodies are assembled.
  RawConnection c(port_);
  c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "abcde");
}

TEST_F(ServerTest, NotFoundAndMethodNotAllowedAreProblems) {
  StartServer();
  auto r = testing::Request(port_, "GET", "/missing");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->Header("content-type"), "application/problem+json");
  EXPECT_NE(r->body.find("\"code\":\"not_found\""), std::string::npos);
  EXPECT_NE(r->body.find("\"request_id\":\"" + r->Header("x-request-id") + "\""), std::string::npos);

  r = testing::Request(port_, "DELETE", "/hello");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("allow"), "GET, HEAD, OPTIONS");
  EXPECT_NE(r->body.find("method_not_allowed"), std::string::npos);

  r = testing::Request(port_, "BREW", "/hello");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
}

TEST_F(ServerTest, HeadAndOptions) {
  StartServer();
  auto r = testing::Request(port_, "HEAD", "/hello");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("content-length"), "17");
  EXPECT_TRUE(r->body.empty());

  r = testing::Request(port_, "OPTIONS", "/echo");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->Header("allow"), "POST, OPTIONS");
}

TEST_F(ServerTest, Cors) {
  StartServer();
  auto r = testing::Request(port_, "OPTIONS", "/echo", {},
                            "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->Header("access-control-allow-origin"), "https://app.example");
  EXPECT_EQ(r->Header("access-control-allow-methods"), "POST, OPTIONS");
  EXPECT_EQ(r->Header("vary"), "Origin");

  r = testing::Request(port_, "OPTIONS", "/echo", {},
                       "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->Header("access-control-allow-origin").empty());

  r = testing::Request(port_, "GET", "/hello", {}, "Origin: https://app.example\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("access-control-allow-origin"), "https://app.example");
}

TEST_F(ServerTest, RequestIdIsKeptWhenSaneAndReplacedOtherwise) {
  StartServer();
  auto r = testing::Request(port_, "GET", "/hello", {}, "X-Request-Id: abc-123\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("x-request-id"), "abc-123");
  r = testing::Request(port_, "GET", "/hello", {}, "X-Request-Id: <script>alert(1)</script>\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("x-request-id").size(), 26u);
  r = testing::Request(port_, "GET", "/hello", {}, "X-Request-Id: " + std::string(200, 'a') + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("x-request-id").size(), 26u);
}

TEST_F(ServerTest, ExceptionBecomesAnOpaque500) {
  StartServer();
  auto r = testing::Request(port_, "GET", "/throw");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(r->body.find("internal_error"), std::string::npos);
  EXPECT_EQ(r->body.find("secret internals"), std::string::npos);
  // The server keeps serving.
  r = testing::Request(port_, "GET", "/hello");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServerTest, BodyLimitGives413) {
  ServerOptions opt;
  opt.max_body_bytes = 1000;
  StartServer(opt);
  auto r = testing::Request(port_, "POST", "/echo", std::string(1001, 'x'));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("body_too_large"), std::string::npos);
  // A chunked body that grows past the limit is cut off too.
  RawConnection c(port_);
  c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  std::string chunk = "200\r\n" + std::string(512, 'y') + "\r\n";
  c.Send(chunk);
  c.Send(chunk);
  r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(c.WaitClosed(2s));
  // Exactly at the limit is fine.
  r = testing::Request(port_, "POST", "/echo", std::string(1000, 'x'));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServerTest, HeaderLimitGives431) {
  ServerOptions opt;
  opt.max_header_bytes = 2048;
  StartServer(opt);
  auto r = testing::Request(port_, "GET", "/hello", {}, "X-Big: " + std::string(4096, 'a') + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
}

TEST_F(ServerTest, MalformedRequestGets400AndClose) {
  StartServer();
  for (std::string bad : {"GARBAGE\r\n\r\n", "GET /hello HTTP/9.9\r\n\r\n", "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
                          "POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n"}) {
    RawConnection c(port_);
    c.Send(bad);
    auto r = c.ReadResponse();
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_NE(r->body.find("malformed_request"), std::string::npos);
    EXPECT_TRUE(c.WaitClosed(2s)) << bad;
  }
}

TEST_F(ServerTest, SlowClientIsCutOff) {
  ServerOptions opt;
  opt.header_timeout = 1s;
  StartServer(opt);
  RawConnection c(port_);
  c.Send("GET /hello HTTP/1.1\r\n");
  auto start = std::chrono::steady_clock::now();
  // Drip a header byte every 200 ms: the header deadline still applies.
  bool closed = false;
  for (int i = 0; i < 20 && !closed; ++i) {
    closed = !c.Send("X") || c.WaitClosed(200ms);
  }
  EXPECT_TRUE(closed || c.WaitClosed(1s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST_F(ServerTest, IdleKeepAliveConnectionIsClosed) {
  ServerOptions opt;
  opt.idle_timeout = 1s;
  StartServer(opt);
  RawConnection c(port_);
  c.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(c.ReadResponse());
  EXPECT_TRUE(c.WaitClosed(3s));
}

TEST_F(ServerTest, ConnectionLimitAnswers503) {
  ServerOptions opt;
  opt.max_connections = 2;
  StartServer(opt);
  RawConnection a(port_), b(port_);
  a.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  b.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(a.ReadResponse());
  ASSERT_TRUE(b.ReadResponse());
  RawConnection c(port_);
  auto r = c.ReadResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("too_many_connections"), std::string::npos);
}

TEST_F(ServerTest, MetricsCountRequestsByRoute) {
  StartServer();
  testing::Request(port_, "GET", "/items/1");
  testing::Request(port_, "GET", "/items/2");
  testing::Request(port_, "GET", "/nowhere");
  std::string text = registry_.Render();
  EXPECT_NE(text.find("http_requests_total{method=\"GET\",route=\"/items/{id}\",status=\"200\"} 2"), std::string::npos)
      << text;
  EXPECT_NE(text.find("http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1"), std::string::npos);
  EXPECT_NE(text.find("http_request_duration_seconds_count{method=\"GET\",route=\"/items/{id}\"} 2"),
            std::string::npos);
}

// smart::http::Send keeps a connection per thread open for the next request, and reads the header fields.
TEST_F(ServerTest, TheClientReusesItsConnectionAndReadsHeaders) {
  StartServer();
  const std::string url = "http://127.0.0.1:" + std::to_string(port_);
  for (int i = 0; i < 3; ++i) {
    auto r = Send({.url = url + "/hello"});
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->Header("x-content-type-options"), "nosniff") << "header fields, found in any case";
    EXPECT_EQ(r->Header("X-Request-Id").size(), 26u);
    EXPECT_EQ(r->Header("x-absent"), "");
    auto posted = Send({.method = "POST", .url = url + "/echo", .body = "body " + std::to_string(i)});
    ASSERT_TRUE(posted) << posted.error().message;
    EXPECT_EQ(posted->body, "body " + std::to_string(i));
  }
  std::this_thread::sleep_for(300ms);  // a closed connection would have been counted down by now
  EXPECT_NE(registry_.Render().find("http_open_connections 1\n"), std::string::npos) << registry_.Render();
  // Another thread has a connection of its own.
  std::thread([&] { ASSERT_TRUE(Send({.url = url + "/hello"})); }).join();
}

TEST_F(ServerTest, GracefulShutdownFinishesInFlightRequests) {
  StartServer();
  RawConnection idle(port_);
  idle.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(idle.ReadResponse());
  RawConnection busy(port_);
  busy.Send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  while (!slow_started_) std::this_thread::sleep_for(5ms);
  std::thread stopper([this] { server_->Shutdown(); });
  auto r = busy.ReadResponse(false, 5s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "done");
  EXPECT_EQ(r->Header("connection"), "close");
  EXPECT_TRUE(idle.WaitClosed(2s)) << "idle keep-alive connections are closed at once";
  stopper.join();
}

// --- WebSocket -------------------------------------------------------------

namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
using tcp = boost::asio::ip::tcp;

struct WsClient {
  boost::asio::io_context ioc;
  websocket::stream<tcp::socket> ws{ioc};
  explicit WsClient(uint16_t port, const std::string& target = "/ws/echo") {
    ws.next_layer().connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
    ws.handshake("localhost", target);
  }
  std::string Read() {
    beast::flat_buffer b;
    ws.read(b);
    return beast::buffers_to_string(b.data());
  }
};

TEST_F(ServerTest, WebSocketEcho) {
  StartServer();
  WsClient c(port_);
  EXPECT_EQ(c.Read(), "welcome");
  c.ws.write(boost::asio::buffer(std::string("hi")));
  EXPECT_EQ(c.Read(), "echo:hi");
  c.ws.close(websocket::close_code::normal);
  for (int i = 0; i < 200 && last_close_code_ == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(last_close_code_, 1000);
}

// Clients that send an upgrade and reset the connection at once: whether the
// handshake completed or failed, every accepted handler hears on_close once.
TEST_F(ServerTest, WebSocketOnCloseFollowsEveryAcceptEvenAFailedHandshake) {
  StartServer();
  const std::string upgrade =
      "GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  for (int i = 0; i < 40; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::send(fd, upgrade.data(), upgrade.size(), MSG_NOSIGNAL), static_cast<ssize_t>(upgrade.size()));
    if (i % 2) std::this_thread::sleep_for(1ms);  // sometimes after the handler ran
    linger reset{.l_onoff = 1, .l_linger = 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    ::close(fd);
  }
  for (int i = 0; i < 300 && (ws_accepted_ == 0 || ws_closed_ != ws_accepted_); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GT(ws_accepted_.load(), 0);
  EXPECT_EQ(ws_closed_.load(), ws_accepted_.load());
}

TEST_F(ServerTest, WebSocketMessagesQueuedBeforeACloseAreDelivered) {
  StartServer();
  WsClient c(port_);
  EXPECT_EQ(c.Read(), "welcome");
  c.ws.write(boost::asio::buffer(std::string("explain and close")));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.Read(), "reason " + std::to_string(i));
  EXPECT_THROW(c.Read(), boost::system::system_error);  // the close
  EXPECT_EQ(c.ws.reason().code, 1008);
}

TEST_F(ServerTest, WebSocketUpgradeCanBeRejected) {
  StartServer();
  boost::asio::io_context ioc;
  websocket::stream<tcp::socket> ws{ioc};
  ws.next_layer().connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port_));
  websocket::response_type res;
  beast::error_code ec;
  ws.handshake(res, "localhost", "/ws/echo?token=bad", ec);
  EXPECT_TRUE(ec);
  EXPECT_EQ(res.result_int(), 401u);
  // A plain GET on a WebSocket route says an upgrade is required.
  auto r = testing::Request(port_, "GET", "/ws/echo");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 426);
}

TEST_F(ServerTest, WebSocketSendQueueIsBounded) {
  ServerOptions opt;
  opt.ws_send_queue_limit = 8;
  StartServer(opt);
  WsClient c(port_);
  EXPECT_EQ(c.Read(), "welcome");
  c.ws.write(boost::asio::buffer(std::string("flood")));
  // The handler's 100 sends ran before any was written: exactly the limit fit.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(c.Read(), "x");
  EXPECT_EQ(flood_queued_, 8);
  EXPECT_EQ(flood_full_, 92);
  // Nothing more was queued: the next message is the answer to the next request.
  c.ws.write(boost::asio::buffer(std::string("after")));
  EXPECT_EQ(c.Read(), "echo:after");
}

TEST_F(ServerTest, WebSocketTooBigMessageCloses1009) {
  ServerOptions opt;
  opt.ws_max_message_bytes = 1024;
  StartServer(opt);
  WsClient c(port_);
  EXPECT_EQ(c.Read(), "welcome");
  c.ws.write(boost::asio::buffer(std::string(4096, 'z')));
  beast::flat_buffer b;
  beast::error_code ec;
  c.ws.read(b, ec);
  EXPECT_TRUE(ec) << "the server ends the connection";
  for (int i = 0; i < 200 && last_close_code_ == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(last_close_code_, 1009);
}

TEST_F(ServerTest, WebSocketPingsAndClosesASilentPeer) {
  ServerOptions opt;
  opt.ws_idle_timeout = 2s;
  StartServer(opt);
  // A raw peer that completes the handshake and then never answers anything.
  RawConnection c(port_);
  c.Send(
      "GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  auto r = c.ReadResponse(true);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 101);
  EXPECT_EQ(r->Header("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  auto start = std::chrono::steady_clock::now();
  std::string frames;
  char buf[512];
  for (;;) {
    ssize_t n = ::recv(c.fd(), buf, sizeof buf, 0);
    if (n <= 0) break;
    frames.append(buf, static_cast<size_t>(n));
  }
  // "welcome" (0x81), at least one ping (0x89), then the server gave up on us.
  EXPECT_NE(frames.find('\x89'), std::string::npos) << "the server pings a quiet peer";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 6s);
  for (int i = 0; i < 200 && last_close_code_ == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_NE(last_close_code_, 0);
}

// A peer that answers pings is never idle: one that is not admitted within
// the header timeout is closed with 1008 and the handler's reason.
TEST_F(ServerTest, AWebSocketNotAdmittedInTimeIsClosed) {
  ServerOptions opt;
  opt.header_timeout = 1s;  // the idle timeout (30 s) would close neither
  StartServer(opt);
  WsClient quiet(port_, "/ws/admit"), admitted(port_, "/ws/admit");
  admitted.ws.write(boost::asio::buffer(std::string("me")));
  EXPECT_EQ(admitted.Read(), "echo:me");
  auto start = std::chrono::steady_clock::now();
  beast::flat_buffer b;
  beast::error_code ec;
  quiet.ws.read(b, ec);
  EXPECT_EQ(ec, websocket::error::closed);
  EXPECT_EQ(quiet.ws.reason().code, 1008);
  EXPECT_EQ(std::string(quiet.ws.reason().reason.c_str()), "say who you are");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  std::this_thread::sleep_for(1s);  // past the deadline, the admitted one is open
  admitted.ws.write(boost::asio::buffer(std::string("still")));
  EXPECT_EQ(admitted.Read(), "echo:still");
}

TEST_F(ServerTest, ShutdownClosesWebSocketsWithGoingAway) {
  StartServer();
  WsClient c(port_);
  EXPECT_EQ(c.Read(), "welcome");
  std::thread stopper([this] { server_->Shutdown(); });
  beast::flat_buffer b;
  beast::error_code ec;
  c.ws.read(b, ec);
  EXPECT_EQ(ec, websocket::error::closed);
  EXPECT_EQ(c.ws.reason().code, 1001);
  stopper.join();
}

}  // namespace
}  // namespace smart::http
