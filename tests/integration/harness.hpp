// The real smartd binary on port 0 with a temporary data directory, and small
// HTTP helpers for the integration tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "smart/testing/http_client.hpp"
#include "smart/testing/process.hpp"

namespace smart::itest {

class Smartd {
 public:
  // `data_dir` keeps state across instances (restarts); by default each instance has its own.
  explicit Smartd(std::vector<std::string> env = {}, std::vector<std::string> args = {}, std::string data_dir = "");
  uint16_t port() const { return port_; }
  testing::Process& proc() { return *proc_; }
  const std::string& dir() const { return dir_.path(); }
  const std::string& data_dir() const { return data_dir_; }

 private:
  testing::TempDir dir_;
  std::string data_dir_;
  std::unique_ptr<testing::Process> proc_;
  uint16_t port_ = 0;
};

// A TCP port that was free a moment ago (for a server restarted on the same port).
uint16_t FreePort();

// Fast Argon2 parameters: the tests exercise the flow, not the hash's cost.
// Generous limits: these tests exercise the flows, and all their requests come from 127.0.0.1.
extern const std::vector<std::string> kFastAuth;
// The environment of one of several instances sharing a PostgreSQL database
// (`pg_url`), Redis (`redis_url`) and a JWT secret: kFastAuth with `overrides`
// ("NAME=VALUE", each replacing kFastAuth's NAME or added).
std::vector<std::string> SharedInstanceEnv(const std::string& pg_url, const std::string& redis_url,
                                           const std::vector<std::string>& overrides = {});

std::optional<testing::HttpResponse> PostJson(uint16_t port, const std::string& target, const std::string& body,
                                              const std::string& extra = {});
// The first string value of `key` in a JSON text; empty when absent.
std::string JsonField(const std::string& body, const std::string& key);
// The id of an event message ({"id":N,...}); 0 if none.
uint64_t EventId(const std::string& message);

struct Session {
  std::string access, refresh;
};
Session Login(uint16_t port, const std::string& email, const std::string& password);
// Registers with the password "correct horse battery" and logs in.
Session RegisterAndLogin(uint16_t port, const std::string& email);
// A request with `Authorization: Bearer credential` (and a JSON body when given).
std::optional<testing::HttpResponse> As(uint16_t port, const std::string& method, const std::string& target,
                                        const std::string& credential, const std::string& body = {},
                                        const std::string& extra_headers = {});
// The /metrics text once it contains `line` (polled for up to 2 s), else the last one read.
std::string MetricsWith(uint16_t port, const std::string& line);
// `smartd admin create` against the data directory of `s` (password "admin password 1"); then logs in.
Session CreateAdmin(Smartd& s, const std::string& email, const std::string& extra_env = "");

// A blocking WebSocket client (Beast) for `target` on 127.0.0.1:port, with
// `Authorization: Bearer token` when a token is given. Throws when the
// handshake is refused.
class WsClient {
 public:
  WsClient(uint16_t port, const std::string& target, const std::string& token);
  ~WsClient();
  void Send(const std::string& text);
  // The next message; empty when the connection closed (or none came in 10 s).
  std::string Read();
  // Reads until a message contains `needle` (skipping others); empty if none came.
  std::string ReadUntil(const std::string& needle, int max_messages = 50);
  uint16_t close_code() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace smart::itest
