#include "harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <regex>
#include <thread>

namespace smart::itest {

Smartd::Smartd(std::vector<std::string> env, std::vector<std::string> args, std::string data_dir) {
  if (data_dir.empty()) data_dir = dir_.path() + "/data";
  data_dir_ = data_dir;
  std::vector<std::string> argv = {SMARTD_PATH, "--data-dir", data_dir};
  if (std::find(args.begin(), args.end(), "--port") == args.end()) argv.insert(argv.end(), {"--port", "0"});
  argv.insert(argv.end(), args.begin(), args.end());
  env.push_back("SMART_HTTP_THREADS=2");
  proc_ = std::make_unique<testing::Process>(argv, env);
  auto line = proc_->WaitForLine("\"msg\":\"listening\"");
  if (!line) {
    proc_->Drain();
    ADD_FAILURE() << "smartd did not start:\n" << proc_->output();
    return;
  }
  std::smatch m;
  std::regex re("\"port\":([0-9]+)");
  if (std::regex_search(*line, m, re)) port_ = static_cast<uint16_t>(std::stoi(m[1]));
}

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

const std::vector<std::string> kFastAuth = {
    "SMART_AUTH_ARGON2_M_COST_KIB=1024",          "SMART_AUTH_ARGON2_T_COST=1",
    "SMART_RATE_LIMIT_AUTH_BURST=10000",          "SMART_RATE_LIMIT_ADDRESS_BURST=10000",
    "SMART_RATE_LIMIT_DEFAULT_BURST=10000",       "SMART_RATE_LIMIT_FREE_BURST=10000",
    "SMART_RATE_LIMIT_LOGIN_FAILURES_BURST=10000"};

std::vector<std::string> SharedInstanceEnv(const std::string& pg_url, const std::string& redis_url,
                                           const std::vector<std::string>& overrides) {
  std::vector<std::string> env;
  auto name = [](const std::string& kv) { return kv.substr(0, kv.find('=') + 1); };
  for (const auto& kv : kFastAuth) {
    if (std::none_of(overrides.begin(), overrides.end(), [&](const auto& o) { return name(o) == name(kv); })) {
      env.push_back(kv);
    }
  }
  env.insert(env.end(), overrides.begin(), overrides.end());
  env.push_back("SMART_DATABASE_URL=" + pg_url);
  env.push_back("SMART_AUTH_JWT_SECRET=" + std::string(40, 's'));
  env.push_back("SMART_REDIS_URL=" + redis_url);
  return env;
}

std::optional<testing::HttpResponse> PostJson(uint16_t port, const std::string& target, const std::string& body,
                                              const std::string& extra) {
  return testing::Request(port, "POST", target, body, "Content-Type: application/json\r\n" + extra);
}

std::string JsonField(const std::string& body, const std::string& key) {
  std::smatch m;
  std::regex re("\"" + key + "\":\"([^\"]*)\"");
  return std::regex_search(body, m, re) ? std::string(m[1]) : std::string();
}

uint64_t EventId(const std::string& message) {
  std::smatch m;
  return std::regex_search(message, m, std::regex("\"id\":([0-9]+)")) ? std::stoull(m[1]) : 0;
}

Session Login(uint16_t port, const std::string& email, const std::string& password) {
  auto r = PostJson(port, "/api/v1/auth/login", R"({"email":")" + email + R"(","password":")" + password + R"("})");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
  return r ? Session{JsonField(r->body, "access_token"), JsonField(r->body, "refresh_token")} : Session{};
}

Session RegisterAndLogin(uint16_t port, const std::string& email) {
  auto r = PostJson(port, "/api/v1/auth/register",
                    R"({"email":")" + email + R"(","password":"correct horse battery","name":"T"})");
  EXPECT_TRUE(r && r->status == 201) << (r ? r->body : "no answer");
  return Login(port, email, "correct horse battery");
}

std::optional<testing::HttpResponse> As(uint16_t port, const std::string& method, const std::string& target,
                                        const std::string& credential, const std::string& body,
                                        const std::string& extra_headers) {
  std::string headers = "Authorization: Bearer " + credential + "\r\n";
  if (!body.empty()) headers += "Content-Type: application/json\r\n";
  return testing::Request(port, method, target, body, headers + extra_headers);
}

Session CreateAdmin(Smartd& s, const std::string& email, const std::string& extra_env) {
  std::string cmd = "echo 'admin password 1' | SMART_AUTH_ARGON2_M_COST_KIB=1024 SMART_AUTH_ARGON2_T_COST=1 " +
                    extra_env + " " + std::string(SMARTD_PATH) + " admin create --email " + email +
                    " --password-stdin --data-dir " + s.data_dir();
  auto [code, out] = testing::RunCommand({"/bin/sh", "-c", cmd});
  EXPECT_EQ(code, 0) << out;
  return Login(s.port(), email, "admin password 1");
}

namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
}  // namespace

struct WsClient::Impl {
  asio::io_context ioc;
  websocket::stream<asio::ip::tcp::socket> ws{ioc};
};

std::string MetricsWith(uint16_t port, const std::string& line) {
  std::string body;
  for (int i = 0; i < 100; ++i) {
    auto r = testing::Request(port, "GET", "/metrics");
    body = r ? r->body : "";
    if (body.find(line) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return body;
}

WsClient::WsClient(uint16_t port, const std::string& target, const std::string& token)
    : impl_(std::make_unique<Impl>()) {
  asio::ip::tcp::resolver resolver(impl_->ioc);
  asio::connect(beast::get_lowest_layer(impl_->ws), resolver.resolve("127.0.0.1", std::to_string(port)));
  if (!token.empty()) {
    impl_->ws.set_option(websocket::stream_base::decorator(
        [token](websocket::request_type& req) { req.set(beast::http::field::authorization, "Bearer " + token); }));
  }
  impl_->ws.handshake("127.0.0.1", target);
}

WsClient::~WsClient() = default;

void WsClient::Send(const std::string& text) { impl_->ws.write(asio::buffer(text)); }

std::string WsClient::Read() {
  // Waits up to 10 s: a message that never comes fails the test, never hangs it.
  beast::flat_buffer buffer;
  beast::error_code ec;
  bool done = false;
  impl_->ws.async_read(buffer, [&](beast::error_code e, size_t) { ec = e, done = true; });
  impl_->ioc.restart();
  impl_->ioc.run_for(std::chrono::seconds(10));
  if (!done) {
    beast::get_lowest_layer(impl_->ws).cancel();
    impl_->ioc.restart();
    impl_->ioc.run();
  }
  if (ec) return "";
  return beast::buffers_to_string(buffer.data());
}

std::string WsClient::ReadUntil(const std::string& needle, int max_messages) {
  for (int i = 0; i < max_messages; ++i) {
    std::string m = Read();
    if (m.empty() || m.find(needle) != std::string::npos) return m;
  }
  return "";
}

uint16_t WsClient::close_code() const { return impl_->ws.reason().code; }

}  // namespace smart::itest
