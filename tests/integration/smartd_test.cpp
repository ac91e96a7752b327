// The real smartd binary on port 0 with a temporary data directory, spoken to
// over real sockets.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/system/system_error.hpp>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <thread>

#include "harness.hpp"
#include "smart/testing/postgres.hpp"
#include "smart/testing/redis.hpp"

namespace smart {
namespace {

using namespace std::chrono_literals;
using namespace itest;
using testing::Process;
using testing::RawConnection;
using testing::TempDir;

TEST(Smartd, HealthReadyMetricsOpenApi) {
  Smartd s;
  ASSERT_NE(s.port(), 0);
  auto r = testing::Request(s.port(), "GET", "/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "{\"status\":\"ok\"}");

  r = testing::Request(s.port(), "GET", "/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->body.find("\"database\":\"ok\""), std::string::npos);

  r = testing::Request(s.port(), "GET", "/openapi.json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("\"openapi\": \"3.1.0\""), std::string::npos);

  r = testing::Request(s.port(), "GET", "/api/v1/version");
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("\"version\":\"0.1.0\""), std::string::npos);

  r = testing::Request(s.port(), "GET", "/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  for (const char* needle : {"http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1",
                             "http_request_duration_seconds_bucket{", "http_open_connections ",
                             "process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
                             "process_start_time_seconds ", "smart_build_info{version=\"0.1.0\""}) {
    EXPECT_NE(r->body.find(needle), std::string::npos) << needle;
  }
}

TEST(Smartd, ErrorsAreProblemDocuments) {
  Smartd s({"SMART_HTTP_MAX_BODY_BYTES=1024", "SMART_HTTP_MAX_HEADER_BYTES=2048"});
  ASSERT_NE(s.port(), 0);
  auto r = testing::Request(s.port(), "GET", "/api/v1/nothing-here");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->Header("content-type"), "application/problem+json");
  EXPECT_NE(r->body.find("\"code\":\"not_found\""), std::string::npos);
  EXPECT_NE(r->body.find("\"request_id\":\"" + r->Header("x-request-id") + "\""), std::string::npos);

  r = testing::Request(s.port(), "POST", "/health", "{}");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("allow"), "GET, HEAD, OPTIONS");

  r = testing::Request(s.port(), "POST", "/health", std::string(2000, 'x'));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("body_too_large"), std::string::npos);

  r = testing::Request(s.port(), "GET", "/health", {}, "X-Huge: " + std::string(4000, 'h') + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);

  for (const std::string& bad :
       std::vector<std::string>{"NOT A REQUEST\r\n\r\n", "GET /health HTTP/1.1\r\nHost x\r\n\r\n",
                                std::string("GET /\x01 HTTP/1.1\r\n\r\n")}) {
    RawConnection c(s.port());
    c.Send(bad);
    auto res = c.ReadResponse();
    ASSERT_TRUE(res) << bad;
    EXPECT_EQ(res->status, 400) << bad;
    EXPECT_EQ(res->Header("content-type"), "application/problem+json");
    EXPECT_TRUE(c.WaitClosed(2s));
  }
  // The server is still healthy after all that.
  r = testing::Request(s.port(), "GET", "/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(Smartd, AccessLogIsOneJsonLinePerRequest) {
  Smartd s;
  ASSERT_NE(s.port(), 0);
  auto r = testing::Request(s.port(), "GET", "/health", {}, "X-Request-Id: trace-me-42\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("x-request-id"), "trace-me-42");
  auto line = s.proc().WaitForLine("trace-me-42", 5s);
  ASSERT_TRUE(line);
  for (const char* field : {"\"msg\":\"request\"", "\"method\":\"GET\"", "\"route\":\"/health\"", "\"status\":200",
                            "\"bytes\":15", "\"duration_ms\":", "\"client\":\"127.0.0.1\"", "\"ts\":\""}) {
    EXPECT_NE(line->find(field), std::string::npos) << field << " in " << *line;
  }
}

TEST(Smartd, SlowClientIsCutOff) {
  Smartd s({"SMART_HTTP_HEADER_TIMEOUT_S=1"});
  ASSERT_NE(s.port(), 0);
  RawConnection c(s.port());
  auto start = std::chrono::steady_clock::now();
  c.Send("GET /health HTTP/1.1\r\nHost: x\r\n");
  bool closed = false;
  for (int i = 0; i < 25 && !closed; ++i) closed = !c.Send("X-Drip: 1\r\n") || c.WaitClosed(200ms);
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
}

TEST(Smartd, GracefulShutdownFinishesTheRequestInFlight) {
  Smartd s;
  ASSERT_NE(s.port(), 0);
  RawConnection idle(s.port());
  idle.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(idle.ReadResponse());

  // A request whose body is still arriving when SIGTERM comes.
  RawConnection busy(s.port());
  busy.Send("POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234");
  std::this_thread::sleep_for(200ms);
  s.proc().Signal(SIGTERM);
  ASSERT_TRUE(s.proc().WaitForLine("shutting down", 5s));
  EXPECT_TRUE(idle.WaitClosed(2s)) << "idle connections close at once";
  busy.Send("56789");
  auto r = busy.ReadResponse();
  ASSERT_TRUE(r) << "the in-flight request is answered";
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("connection"), "close");
  auto code = s.proc().Wait(15s);
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, 0);
  s.proc().Drain();
  EXPECT_NE(s.proc().output().find("\"msg\":\"stopped\""), std::string::npos);
}

TEST(Smartd, NotReadyUntilMigrated) {
  Smartd s({}, {"--set", "database.migrate_on_start=false"});
  ASSERT_NE(s.port(), 0);
  auto r = testing::Request(s.port(), "GET", "/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("at version 0 of"), std::string::npos) << r->body;

  auto [code, out] = testing::RunCommand({SMARTD_PATH, "migrate", "--data-dir", s.dir() + "/data"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("migrations applied"), std::string::npos);
  r = testing::Request(s.port(), "GET", "/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST(Smartd, BadConfigurationExitsWithCode2AndNamesTheKey) {
  auto [code, out] = testing::RunCommand({SMARTD_PATH}, {"SMART_HTTP_PORT=eighty"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("http.port"), std::string::npos) << out;
  EXPECT_NE(out.find("SMART_HTTP_PORT"), std::string::npos) << out;

  TempDir dir;
  std::ofstream(dir.path() + "/bad.toml") << "[http]\nprot = 8080\n";
  std::tie(code, out) = testing::RunCommand({SMARTD_PATH, "--config", dir.path() + "/bad.toml"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("unknown key 'http.prot'"), std::string::npos) << out;

  std::tie(code, out) = testing::RunCommand({SMARTD_PATH, "--no-such-flag"});
  EXPECT_EQ(code, 2);

  std::tie(code, out) = testing::RunCommand({SMARTD_PATH, "--port", "0", "--data-dir", dir.path() + "/data"},
                                            {"SMART_HTTP_TRUSTED_PROXIES=10.0.0.0/8,proxy.internal"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("'proxy.internal' is not an IP address or CIDR range"), std::string::npos) << out;

  std::tie(code, out) =
      testing::RunCommand({SMARTD_PATH, "--print-config"}, {"SMART_DATABASE_URL=postgresql://smart:s3cret@db/smart"});
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out.find("s3cret"), std::string::npos);
  EXPECT_NE(out.find("postgresql://smart:***@db/smart"), std::string::npos) << out;
}

// A Redis URL that cannot work (its scheme, refused credentials) stops the
// start (exit 2); a Redis that cannot be reached now is an outage like a later one: smartd starts, says so (no
// password in the log) and reports the relay down until Redis answers.
TEST(Smartd, ARedisUrlThatCannotWorkStopsTheStartAndAnUnreachableRedisDoesNot) {
  TempDir dir;
  auto [code, out] = testing::RunCommand({SMARTD_PATH, "--port", "0", "--data-dir", dir.path()},
                                         {"SMART_REDIS_URL=http://cache:6379"});
  EXPECT_EQ(code, 2) << "a configuration error";
  EXPECT_NE(out.find("a Redis URL starts redis:// or unix://"), std::string::npos) << out;
  testing::RedisServer redis;  // with a password the URL does not have
  ASSERT_FALSE(redis.url().empty());
  ASSERT_TRUE(testing::RunCommand({"redis-cli", "-s", redis.url().substr(7), "CONFIG", "SET", "requirepass", "pw"})
                  .second.find("OK") != std::string::npos);
  std::tie(code, out) = testing::RunCommand({SMARTD_PATH, "--port", "0", "--data-dir", dir.path()},
                                            {"SMART_REDIS_URL=unix://:n0pe@" + redis.url().substr(7)});
  EXPECT_EQ(code, 2) << "refused credentials are a configuration error";
  EXPECT_NE(out.find("Redis refused the credentials"), std::string::npos) << out;
  EXPECT_EQ(out.find("n0pe"), std::string::npos) << "no password in the log";
  Smartd s({"SMART_REDIS_URL=redis://:s3cret@127.0.0.1:1"});
  ASSERT_NE(s.port(), 0) << "started without Redis";
  std::string body = MetricsWith(s.port(), "smart_events_relay_up 0\n");
  EXPECT_NE(body.find("smart_events_relay_up 0\n"), std::string::npos);
  EXPECT_EQ(testing::Request(s.port(), "GET", "/ready")->status, 200) << "the database is what readiness needs";
  std::string log = s.proc().output();
  EXPECT_NE(log.find("sharing events through Redis failed"), std::string::npos) << log;
  EXPECT_NE(log.find("redis://:***@127.0.0.1:1"), std::string::npos) << log;
  EXPECT_EQ(log.find("s3cret"), std::string::npos) << "no password in the log";
}

// Behind a real nginx (the scaled-out shape's proxy): with the proxy trusted
// (http.trusted_proxies), limits and logs see each client's own address from
// X-Forwarded-For, and client WebSockets pass through.
TEST(Smartd, BehindNginxEachClientIsLimitedOnItsOwnAddress) {
  std::vector<std::string> env;
  for (const auto& kv : kFastAuth) {
    env.push_back(kv.starts_with("SMART_RATE_LIMIT_AUTH_BURST=") ? "SMART_RATE_LIMIT_AUTH_BURST=2" : kv);
  }
  env.push_back("SMART_HTTP_TRUSTED_PROXIES=127.0.0.1");
  Smartd s(env);
  ASSERT_NE(s.port(), 0);
  Session ann = RegisterAndLogin(s.port(), "ann@example.com");  // 127.0.0.1's two auth requests
  TempDir dir;
  const uint16_t port = FreePort();
  std::ofstream(dir.path() + "/nginx.conf")
      << "daemon off; master_process off; pid " << dir.path() << "/nginx.pid; error_log " << dir.path()
      << "/error.log;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path " << dir.path()
      << "/body; proxy_temp_path " << dir.path() << "/proxy;\n  fastcgi_temp_path " << dir.path()
      << "/fcgi; uwsgi_temp_path " << dir.path() << "/uwsgi; scgi_temp_path " << dir.path() << "/scgi;\n"
      << "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n"
      << "  server {\n    listen 127.0.0.1:" << port
      << ";\n    location / {\n      proxy_pass http://127.0.0.1:" << s.port() << ";\n      proxy_http_version 1.1;\n"
      << "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
      << "      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n"
      << "    }\n  }\n}\n";
  testing::Process nginx({"/usr/sbin/nginx", "-p", dir.path(), "-c", dir.path() + "/nginx.conf"});
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = testing::Request(port, "GET", "/health").has_value();
    if (!up) std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(up) << nginx.output();

  auto login = [&](const std::string& client) {
    return PostJson(port, "/api/v1/auth/login", R"({"email":"ann@example.com","password":"wrong password 1"})",
                    "X-Forwarded-For: " + client + "\r\n")
        ->status;
  };
  EXPECT_EQ(login("198.51.100.1"), 401);
  EXPECT_EQ(login("198.51.100.1"), 401);
  EXPECT_EQ(login("198.51.100.1"), 429) << "that client's burst of 2 is used";
  EXPECT_EQ(login("198.51.100.2"), 401) << "another client behind the same proxy has its own";
  EXPECT_NE(s.proc().output().find("\"client\":\"198.51.100.2\""), std::string::npos) << "the access log too";

  WsClient events(port, "/api/v1/ws", ann.access);
  events.Send(R"({"type":"subscribe","tasks":"own"})");
  EXPECT_NE(events.Read().find("\"subscribed\""), std::string::npos) << "a WebSocket through nginx";
}

TEST(Smartd, PortInUseFailsClearly) {
  Smartd first;
  ASSERT_NE(first.port(), 0);
  auto [code, out] =
      testing::RunCommand({SMARTD_PATH, "--port", std::to_string(first.port()), "--data-dir", first.dir() + "/other"});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("cannot listen on 127.0.0.1:" + std::to_string(first.port())), std::string::npos) << out;
}

TEST(Smartd, AccountLifecycle) {
  Smartd s(kFastAuth);
  ASSERT_NE(s.port(), 0);
  auto r = PostJson(s.port(), "/api/v1/auth/register",
                    R"({"email":" Ann@Example.com ","password":"correct horse battery","name":"Ann 😀"})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(JsonField(r->body, "email"), "ann@example.com");
  EXPECT_EQ(r->body.find("password"), std::string::npos) << "no hash or password is ever returned";

  r = PostJson(s.port(), "/api/v1/auth/register",
               R"({"email":"ann@example.com","password":"another one!!","name":"X"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409);
  EXPECT_NE(r->body.find("\"code\":\"email_taken\""), std::string::npos);

  r = PostJson(s.port(), "/api/v1/auth/login", R"({"email":"ann@example.com","password":"wrong password"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_NE(r->body.find("invalid_credentials"), std::string::npos);
  auto unknown = PostJson(s.port(), "/api/v1/auth/login", R"({"email":"who@example.com","password":"wrong password"})");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 401);
  EXPECT_EQ(JsonField(unknown->body, "detail"), JsonField(r->body, "detail")) << "no user enumeration";

  r = PostJson(s.port(), "/api/v1/auth/login", R"({"email":"ann@example.com","password":"correct horse battery"})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::string access = JsonField(r->body, "access_token"), refresh = JsonField(r->body, "refresh_token");
  EXPECT_NE(r->body.find("\"token_type\":\"Bearer\""), std::string::npos);
  EXPECT_NE(r->body.find("\"expires_in\":900"), std::string::npos);

  r = testing::Request(s.port(), "GET", "/api/v1/user/profile", {}, "Authorization: Bearer " + access + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "name"), "Ann 😀");

  r = testing::Request(s.port(), "PATCH", "/api/v1/user/profile", R"({"name":"Ann B."})",
                       "Content-Type: application/json\r\nAuthorization: Bearer " + access + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "name"), "Ann B.");

  r = PostJson(s.port(), "/api/v1/auth/refresh", R"({"refresh_token":")" + refresh + R"("})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::string refresh2 = JsonField(r->body, "refresh_token");
  r = PostJson(s.port(), "/api/v1/auth/refresh", R"({"refresh_token":")" + refresh + R"("})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_NE(r->body.find("refresh_token_reused"), std::string::npos);
  r = PostJson(s.port(), "/api/v1/auth/refresh", R"({"refresh_token":")" + refresh2 + R"("})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401) << "reuse revoked the whole family";

  r = PostJson(s.port(), "/api/v1/auth/login", R"({"email":"ann@example.com","password":"correct horse battery"})");
  std::string refresh3 = JsonField(r->body, "refresh_token");
  r = PostJson(s.port(), "/api/v1/auth/logout", R"({"refresh_token":")" + refresh3 + R"("})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  r = PostJson(s.port(), "/api/v1/auth/refresh", R"({"refresh_token":")" + refresh3 + R"("})");
  EXPECT_EQ(r->status, 401);
}

TEST(Smartd, BadTokensAre401WithAChallenge) {
  Smartd s(kFastAuth);
  ASSERT_NE(s.port(), 0);
  auto r = testing::Request(s.port(), "GET", "/api/v1/user/profile");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->Header("www-authenticate"), "Bearer realm=\"smart\"");
  EXPECT_EQ(r->Header("content-type"), "application/problem+json");
  for (const std::string& auth : std::vector<std::string>{
           "Basic dXNlcjpwYXNz", "Bearer ", "Bearer not.a.jwt",
           // alg "none" with an admin claim and no signature
           "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c3JfMSIsInJvbGUiOiJhZG1pbiJ9.", "Bearer ' OR 1=1 --"}) {
    r = testing::Request(s.port(), "GET", "/api/v1/user/profile", {}, "Authorization: " + auth + "\r\n");
    ASSERT_TRUE(r) << auth;
    EXPECT_EQ(r->status, 401) << auth;
    EXPECT_FALSE(r->Header("www-authenticate").empty()) << auth;
  }
}

TEST(Smartd, InvalidJsonBodiesAreClearProblems) {
  Smartd s(kFastAuth);
  ASSERT_NE(s.port(), 0);
  struct Case {
    std::string body, content_type;
    int status;
    std::string code;
  };
  std::vector<Case> cases = {
      {R"({"email":"a@b.com",)", "application/json", 400, "invalid_json"},
      {"", "application/json", 400, "invalid_json"},
      {"[1,2,3]", "application/json", 400, "invalid_json"},
      {"\"just a string\"", "application/json", 400, "invalid_json"},
      {std::string(100, '[') + std::string(100, ']'), "application/json", 400, "invalid_json"},
      {R"({"email":"a@b.com","password":"x","name":"y"})", "text/plain", 415, "unsupported_media_type"},
      {R"({"email":"a@b.com","password":"long enough pw","name":"y","admin":true})", "application/json", 400,
       "unknown_field"},
      {R"({"email":"a@b.com","password":1234567890123,"name":"y"})", "application/json", 422, "validation_failed"},
      {R"({"email":"a@b.com"})", "application/json", 422, "validation_failed"},
      {R"({"email":"a@b.com","password":"long enough pw","name":"bad \u0000 nul"})", "application/json", 422,
       "invalid_name"},
      {R"({"email":"a@b.com","password":"short","name":"y"})", "application/json", 422, "weak_password"},
      {"{\"email\":\"a@b.com\",\"password\":\"long enough pw\",\"name\":\"\xff\xfe\"}", "application/json", 400,
       "invalid_json"},
  };
  for (const auto& c : cases) {
    auto r =
        testing::Request(s.port(), "POST", "/api/v1/auth/register", c.body, "Content-Type: " + c.content_type + "\r\n");
    ASSERT_TRUE(r) << c.body;
    EXPECT_EQ(r->status, c.status) << c.body << " -> " << r->body;
    EXPECT_NE(r->body.find("\"code\":\"" + c.code + "\""), std::string::npos) << c.body << " -> " << r->body;
    EXPECT_EQ(r->Header("content-type"), "application/problem+json");
  }
  // Huge and odd text in every field: refused or stored exactly, never a 500.
  std::string huge(900 * 1024, 'x');
  struct Odd {
    std::string body;
    int status;
  };
  std::vector<Odd> odd = {
      {R"({"email":")" + huge + R"(@x.com","password":"long enough pw","name":"y"})", 422},
      {R"({"email":"huge@x.com","password":")" + huge + R"(","name":"y"})", 422},
      {R"({"email":"huge@x.com","password":"long enough pw","name":")" + huge + R"("})", 422},
      {R"({"email":"a'; DROP TABLE users;--@x.com","password":"long enough pw","name":"y"})", 422},
      {R"({"email":"rtl@x.com","password":"long enough pw","name":"\u202eevil\u200b\ud83d\ude00 \u0645\u0631"})", 201},
      {R"({"email":"lone@x.com","password":"long enough pw","name":"\ud800"})", 400},  // a lone surrogate is not JSON
      {R"({"email":"üñí@exämple.com","password":"pässwörd ✓ long","name":"Zoë"})", 201},
  };
  for (const auto& o : odd) {
    auto res = PostJson(s.port(), "/api/v1/auth/register", o.body);
    ASSERT_TRUE(res) << o.body.substr(0, 80);
    EXPECT_EQ(res->status, o.status) << o.body.substr(0, 80) << " -> " << res->body.substr(0, 300);
  }
  auto login = PostJson(s.port(), "/api/v1/auth/login", R"({"email":"ÜÑÍ@exämple.com","password":"pässwörd ✓ long"})");
  EXPECT_EQ(login->status, 401) << "lower-casing is ASCII-only: a different address";
  login = PostJson(s.port(), "/api/v1/auth/login", R"({"email":"üñí@exämple.com","password":"pässwörd ✓ long"})");
  EXPECT_EQ(login->status, 200) << login->body;

  auto r = PostJson(s.port(), "/api/v1/auth/register",
                    R"({"email":"a@b.com","password":"long enough pw","name":"y","x":1})");
  EXPECT_NE(r->body.find("\"errors\":[{\"field\":\"x\",\"message\":\"unknown field\"}]"), std::string::npos) << r->body;
  // Nothing half-written: none of those created an account.
  r = PostJson(s.port(), "/api/v1/auth/login", R"({"email":"a@b.com","password":"long enough pw"})");
  EXPECT_EQ(r->status, 401);
}

TEST(Smartd, ApiKeysAndScopes) {
  Smartd s(kFastAuth);
  ASSERT_NE(s.port(), 0);
  Session ivy = RegisterAndLogin(s.port(), "ivy@example.com");

  auto r = As(s.port(), "POST", "/api/v1/user/api-keys", ivy.access, R"({"name":"ci","scopes":["tasks:read"]})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  std::string key = JsonField(r->body, "key"), key_id = JsonField(r->body, "id");
  EXPECT_EQ(key.substr(0, 3), "sk_");
  EXPECT_EQ(key.substr(0, 11), JsonField(r->body, "prefix")) << "the prefix identifies the key";

  r = testing::Request(s.port(), "GET", "/api/v1/user/profile", {}, "X-API-Key: " + key + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  r = As(s.port(), "GET", "/api/v1/user/profile", key);
  EXPECT_EQ(r->status, 200) << "Bearer works for keys too";

  r = As(s.port(), "POST", "/api/v1/user/api-keys", key, R"({"name":"x","scopes":["tasks:read"]})");
  EXPECT_EQ(r->status, 403);
  EXPECT_NE(r->body.find("session_required"), std::string::npos) << "a key cannot mint keys";
  r = As(s.port(), "POST", "/api/v1/user/api-keys", ivy.access, R"({"name":"x","scopes":["admin"]})");
  EXPECT_EQ(r->status, 403);
  EXPECT_NE(r->body.find("scope_not_allowed"), std::string::npos);
  r = As(s.port(), "POST", "/api/v1/user/api-keys", ivy.access, R"({"name":"x","scopes":["root"]})");
  EXPECT_EQ(r->status, 422);
  r = As(s.port(), "POST", "/api/v1/user/api-keys", ivy.access, R"({"name":"x","scopes":[]})");
  EXPECT_EQ(r->status, 422);
  r = As(s.port(), "POST", "/api/v1/user/api-keys", ivy.access,
         R"({"name":"x","scopes":["nodes"],"expires_at":"2001-01-01T00:00:00Z"})");
  EXPECT_EQ(r->status, 422);
  r = As(s.port(), "POST", "/api/v1/user/api-keys", ivy.access,
         R"({"name":"x","scopes":["nodes"],"expires_at":"soon"})");
  EXPECT_EQ(r->status, 422);

  r = As(s.port(), "GET", "/api/v1/user/api-keys", ivy.access);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find(key_id), std::string::npos);
  EXPECT_EQ(r->body.find(key), std::string::npos) << "the secret is never listed";

  // A user key has no admin scope: 403, with the scope named.
  r = As(s.port(), "GET", "/api/v1/admin/users", key);
  EXPECT_EQ(r->status, 403);
  EXPECT_NE(r->Header("www-authenticate").find("insufficient_scope"), std::string::npos);

  r = As(s.port(), "GET", "/api/v1/user/usage", ivy.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->body.find("\"key_id\":\"" + key_id + "\""), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"key_id\":null"), std::string::npos) << "session requests are counted too";
  EXPECT_NE(r->body.find("\"requests\":"), std::string::npos);

  r = As(s.port(), "DELETE", "/api/v1/user/api-keys/" + key_id, ivy.access);
  EXPECT_EQ(r->status, 204);
  r = As(s.port(), "GET", "/api/v1/user/profile", key);
  EXPECT_EQ(r->status, 401) << "a revoked key stops at once";
  r = As(s.port(), "DELETE", "/api/v1/user/api-keys/" + key_id, ivy.access);
  EXPECT_EQ(r->status, 404);
  r = As(s.port(), "GET", "/api/v1/user/profile", "sk_forged_" + std::string(43, 'A'));
  EXPECT_EQ(r->status, 401);
}

TEST(Smartd, AdminManagesUsersAndReadsTheAudit) {
  Smartd s(kFastAuth);
  ASSERT_NE(s.port(), 0);
  std::string cmd = "echo 'admin password 1' | SMART_AUTH_ARGON2_M_COST_KIB=1024 SMART_AUTH_ARGON2_T_COST=1 " +
                    std::string(SMARTD_PATH) + " admin create --email root@example.com --password-stdin --data-dir " +
                    s.dir() + "/data";
  auto [code, out] = testing::RunCommand({"/bin/sh", "-c", cmd});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("created admin root@example.com"), std::string::npos);
  Session root = Login(s.port(), "root@example.com", "admin password 1");
  Session jo = RegisterAndLogin(s.port(), "jo@example.com");
  auto r = As(s.port(), "POST", "/api/v1/user/api-keys", jo.access, R"({"name":"k","scopes":["tasks:read"]})");
  std::string jo_key = JsonField(r->body, "key");

  r = As(s.port(), "GET", "/api/v1/admin/users", jo.access);
  EXPECT_EQ(r->status, 403) << "users are not admins";
  r = As(s.port(), "GET", "/api/v1/admin/users?limit=1", root.access);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::string cursor = JsonField(r->body, "next_cursor");
  ASSERT_FALSE(cursor.empty());
  r = As(s.port(), "GET", "/api/v1/admin/users?limit=1&cursor=" + cursor, root.access);
  ASSERT_EQ(r->status, 200);
  std::string jo_id = JsonField(r->body, "id");
  EXPECT_EQ(JsonField(r->body, "email"), "jo@example.com");
  r = As(s.port(), "GET", "/api/v1/admin/users?limit=0", root.access);
  EXPECT_EQ(r->status, 422);
  r = As(s.port(), "GET", "/api/v1/admin/users?limit=abc", root.access);
  EXPECT_EQ(r->status, 422);

  r = As(s.port(), "PATCH", "/api/v1/admin/users/" + jo_id, root.access, R"({"status":"disabled"})");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(As(s.port(), "GET", "/api/v1/user/profile", jo.access)->status, 401) << "tokens stop at once";
  EXPECT_EQ(As(s.port(), "GET", "/api/v1/user/profile", jo_key)->status, 401) << "keys stop at once";
  r = PostJson(s.port(), "/api/v1/auth/refresh", R"({"refresh_token":")" + jo.refresh + R"("})");
  EXPECT_EQ(r->status, 401) << "sessions end with the account";
  r = As(s.port(), "PATCH", "/api/v1/admin/users/" + jo_id, root.access, R"({"status":"active","role":"admin"})");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(JsonField(r->body, "role"), "admin");
  r = As(s.port(), "PATCH", "/api/v1/admin/users/" + jo_id, root.access, R"({"role":"emperor"})");
  EXPECT_EQ(r->status, 422);
  r = As(s.port(), "PATCH", "/api/v1/admin/users/usr_nobody", root.access, R"({"status":"disabled"})");
  EXPECT_EQ(r->status, 404);

  std::string root_id = JsonField(As(s.port(), "GET", "/api/v1/user/profile", root.access)->body, "id");
  r = As(s.port(), "PATCH", "/api/v1/admin/users/" + root_id, root.access, R"({"status":"disabled"})");
  EXPECT_EQ(r->status, 409) << "an admin cannot lock themselves out";

  PostJson(s.port(), "/api/v1/auth/login", R"({"email":"root@example.com","password":"not it at all"})");
  r = As(s.port(), "GET", "/api/v1/admin/audit?limit=100", root.access);
  ASSERT_EQ(r->status, 200) << r->body;
  for (const char* action : {"admin_created", "login_succeeded", "login_failed", "api_key_created",
                             "admin_user_updated", "admin_user_role_changed", "user_registered"}) {
    EXPECT_NE(r->body.find(std::string("\"action\":\"") + action + "\""), std::string::npos) << action;
  }
  r = As(s.port(), "GET", "/api/v1/admin/audit?action=login_failed", root.access);
  EXPECT_EQ(r->body.find("login_succeeded"), std::string::npos);
  EXPECT_NE(r->body.find("login_failed"), std::string::npos);
}

TEST(Smartd, RateLimitsByAddressAndAccount) {
  Smartd s({"SMART_AUTH_ARGON2_M_COST_KIB=1024", "SMART_AUTH_ARGON2_T_COST=1", "SMART_RATE_LIMIT_AUTH_BURST=100",
            "SMART_RATE_LIMIT_DEFAULT_PER_MIN=60", "SMART_RATE_LIMIT_DEFAULT_BURST=5"});
  ASSERT_NE(s.port(), 0);
  Session kim = RegisterAndLogin(s.port(), "kim@example.com");
  // Every API answer carries the headers; the burst of the default tier is 5.
  for (int i = 0; i < 5; ++i) {
    auto r = As(s.port(), "GET", "/api/v1/user/profile", kim.access);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << i << r->body;
    EXPECT_EQ(r->Header("ratelimit-limit"), "5");
    EXPECT_EQ(r->Header("ratelimit-remaining"), std::to_string(4 - i));
    EXPECT_FALSE(r->Header("ratelimit-reset").empty());
  }
  auto r = As(s.port(), "GET", "/api/v1/user/profile", kim.access);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_EQ(r->Header("retry-after"), "1");
  EXPECT_EQ(r->Header("ratelimit-remaining"), "0");
  EXPECT_EQ(r->Header("content-type"), "application/problem+json");
  EXPECT_NE(r->body.find("\"code\":\"rate_limited\""), std::string::npos);
  // Another account is not affected; operational endpoints are never limited.
  Session lee = RegisterAndLogin(s.port(), "lee@example.com");
  r = As(s.port(), "GET", "/api/v1/user/profile", lee.access);
  EXPECT_EQ(r->status, 200) << r->body;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(testing::Request(s.port(), "GET", "/health")->status, 200);

  // One request per second refills: after the wait one more passes.
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(As(s.port(), "GET", "/api/v1/user/profile", kim.access)->status, 200);
}

TEST(Smartd, DailyQuota) {
  std::vector<std::string> env = kFastAuth;
  env.push_back("SMART_RATE_LIMIT_DEFAULT_PER_DAY=3");
  Smartd s(env);
  ASSERT_NE(s.port(), 0);
  Session mo = RegisterAndLogin(s.port(), "mo@example.com");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(As(s.port(), "GET", "/api/v1/user/profile", mo.access)->status, 200);
  auto r = As(s.port(), "GET", "/api/v1/user/profile", mo.access);
  EXPECT_EQ(r->status, 429);
  EXPECT_NE(r->body.find("daily_quota_exceeded"), std::string::npos) << r->body;
  int retry = std::atoi(r->Header("retry-after").c_str());
  EXPECT_GT(retry, 0);
  EXPECT_LE(retry, 86400);
}

TEST(Smartd, FailedLoginsBackOffPerAccount) {
  Smartd s({"SMART_AUTH_ARGON2_M_COST_KIB=1024", "SMART_AUTH_ARGON2_T_COST=1", "SMART_RATE_LIMIT_AUTH_BURST=100",
            "SMART_RATE_LIMIT_LOGIN_FAILURES_BURST=3"});
  ASSERT_NE(s.port(), 0);
  RegisterAndLogin(s.port(), "max@example.com");
  for (int i = 0; i < 3; ++i) {
    auto r = PostJson(s.port(), "/api/v1/auth/login",
                      R"({"email":"max@example.com","password":"guess number )" + std::to_string(i) + R"("})");
    EXPECT_EQ(r->status, 401);
  }
  // Now even the right password waits, and so does an unknown account from this address.
  auto r =
      PostJson(s.port(), "/api/v1/auth/login", R"({"email":"max@example.com","password":"correct horse battery"})");
  EXPECT_EQ(r->status, 429);
  EXPECT_NE(r->body.find("too_many_failed_logins"), std::string::npos);
  EXPECT_FALSE(r->Header("retry-after").empty());
}

TEST(Smartd, SigningKeyRotation) {
  TempDir dir;
  std::string data = dir.path() + "/data";
  std::string old_secret(40, 'o'), new_secret(40, 'n');
  auto env = [&](std::vector<std::string> extra) {
    std::vector<std::string> e = kFastAuth;
    e.insert(e.end(), extra.begin(), extra.end());
    return e;
  };
  std::string token;
  {
    Smartd s(env({"SMART_AUTH_JWT_SECRET=" + old_secret, "SMART_AUTH_JWT_KID=2026a"}), {}, data);
    ASSERT_NE(s.port(), 0);
    token = RegisterAndLogin(s.port(), "rot@example.com").access;
    EXPECT_EQ(As(s.port(), "GET", "/api/v1/user/profile", token)->status, 200);
  }
  {
    // Rotated: a new signing key, the old one still accepted.
    Smartd s(env({"SMART_AUTH_JWT_SECRET=" + new_secret, "SMART_AUTH_JWT_KID=2026b",
                  "SMART_AUTH_JWT_PREVIOUS_KEYS=2026a:" + old_secret}),
             {}, data);
    ASSERT_NE(s.port(), 0);
    EXPECT_EQ(As(s.port(), "GET", "/api/v1/user/profile", token)->status, 200);
    std::string fresh = Login(s.port(), "rot@example.com", "correct horse battery").access;
    EXPECT_EQ(As(s.port(), "GET", "/api/v1/user/profile", fresh)->status, 200);
  }
  {
    // The old key retired: its tokens are refused.
    Smartd s(env({"SMART_AUTH_JWT_SECRET=" + new_secret, "SMART_AUTH_JWT_KID=2026b"}), {}, data);
    ASSERT_NE(s.port(), 0);
    auto r = As(s.port(), "GET", "/api/v1/user/profile", token);
    EXPECT_EQ(r->status, 401);
    EXPECT_NE(r->body.find("unknown_key"), std::string::npos) << r->body;
  }
  auto [code, out] = testing::RunCommand({SMARTD_PATH, "--data-dir", data}, {"SMART_AUTH_JWT_SECRET=too-short"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("auth.jwt_secret"), std::string::npos) << out;
}

// Every route that takes credentials, against every kind of caller.
TEST(Smartd, ScopeAndRoleMatrix) {
  Smartd s(kFastAuth);
  ASSERT_NE(s.port(), 0);
  std::string cmd = "echo 'admin password 1' | SMART_AUTH_ARGON2_M_COST_KIB=1024 SMART_AUTH_ARGON2_T_COST=1 " +
                    std::string(SMARTD_PATH) + " admin create --email boss@example.com --password-stdin --data-dir " +
                    s.dir() + "/data";
  ASSERT_EQ(testing::RunCommand({"/bin/sh", "-c", cmd}).first, 0);
  std::string admin = Login(s.port(), "boss@example.com", "admin password 1").access;
  std::string user = RegisterAndLogin(s.port(), "user@example.com").access;
  std::string node_id = JsonField(
      As(s.port(), "GET", "/api/v1/user/profile", RegisterAndLogin(s.port(), "node@example.com").access)->body, "id");
  ASSERT_EQ(As(s.port(), "PATCH", "/api/v1/admin/users/" + node_id, admin, R"({"role":"node"})")->status, 200);
  std::string node = Login(s.port(), "node@example.com", "correct horse battery").access;
  std::string user_key = JsonField(
      As(s.port(), "POST", "/api/v1/user/api-keys", user, R"({"name":"ro","scopes":["ledger:read"]})")->body, "key");
  std::string admin_key = JsonField(
      As(s.port(), "POST", "/api/v1/user/api-keys", admin, R"({"name":"adm","scopes":["admin"]})")->body, "key");
  ASSERT_FALSE(user_key.empty());
  ASSERT_FALSE(admin_key.empty());

  struct Route {
    std::string method, target, body;
  };
  std::vector<Route> routes = {
      {"GET", "/api/v1/user/profile", ""},  {"PATCH", "/api/v1/user/profile", R"({"name":"N"})"},
      {"GET", "/api/v1/user/api-keys", ""}, {"POST", "/api/v1/user/api-keys", R"({"name":"k","scopes":["nodes"]})"},
      {"GET", "/api/v1/user/usage", ""},    {"GET", "/api/v1/admin/users", ""},
      {"GET", "/api/v1/admin/audit", ""},   {"PATCH", "/api/v1/admin/users/" + node_id, R"({"tier":"pro"})"},
  };
  // Expected status per caller, in the order of `routes`.
  std::vector<std::pair<std::string, std::vector<int>>> callers = {
      {"", {401, 401, 401, 401, 401, 401, 401, 401}},       {user, {200, 200, 200, 201, 200, 403, 403, 403}},
      {node, {200, 200, 200, 201, 200, 403, 403, 403}},     {admin, {200, 200, 200, 201, 200, 200, 200, 200}},
      {user_key, {200, 403, 200, 403, 200, 403, 403, 403}}, {admin_key, {200, 403, 200, 403, 200, 200, 200, 200}},
  };
  const char* names[] = {"none", "user session", "node session", "admin session", "user key", "admin key"};
  for (size_t c = 0; c < callers.size(); ++c) {
    for (size_t i = 0; i < routes.size(); ++i) {
      const auto& rt = routes[i];
      std::string headers = callers[c].first.empty() ? "" : "Authorization: Bearer " + callers[c].first + "\r\n";
      if (!rt.body.empty()) headers += "Content-Type: application/json\r\n";
      auto r = testing::Request(s.port(), rt.method, rt.target, rt.body, headers);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, callers[c].second[i])
          << names[c] << ": " << rt.method << " " << rt.target << " -> " << r->body;
    }
  }
}

TEST(SmartdPostgres, ServesAndIsReadyOnPostgres) {
  std::string url = testing::FreshPostgresDatabase();
  ASSERT_FALSE(url.empty());
  Smartd s({"SMART_DATABASE_URL=" + url});
  ASSERT_NE(s.port(), 0);
  ASSERT_TRUE(s.proc().output().find("\"database\":\"postgresql\"") != std::string::npos);
  auto r = testing::Request(s.port(), "GET", "/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // A second instance against the same database starts too (migrations under the lock),
  // and with a shared secret a session from one works on the other.
  std::vector<std::string> env = kFastAuth;
  env.push_back("SMART_DATABASE_URL=" + url);
  env.push_back("SMART_AUTH_JWT_SECRET=" + std::string(40, 's'));
  Smartd a(env), b(env);
  ASSERT_NE(a.port(), 0);
  ASSERT_NE(b.port(), 0);
  Session pg = RegisterAndLogin(a.port(), "pg@example.com");
  r = As(b.port(), "GET", "/api/v1/user/profile", pg.access);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "email"), "pg@example.com");
  r = PostJson(b.port(), "/api/v1/auth/refresh", R"({"refresh_token":")" + pg.refresh + R"("})");
  EXPECT_EQ(r->status, 200) << r->body;
}

// Two instances sharing a fresh PostgreSQL database and a throwaway
// redis-server, with `overrides` on top of SharedInstanceEnv's settings.
struct TwoInstances {
  testing::RedisServer redis;
  std::string url = testing::FreshPostgresDatabase();
  std::unique_ptr<Smartd> a, b;
  explicit TwoInstances(const std::vector<std::string>& overrides) {
    if (redis.url().empty() || url.empty()) return;
    auto env = SharedInstanceEnv(url, redis.url(), overrides);
    a = std::make_unique<Smartd>(env);
    b = std::make_unique<Smartd>(env);
  }
  bool up() const { return a && b && a->port() != 0 && b->port() != 0; }
};

// With Redis, a credential change on one instance empties every instance's
// cache at once, not after the cache's 10 s; and failed logins count against
// one budget, not one per instance.
TEST(SmartdPostgres, ACredentialChangeReachesEveryInstanceAtOnce) {
  TwoInstances instances({"SMART_RATE_LIMIT_LOGIN_FAILURES_BURST=4"});
  ASSERT_TRUE(instances.up());
  Smartd &a = *instances.a, &b = *instances.b;
  const std::string& url = instances.url;
  Session root = CreateAdmin(a, "root@example.com", "SMART_DATABASE_URL='" + url + "'");
  Session jo = RegisterAndLogin(a.port(), "jo@example.com");
  auto r = As(a.port(), "POST", "/api/v1/user/api-keys", jo.access, R"({"name":"k","scopes":["tasks:read"]})");
  ASSERT_EQ(r->status, 201) << r->body;
  std::string key = JsonField(r->body, "key"), key_id = JsonField(r->body, "id");
  // b verifies both and caches them.
  ASSERT_EQ(As(b.port(), "GET", "/api/v1/user/profile", key)->status, 200);
  ASSERT_EQ(As(b.port(), "GET", "/api/v1/user/profile", jo.access)->status, 200);
  std::string jo_id = JsonField(As(b.port(), "GET", "/api/v1/user/profile", jo.access)->body, "id");

  auto refused_on_b_within = [&](const std::string& credential) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < until) {
      if (As(b.port(), "GET", "/api/v1/user/profile", credential)->status == 401) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  ASSERT_EQ(As(a.port(), "DELETE", "/api/v1/user/api-keys/" + key_id, jo.access)->status, 204);
  EXPECT_TRUE(refused_on_b_within(key)) << "a key revoked on a stops on b within 3 s, not the cache's 10";
  EXPECT_EQ(As(b.port(), "GET", "/api/v1/user/profile", jo.access)->status, 200);
  r = As(a.port(), "PATCH", "/api/v1/admin/users/" + jo_id, root.access, R"({"status":"disabled"})");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(refused_on_b_within(jo.access)) << "a disabled account stops on b within 3 s";

  // Four failed logins, two on each instance: the fifth attempt is refused on either.
  RegisterAndLogin(a.port(), "ann@example.com");
  for (int i = 0; i < 4; ++i) {
    r = PostJson(i % 2 ? b.port() : a.port(), "/api/v1/auth/login",
                 R"({"email":"ann@example.com","password":"wrong password )" + std::to_string(i) + R"("})");
    ASSERT_EQ(r->status, 401) << i << ": " << r->body;
  }
  for (uint16_t port : {a.port(), b.port()}) {
    r = PostJson(port, "/api/v1/auth/login", R"({"email":"ann@example.com","password":"correct horse battery"})");
    EXPECT_EQ(r->status, 429) << r->body;
    EXPECT_NE(r->body.find("too_many_failed_logins"), std::string::npos) << r->body;
  }
}

// Request rates and daily quotas hold across instances (Redis): a client
// spreading its requests over two instances gets one budget, not one each.
TEST(SmartdPostgres, RequestLimitsHoldAcrossInstances) {
  TwoInstances instances(
      {"SMART_RATE_LIMIT_DEFAULT_BURST=4", "SMART_RATE_LIMIT_DEFAULT_PER_MIN=1", "SMART_RATE_LIMIT_FREE_PER_DAY=3"});
  ASSERT_TRUE(instances.up());
  Smartd &a = *instances.a, &b = *instances.b;
  const std::string& url = instances.url;
  auto exchanged = [] { std::this_thread::sleep_for(500ms); };  // the instances exchange every 100 ms
  auto refused = [](const std::optional<testing::HttpResponse>& r, const std::string& code) {
    return r && r->status == 429 && r->body.find(code) != std::string::npos;
  };

  // The default tier's burst (4, then one a minute), used on a.
  Session ann = RegisterAndLogin(a.port(), "ann@example.com");
  for (int i = 0; i < 4; ++i) ASSERT_EQ(As(a.port(), "GET", "/api/v1/user/profile", ann.access)->status, 200) << i;
  exchanged();
  for (uint16_t port : {b.port(), a.port()}) {
    auto r = As(port, "GET", "/api/v1/user/profile", ann.access);
    EXPECT_TRUE(refused(r, "rate_limited")) << port << ": " << r->status << " " << r->body;
  }

  // The free tier's daily quota (3), spread over both.
  Session root = CreateAdmin(a, "root@example.com", "SMART_DATABASE_URL='" + url + "'");
  Session mo = RegisterAndLogin(a.port(), "mo@example.com");
  std::string mo_id = JsonField(As(a.port(), "GET", "/api/v1/user/profile", mo.access)->body, "id");  // one of three
  auto r = As(a.port(), "PATCH", "/api/v1/admin/users/" + mo_id, root.access, R"({"tier":"free"})");
  ASSERT_EQ(r->status, 200) << r->body;
  ASSERT_EQ(As(a.port(), "GET", "/api/v1/user/profile", mo.access)->status, 200);
  exchanged();
  ASSERT_EQ(As(b.port(), "GET", "/api/v1/user/profile", mo.access)->status, 200);
  exchanged();
  for (uint16_t port : {b.port(), a.port()}) {
    r = As(port, "GET", "/api/v1/user/profile", mo.access);
    EXPECT_TRUE(refused(r, "daily_quota_exceeded")) << port << ": " << r->status << " " << r->body;
  }
}

// An account's event connections count over every instance (redis.url): one
// that b admitted while a held the account's last places is closed (1008),
// b then refuses the account's next at the upgrade (429), and a place freed
// on a is taken on b.
TEST(SmartdPostgres, EventConnectionsPerAccountHoldAcrossInstances) {
  TwoInstances instances({"SMART_EVENTS_MAX_CONNECTIONS_PER_USER=2"});
  ASSERT_TRUE(instances.up());
  Smartd &a = *instances.a, &b = *instances.b;
  Session ann = RegisterAndLogin(a.port(), "ann@example.com");
  auto subscribed = [](WsClient& ws) {
    ws.Send(R"({"type":"subscribe","tasks":"own"})");
    return ws.ReadUntil("\"subscribed\"").find("\"subscribed\"") != std::string::npos;
  };
  auto one = std::make_unique<WsClient>(a.port(), "/api/v1/ws", ann.access);
  WsClient two(a.port(), "/api/v1/ws", ann.access);
  std::this_thread::sleep_for(500ms);                  // the instances exchange every 100 ms
  WsClient three(b.port(), "/api/v1/ws", ann.access);  // b had heard nothing of ann
  EXPECT_EQ(three.Read(), "");
  EXPECT_EQ(three.close_code(), 1008);
  const std::string let_go = "smart_ws_event_closed_total{reason=\"over_cap\"} 1\n";
  EXPECT_NE(MetricsWith(b.port(), let_go).find(let_go), std::string::npos) << "counted";
  EXPECT_THROW(WsClient(b.port(), "/api/v1/ws", ann.access), boost::system::system_error) << "b heard of a's two";
  EXPECT_TRUE(subscribed(*one));
  EXPECT_TRUE(subscribed(two));
  one.reset();
  std::unique_ptr<WsClient> four;
  for (int i = 0; i < 50 && !four; ++i) {
    try {
      four = std::make_unique<WsClient>(b.port(), "/api/v1/ws", ann.access);
    } catch (const boost::system::system_error&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  ASSERT_TRUE(four) << "a place freed on a is taken on b";
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(subscribed(*four)) << "and kept";
  EXPECT_TRUE(subscribed(two));
}

}  // namespace
}  // namespace smart
