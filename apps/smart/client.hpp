// The CLI's view of a server: a profile (server URL and credentials from
// ~/.config/smart/config.toml, the environment and flags), the session kept
// by `smart login` (a refresh token in a 0600 file), and API calls that
// refresh an expired session on their own.
#pragma once

#include <boost/json/value.hpp>
#include <optional>
#include <string>
#include <vector>

#include "smart/core/result.hpp"
#include "smart/http/client.hpp"

namespace smart::cli {

// Exit codes (docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;       // the server refused, or a task failed
inline constexpr int kExitUsage = 2;        // bad arguments or configuration
inline constexpr int kExitAuth = 3;         // not logged in, bad credentials, missing scope
inline constexpr int kExitNotFound = 4;     // no such task, node, key...
inline constexpr int kExitUnavailable = 5;  // the server cannot be reached or is overloaded
inline constexpr int kExitPayment = 6;      // insufficient funds

struct Options {
  std::string profile;      // --profile / SMART_PROFILE / the file's `default` / "default"
  std::string server;       // --server / SMART_SERVER / the profile's / http://127.0.0.1:8080
  std::string api_key;      // --api-key / SMART_API_KEY / the profile's
  std::string config_path;  // --config / SMART_CONFIG / $XDG_CONFIG_HOME/smart/config.toml
  bool json = false;
};

// A refused call: the problem document's title, detail and code, and the exit code it means.
struct Problem {
  int status = 0;
  std::string code, title, detail;
  int exit_code = kExitFailed;
};

class Client {
 public:
  explicit Client(Options options);

  // Resolves the profile; a broken config file is kExitUsage.
  Result<void> Load();
  const Options& options() const { return options_; }
  const std::string& server() const { return server_; }
  std::string config_dir() const;

  // Calls the API as the profile's user (API key, else the session, refreshed
  // when needed). `path` starts with /api/v1. Answers the JSON body (null for
  // 204 and 304); `received`, when given, gets the status and header fields.
  std::variant<boost::json::value, Problem> Call(const std::string& method, const std::string& path,
                                                 const std::string& body = "",
                                                 const std::vector<std::pair<std::string, std::string>>& headers = {},
                                                 bool authenticated = true, http::ClientResponse* received = nullptr);

  // Session (smart login / logout).
  std::variant<boost::json::value, Problem> Login(const std::string& email, const std::string& password);
  std::optional<Problem> Logout();
  bool HasCredentials() const { return !api_key_.empty() || !refresh_token_.empty(); }

  // Writes the profile's server to the config file (login --server remembers it).
  Result<void> RememberServer();

 private:
  std::string SessionPath() const;
  Result<void> SaveSession() const;
  std::optional<Problem> Refresh();

  Options options_;
  std::string server_, api_key_;
  std::string access_token_, refresh_token_, email_;
  int64_t access_expires_ms_ = 0;
};

}  // namespace smart::cli
