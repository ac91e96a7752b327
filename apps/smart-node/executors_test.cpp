// The executors against a small local server that speaks the OpenAI
// chat-completions (plain and SSE) and embeddings wire formats, and errors.
#include "executors.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <mutex>
#include <thread>

#include "channel.hpp"
#include "smart/core/crypto.hpp"
#include "smart/core/log.hpp"
#include "smart/http/server.hpp"
#include "smart/metrics/metrics.hpp"

namespace smart::node {
namespace {
namespace json = boost::json;

class FakeModelServer {
 public:
  FakeModelServer() {
    http::Router r;
    r.Add(http::Method::kPost, "/v1/chat/completions", [this](http::Request& req) {
      last_body = req.body;
      last_auth = std::string(req.headers.Get("Authorization").value_or(""));
      auto body = json::parse(req.body).as_object();
      std::string model(body.at("model").as_string());
      if (model == "broken") {
        return http::Response::Json(500, R"({"error":{"message":"model exploded","type":"server_error"}})");
      }
      if (model == "overloaded") return http::Response::Json(429, R"({"error":"slow down"})");
      const auto& messages = body.at("messages").as_array();
      std::string last(messages.back().as_object().at("content").as_string());
      std::string answer = "echo: " + last;
      if (messages.front().as_object().at("role").as_string() == "system") answer = "positive";
      if (body.at("stream").as_bool()) {
        std::string sse;
        for (std::string part :
             {std::string("echo: "), last.substr(0, 3), last.substr(std::min<size_t>(3, last.size()))}) {
          json::object chunk{
              {"object", "chat.completion.chunk"},
              {"choices", json::array{json::object{{"index", 0}, {"delta", json::object{{"content", part}}}}}}};
          sse += "data: " + json::serialize(chunk) + "\n\n";
        }
        sse += "data: [DONE]\n\n";
        return http::Response::Text(200, sse, "text/event-stream");
      }
      json::object res{
          {"object", "chat.completion"},
          {"choices", json::array{json::object{{"index", 0},
                                               {"message", json::object{{"role", "assistant"}, {"content", answer}}},
                                               {"finish_reason", "stop"}}}}};
      return http::Response::Json(200, json::serialize(res));
    });
    r.Add(http::Method::kPost, "/v1/embeddings", [](http::Request& req) {
      auto body = json::parse(req.body).as_object();
      json::array data;
      size_t n = body.at("input").is_array() ? body.at("input").as_array().size() : 1;
      for (size_t i = 0; i < n; ++i) {
        data.push_back(
            json::object{{"object", "embedding"}, {"index", i}, {"embedding", json::array{0.5, -1.0, double(i)}}});
      }
      return http::Response::Json(200, json::serialize(json::object{{"object", "list"}, {"data", data}}));
    });
    server_ = std::make_unique<http::Server>(http::ServerOptions{.host = "127.0.0.1", .port = 0, .threads = 1},
                                             std::move(r), std::vector<http::Middleware>{}, logger_, registry_);
    EXPECT_TRUE(server_->Start().ok());
  }
  ~FakeModelServer() { server_->Shutdown(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()) + "/v1"; }

  std::string last_body, last_auth;

 private:
  log::Logger logger_{log::Level::kError};
  metrics::Registry registry_;
  std::unique_ptr<http::Server> server_;
};

class ExecutorsTest : public ::testing::Test {
 protected:
  Result<std::string> Run(const Executors& e, Job job) {
    return e.Run(
        job, [&](int p, const std::string&) { progress_.push_back(p); }, cancel_);
  }
  FakeModelServer model_;
  std::atomic<bool> cancel_{false};
  std::vector<int> progress_;
};

TEST_F(ExecutorsTest, BuiltIns) {
  Executors e({});
  EXPECT_EQ(*Run(e, {.type = "echo", .input = "hello"}), "hello");
  EXPECT_EQ(*Run(e, {.type = "sha256", .input = "abc"}),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Run(e, {.type = "mining", .input = "x"}).error().code, "unsupported_type");
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(*Run(e, {.type = "echo", .input = "x", .parameters = R"({"delay_ms":120})"}), "x");
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100));
  cancel_ = true;
  EXPECT_EQ(Run(e, {.type = "echo", .input = "x", .parameters = R"({"delay_ms":5000})"}).error().code, "cancelled");
}

TEST_F(ExecutorsTest, WithoutAnEndpointModelTasksFailClearly) {
  Executors e({});
  for (const char* type : {"text_generation", "inference", "classification", "embedding"}) {
    auto r = Run(e, {.type = type, .input = "x"});
    ASSERT_FALSE(r.ok()) << type;
    EXPECT_EQ(r.error().code, "no_endpoint");
    EXPECT_NE(r.error().message.find("openai.base_url"), std::string::npos);
  }
}

TEST_F(ExecutorsTest, ChatCompletions) {
  Executors e({.base_url = model_.url(), .model = "tiny", .api_key = "sk-test"});
  auto r = Run(e, {.type = "text_generation", .input = "hello there", .parameters = R"({"max_tokens":16})"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, "echo: hello there");
  EXPECT_EQ(model_.last_auth, "Bearer sk-test");
  EXPECT_NE(model_.last_body.find("\"max_tokens\":16"), std::string::npos);
  EXPECT_NE(model_.last_body.find("\"model\":\"tiny\""), std::string::npos);
  // Messages given as JSON pass through.
  r = Run(
      e,
      {.type = "inference", .input = R"({"messages":[{"role":"user","content":"from json"}]})", .input_is_json = true});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, "echo: from json");
}

TEST_F(ExecutorsTest, StreamingOverServerSentEvents) {
  Executors e({.base_url = model_.url(), .model = "tiny"});
  auto r = Run(e, {.type = "text_generation", .input = "streaming works", .parameters = R"({"stream":true})"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, "echo: streaming works");
  EXPECT_EQ(progress_.size(), 3u) << "one progress report per chunk";
}

TEST_F(ExecutorsTest, ClassificationAndEmbeddings) {
  Executors e({.base_url = model_.url(), .model = "tiny"});
  auto r = Run(e, {.type = "classification", .input = "great!", .parameters = R"({"labels":["positive","negative"]})"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, "positive");
  EXPECT_NE(model_.last_body.find("positive, negative"), std::string::npos);
  EXPECT_EQ(Run(e, {.type = "classification", .input = "x"}).error().code, "invalid_parameters");
  r = Run(e, {.type = "embedding", .input = "vector me"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, "[5E-1,-1E0,0E0]");
  r = Run(e, {.type = "embedding", .input = R"(["a","b"])", .input_is_json = true});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, "[[5E-1,-1E0,0E0],[5E-1,-1E0,1E0]]");
}

TEST_F(ExecutorsTest, ErrorRepliesBecomeFailures) {
  Executors broken({.base_url = model_.url(), .model = "broken"});
  auto r = Run(broken, {.type = "text_generation", .input = "x"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "model_error");
  EXPECT_NE(r.error().message.find("500: model exploded"), std::string::npos) << r.error().message;
  r = Run(broken, {.type = "text_generation", .input = "x", .parameters = R"({"stream":true})"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("model exploded"), std::string::npos) << r.error().message;
  Executors busy({.base_url = model_.url(), .model = "overloaded"});
  r = Run(busy, {.type = "inference", .input = "x"});
  EXPECT_NE(r.error().message.find("429: slow down"), std::string::npos) << r.error().message;
  Executors nowhere({.base_url = "http://127.0.0.1:1/v1", .model = "m"});
  EXPECT_EQ(Run(nowhere, {.type = "inference", .input = "x"}).error().code, "http_unreachable");
}

// Where there is no node socket, the runner learns it at once (and claims over HTTP).
TEST_F(ExecutorsTest, TheNodeSocketIsUnavailableWithoutTheRoute) {
  // model_.url() is an http:// server without /api/v1/nodes/ws: the upgrade is answered 404.
  auto base = model_.url().substr(0, model_.url().size() - 3);
  auto t0 = std::chrono::steady_clock::now();
  auto ch = Channel::Open(base, "sk_x", "node_x", 1, {}, nullptr);
  ASSERT_FALSE(ch.ok());
  EXPECT_EQ(ch.error().kind, ErrorKind::kUnavailable) << ch.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3)) << ch.error().message;
  EXPECT_EQ(Channel::Open("https://example.invalid", "k", "n", 1, {}, nullptr).error().kind, ErrorKind::kUnavailable);
  EXPECT_EQ(Channel::Open("http://127.0.0.1:1", "k", "n", 1, {}, nullptr).error().kind, ErrorKind::kUnavailable);
}

// A node socket that records the frames it gets. Its welcome offers batches
// when max_batch > 1; it pushes five tasks at once when given credit, and acks every lease
// message (in a batch frame for a batch).
class FakeNodeSocket {
 public:
  explicit FakeNodeSocket(int max_batch) {
    http::Router r;
    r.AddWebSocket("/api/v1/nodes/ws", [this, max_batch](http::Request&, std::shared_ptr<http::WebSocket> ws) {
      std::weak_ptr<http::WebSocket> weak = ws;
      return http::WsAccept{.callbacks = {.on_message = [this, weak, max_batch](std::string_view text) {
                              auto ws = weak.lock();
                              if (!ws) return;
                              {
                                std::lock_guard lk(mu_);
                                frames_.emplace_back(text);
                              }
                              auto m = json::parse(text).as_object();
                              auto ack = [](const json::object& o) {
                                return json::object{{"type", "ack"},
                                                    {"ref", o.contains("ref") ? o.at("ref") : json::value()},
                                                    {"task_id", o.at("task_id")},
                                                    {"status", "completed"}};
                              };
                              if (m.at("type") == "stall") {  // reads nothing for a while
                                std::this_thread::sleep_for(std::chrono::seconds(3));
                                return;
                              }
                              if (m.at("type") == "heartbeat") return;
                              if (m.at("type") == "hello") {
                                json::object welcome{{"type", "welcome"}, {"node_id", m.at("node_id")}};
                                if (max_batch > 1) welcome["max_batch"] = max_batch;
                                ws->Send(json::serialize(welcome));
                              } else if (m.at("type") == "credit") {
                                json::array tasks;
                                for (int i = 0; i < 5; ++i) {
                                  tasks.push_back(json::object{{"id", "task_" + std::to_string(i)}, {"lease", 1}});
                                }
                                ws->Send(json::serialize(json::object{{"type", "tasks"}, {"tasks", tasks}}));
                              } else if (m.at("type") == "batch") {
                                json::array answers;
                                for (const auto& item : m.at("messages").as_array()) {
                                  answers.push_back(ack(item.as_object()));
                                }
                                ws->Send(json::serialize(json::object{{"type", "batch"}, {"answers", answers}}));
                              } else {
                                ws->Send(json::serialize(ack(m)));
                              }
                            }}};
    });
    server_ = std::make_unique<http::Server>(http::ServerOptions{.host = "127.0.0.1", .port = 0, .threads = 1},
                                             std::move(r), std::vector<http::Middleware>{}, logger_, registry_);
    EXPECT_TRUE(server_->Start().ok());
  }
  ~FakeNodeSocket() { server_->Shutdown(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  std::vector<std::string> frames() {
    std::lock_guard lk(mu_);
    return frames_;
  }

 private:
  log::Logger logger_{log::Level::kError};
  metrics::Registry registry_;
  std::mutex mu_;
  std::vector<std::string> frames_;
  std::unique_ptr<http::Server> server_;
};

// Lease messages waiting to be written together go in one batch frame,
// only to a server that offers batches; every call gets its own answer.
TEST(NodeChannel, LeaseMessagesWaitingTogetherGoInOneBatch) {
  for (int max_batch : {256, 0}) {
    FakeNodeSocket server(max_batch);
    std::atomic<int> pushed{0};
    std::shared_ptr<std::weak_ptr<Channel>> self = std::make_shared<std::weak_ptr<Channel>>();
    auto opened = Channel::Open(server.url(), "sk_x", "node_x", 0, {}, [&pushed, self](const json::array& tasks) {
      auto ch = self->lock();
      for (const auto& t : tasks) {  // sent from the channel's thread: all queued before the first is written
        ++pushed;
        if (ch) ch->Send({{"type", "result"}, {"task_id", t.at("id")}, {"lease", 1}, {"output", "x"}});
      }
    });
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    std::shared_ptr<Channel> ch = std::move(opened).value();
    *self = ch;
    ch->Send({{"type", "credit"}, {"n", 5}});
    for (int i = 0; i < 100 && pushed < 5; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(pushed, 5);
    // Then calls from many threads.
    std::vector<std::thread> callers;
    std::atomic<int> acked{0};
    for (int i = 0; i < 8; ++i) {
      callers.emplace_back([&, i] {
        auto r = ch->Call({{"type", "start"}, {"task_id", "task_c" + std::to_string(i)}, {"lease", 1}},
                          std::chrono::seconds(5));
        if (r.ok() && std::string_view(r->at("task_id").as_string()) == "task_c" + std::to_string(i)) ++acked;
      });
    }
    for (auto& t : callers) t.join();
    EXPECT_EQ(acked, 8) << "each call its own answer, batched or not (max_batch " << max_batch << ")";
    ch->Close();
    size_t batches = 0, results = 0;
    for (const auto& f : server.frames()) {
      if (f.find("\"type\":\"batch\"") != std::string::npos) ++batches;
      for (size_t at = 0; (at = f.find("\"type\":\"result\"", at)) != std::string::npos; ++at) ++results;
    }
    EXPECT_EQ(results, 5u);
    if (max_batch > 1) {
      EXPECT_GE(batches, 1u) << "four results queued behind the first go together";
    } else {
      EXPECT_EQ(batches, 0u) << "a server that offers no batches gets none";
    }
  }
}

// Closing while a write cannot finish (the server reads nothing): the close
// gives up on the server's answer after 2 s. It used to set the stream's
// timer, on which Beast asserts while a read and a write are both pending (a
// node stopped as a heartbeat was on its way aborted).
TEST(NodeChannel, ClosingWhileAWriteIsStuckEndsInTime) {
  FakeNodeSocket server(0);
  auto opened = Channel::Open(server.url(), "sk_x", "node_x", 0, {}, nullptr);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  std::unique_ptr<Channel> ch = std::move(opened).value();
  ch->Send({{"type", "stall"}});
  const std::string pad(256 * 1024, 'x');
  for (int i = 0; i < 64; ++i) ch->Send({{"type", "heartbeat"}, {"pad", pad}});  // more than the socket buffers hold
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto t0 = std::chrono::steady_clock::now();
  ch.reset();  // closes and waits for the channel's thread
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(2800));
}

}  // namespace
}  // namespace smart::node
