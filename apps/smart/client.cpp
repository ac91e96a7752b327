#include "client.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "smart/http/client.hpp"

namespace smart::cli {
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Problem FromResponse(int status, const std::string& body) {
  Problem p{.status = status, .code = "http_" + std::to_string(status), .title = "HTTP " + std::to_string(status)};
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (!ec && v.is_object()) {
    const auto& o = v.as_object();
    auto text = [&](std::string_view k) {
      const auto* f = o.if_contains(k);
      return f && f->is_string() ? std::string(f->as_string()) : std::string();
    };
    if (!text("code").empty()) p.code = text("code");
    if (!text("title").empty()) p.title = text("title");
    p.detail = text("detail");
    const auto* errors = o.if_contains("errors");
    if (errors && errors->is_array() && (p.code == "validation_failed" || p.detail.empty())) {
      for (const auto& e : errors->as_array()) {
        if (!e.is_object()) continue;
        const auto* field = e.as_object().if_contains("field");
        const auto* message = e.as_object().if_contains("message");
        if (field && field->is_string() && message && message->is_string()) {
          p.detail += std::string(p.detail.empty() ? "" : "; ") + std::string(field->as_string()) + " " +
                      std::string(message->as_string());
        }
      }
    }
  }
  if (status == 401 || status == 403) p.exit_code = kExitAuth;
  if (status == 404) p.exit_code = kExitNotFound;
  if (status == 402 || p.code == "insufficient_funds") p.exit_code = kExitPayment;
  if (status == 429 || status >= 500) p.exit_code = kExitUnavailable;
  return p;
}

// Writes `text` to `path` with mode 0600 (created so; never readable by others in between).
Result<void> WritePrivate(const std::string& path, const std::string& text) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  ::chmod(fs::path(path).parent_path().c_str(), 0700);
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Error::Unavailable("write_failed", "cannot write " + tmp);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
    return Error::Unavailable("write_failed", "cannot write " + path);
  return Ok();
}

// The profiles file; empty when it does not exist yet.
Result<toml::table> ReadConfig(const std::string& path) {
  if (!fs::exists(path)) return toml::table{};
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Error::Invalid("invalid_config", path + ": " + std::string(e.description()));
  }
}

}  // namespace

Client::Client(Options options) : options_(std::move(options)) {}

std::string Client::config_dir() const { return fs::path(options_.config_path).parent_path().string(); }

Result<void> Client::Load() {
  if (options_.config_path.empty()) options_.config_path = Env("SMART_CONFIG");
  if (options_.config_path.empty()) {
    std::string base = Env("XDG_CONFIG_HOME");
    if (base.empty()) base = Env("HOME").empty() ? "." : Env("HOME") + "/.config";
    options_.config_path = base + "/smart/config.toml";
  }
  auto parsed = ReadConfig(options_.config_path);
  if (!parsed) return parsed.take_error();
  toml::table file = std::move(parsed).value();
  if (options_.profile.empty()) options_.profile = Env("SMART_PROFILE");
  if (options_.profile.empty()) options_.profile = file["default"].value_or(std::string("default"));
  auto profile = file["profiles"][options_.profile];
  server_ = options_.server;
  if (server_.empty()) server_ = Env("SMART_SERVER");
  if (server_.empty()) server_ = profile["server"].value_or(std::string("http://127.0.0.1:8080"));
  while (!server_.empty() && server_.back() == '/') server_.pop_back();
  api_key_ = options_.api_key;
  if (api_key_.empty()) api_key_ = Env("SMART_API_KEY");
  if (api_key_.empty()) api_key_ = profile["api_key"].value_or(std::string());
  std::ifstream session(SessionPath());
  if (session) {
    std::stringstream text;
    text << session.rdbuf();
    boost::system::error_code ec;
    auto v = json::parse(text.str(), ec);
    if (!ec && v.is_object()) {
      const auto& o = v.as_object();
      auto field = [&](std::string_view k) {
        const auto* f = o.if_contains(k);
        return f && f->is_string() ? std::string(f->as_string()) : std::string();
      };
      // A session belongs to the server it was opened on.
      if (field("server") == server_) {
        refresh_token_ = field("refresh_token");
        access_token_ = field("access_token");
        email_ = field("email");
        if (const auto* e = o.if_contains("access_expires_ms"); e && e->is_int64()) access_expires_ms_ = e->as_int64();
      }
    }
  }
  return Ok();
}

std::string Client::SessionPath() const { return config_dir() + "/sessions/" + options_.profile + ".json"; }

Result<void> Client::SaveSession() const {
  json::object o{{"server", server_},
                 {"email", email_},
                 {"refresh_token", refresh_token_},
                 {"access_token", access_token_},
                 {"access_expires_ms", access_expires_ms_}};
  return WritePrivate(SessionPath(), json::serialize(o) + "\n");
}

Result<void> Client::RememberServer() {
  auto parsed = ReadConfig(options_.config_path);
  if (!parsed) return parsed.take_error();
  toml::table file = std::move(parsed).value();
  if (!file.contains("profiles")) file.insert("profiles", toml::table{});
  auto* profiles = file["profiles"].as_table();
  if (!profiles->contains(options_.profile)) profiles->insert(options_.profile, toml::table{});
  profiles->at(options_.profile).as_table()->insert_or_assign("server", server_);
  if (!file.contains("default")) file.insert("default", options_.profile);
  std::stringstream out;
  out << "# smart CLI profiles (docs/cli.md)\n" << file << "\n";
  return WritePrivate(options_.config_path, out.str());
}

std::variant<json::value, Problem> Client::Login(const std::string& email, const std::string& password) {
  auto r = Call("POST", "/api/v1/auth/login", json::serialize(json::object{{"email", email}, {"password", password}}),
                {}, false);
  if (auto* p = std::get_if<Problem>(&r)) return *p;
  const auto& o = std::get<json::value>(r).as_object();
  email_ = email;
  access_token_ = std::string(o.at("access_token").as_string());
  refresh_token_ = std::string(o.at("refresh_token").as_string());
  access_expires_ms_ = NowMs() + o.at("expires_in").to_number<int64_t>() * 1000;
  if (auto saved = SaveSession(); !saved) {
    return Problem{.code = saved.error().code, .title = "Cannot keep the session", .detail = saved.error().message};
  }
  return r;
}

std::optional<Problem> Client::Logout() {
  std::optional<Problem> problem;
  if (!refresh_token_.empty()) {
    auto r = Call("POST", "/api/v1/auth/logout", json::serialize(json::object{{"refresh_token", refresh_token_}}), {},
                  false);
    if (auto* p = std::get_if<Problem>(&r); p && p->exit_code == kExitUnavailable) problem = *p;
  }
  std::error_code ec;
  fs::remove(SessionPath(), ec);
  refresh_token_.clear();
  access_token_.clear();
  return problem;
}

std::optional<Problem> Client::Refresh() {
  auto r =
      Call("POST", "/api/v1/auth/refresh", json::serialize(json::object{{"refresh_token", refresh_token_}}), {}, false);
  if (auto* p = std::get_if<Problem>(&r)) {
    if (p->exit_code == kExitAuth) {
      p->detail = "the session has ended; run `smart login` again";
      std::error_code ec;
      fs::remove(SessionPath(), ec);
    }
    return *p;
  }
  const auto& o = std::get<json::value>(r).as_object();
  access_token_ = std::string(o.at("access_token").as_string());
  refresh_token_ = std::string(o.at("refresh_token").as_string());  // rotated: the old one is spent
  access_expires_ms_ = NowMs() + o.at("expires_in").to_number<int64_t>() * 1000;
  if (auto saved = SaveSession(); !saved) {
    return Problem{.code = saved.error().code, .title = "Cannot keep the session", .detail = saved.error().message};
  }
  return std::nullopt;
}

std::variant<json::value, Problem> Client::Call(const std::string& method, const std::string& path,
                                                const std::string& body,
                                                const std::vector<std::pair<std::string, std::string>>& headers,
                                                bool authenticated, http::ClientResponse* received) {
  http::ClientRequest req{.method = method, .url = server_ + path, .headers = headers, .body = body};
  if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
  if (authenticated) {
    if (!api_key_.empty()) {
      req.headers.emplace_back("X-API-Key", api_key_);
    } else if (!refresh_token_.empty()) {
      if (access_token_.empty() || NowMs() > access_expires_ms_ - 10'000) {
        if (auto p = Refresh()) return *p;
      }
      req.headers.emplace_back("Authorization", "Bearer " + access_token_);
    } else {
      return Problem{
          .code = "not_logged_in",
          .title = "Not logged in",
          .detail = "run `smart login`, or set SMART_API_KEY (profile " + options_.profile + ", " + server_ + ")",
          .exit_code = kExitAuth};
    }
  }
  auto res = http::Send(req);
  if (!res) {
    return Problem{.code = res.error().code,
                   .title = "Cannot reach " + server_,
                   .detail = res.error().message,
                   .exit_code = kExitUnavailable};
  }
  if (received) {
    received->status = res->status;
    received->headers = res->headers;
  }
  if (res->status >= 400) return FromResponse(res->status, res->body);
  if (res->body.empty()) return json::value(nullptr);
  boost::system::error_code ec;
  auto v = json::parse(res->body, ec);
  if (ec) return json::value(res->body);  // plain text (a task's raw output)
  return v;
}

}  // namespace smart::cli
