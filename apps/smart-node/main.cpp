// smart-node: a worker that stakes, heartbeats, claims tasks from smartd and
// runs them (apps/smart-node/executors.hpp). It reaches smartd only through
// the public API, as a third-party operator's node would.
//
//   smart-node --server URL [--config FILE] [--set section.key=value ...]
//
// Identity: node.credential + node.id (a node's API key and id), or
// node.user_key, with which it registers itself once (name, capabilities,
// capacity) and keeps the node's id and credential in node.state_file.
// Exit codes: 0 stopped cleanly, 1 operation failed, 2 usage or configuration error.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <fstream>
#include <iostream>
#include <thread>

#include "executors.hpp"
#include "runner.hpp"
#include "smart/core/config.hpp"
#include "smart/core/json_text.hpp"
#include "smart/core/log.hpp"

extern char** environ;

namespace smart::node {
namespace {

namespace json = boost::json;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

std::vector<config::Key> Schema() {
  using config::Key;
  using config::Redact;
  using config::Type;
  return {
      {.name = "node.server", .type = Type::kString, .default_value = "http://127.0.0.1:8080", .help = "smartd's URL."},
      {.name = "node.credential",
       .type = Type::kString,
       .default_value = "",
       .help = "The node's API key.",
       .redact = Redact::kAll},
      {.name = "node.id", .type = Type::kString, .default_value = "", .help = "The node's id (with node.credential)."},
      {.name = "node.user_key",
       .type = Type::kString,
       .default_value = "",
       .help = "A user's API key (scope nodes) to register this node with, once.",
       .redact = Redact::kAll},
      {.name = "node.name",
       .type = Type::kString,
       .default_value = "",
       .help = "Name to register (default: host name)."},
      {.name = "node.capabilities",
       .type = Type::kStringList,
       .default_value = "echo,sha256",
       .help = "Task types to register for."},
      {.name = "node.capacity",
       .type = Type::kInt,
       .default_value = "2",
       .help = "Tasks run at once (workers).",
       .min = 1,
       .max = 100},
      {.name = "node.hardware", .type = Type::kString, .default_value = "{}", .help = "A JSON object describing it."},
      {.name = "node.state_file",
       .type = Type::kString,
       .default_value = "./smart-node.state",
       .help = "Where a self-registered node keeps its id and credential (mode 0600)."},
      {.name = "node.claim_wait_s",
       .type = Type::kInt,
       .default_value = "20",
       .help = "Long-poll wait per claim.",
       .min = 0,
       .max = 30},
      {.name = "node.heartbeat_s",
       .type = Type::kInt,
       .default_value = "5",
       .help = "Heartbeat interval.",
       .min = 1,
       .max = 60},
      {.name = "node.drain_s",
       .type = Type::kInt,
       .default_value = "30",
       .help = "On SIGTERM, how long running tasks may finish before they are given back.",
       .min = 0,
       .max = 3600},
      {.name = "node.transport",
       .type = Type::kString,
       .default_value = "auto",
       .help = "auto: work pushed over the node WebSocket (http:// servers), HTTP long-poll claims while it is "
               "unavailable; http: HTTP claims only.",
       .choices = {"auto", "http"}},
      {.name = "openai.base_url",
       .type = Type::kString,
       .default_value = "",
       .help = "OpenAI-compatible endpoint for model tasks, e.g. http://127.0.0.1:8081/v1."},
      {.name = "openai.model", .type = Type::kString, .default_value = "", .help = "Model name sent to it."},
      {.name = "openai.api_key",
       .type = Type::kString,
       .default_value = "",
       .help = "Its API key, if any.",
       .redact = Redact::kAll},
      {.name = "openai.timeout_s",
       .type = Type::kInt,
       .default_value = "120",
       .help = "Per model request.",
       .min = 1,
       .max = 3600},
      {.name = "log.level",
       .type = Type::kString,
       .default_value = "info",
       .help = "debug, info, warn, error",
       .choices = {"debug", "info", "warn", "error"}},
  };
}

struct Identity {
  std::string id, credential;
};

// {"id", "credential"}: the state file, and the answer of a registration.
std::optional<Identity> IdentityFromJson(std::string_view text) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto* id = v.as_object().if_contains("id");
  const auto* credential = v.as_object().if_contains("credential");
  if (!id || !id->is_string() || !credential || !credential->is_string()) return std::nullopt;
  return Identity{std::string(id->as_string()), std::string(credential->as_string())};
}

std::optional<Identity> ReadState(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return IdentityFromJson(ss.str());
}

Result<void> WriteState(const std::string& path, const Identity& id) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return Error::Unavailable("state_file", "cannot write " + tmp);
    out << json::serialize(json::object{{"id", id.id}, {"credential", id.credential}}) << "\n";
  }
  if (chmod(tmp.c_str(), 0600) != 0 || rename(tmp.c_str(), path.c_str()) != 0) {
    return Error::Unavailable("state_file", "cannot store " + path);
  }
  return Ok();
}

// The node's id and credential: configured, remembered, or registered now.
Result<Identity> Resolve(const config::Config& cfg, log::Logger& logger) {
  if (!cfg.String("node.credential").empty()) {
    if (cfg.String("node.id").empty()) return Error::Invalid("invalid_config", "node.credential needs node.id");
    return Identity{cfg.String("node.id"), cfg.String("node.credential")};
  }
  const std::string state = cfg.String("node.state_file");
  if (auto known = ReadState(state)) return *known;
  if (cfg.String("node.user_key").empty()) {
    return Error::Invalid("invalid_config", "set node.credential and node.id, or node.user_key to register");
  }
  std::string name = cfg.String("node.name");
  if (name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    name = host;
  }
  boost::system::error_code ec;
  auto hardware = json::parse(cfg.String("node.hardware"), ec);
  if (ec || !hardware.is_object()) return Error::Invalid("invalid_config", "node.hardware must be a JSON object");
  json::array caps;
  for (const auto& c : cfg.StringList("node.capabilities")) caps.emplace_back(c);
  json::object body{
      {"name", name}, {"capabilities", caps}, {"capacity", cfg.Int("node.capacity")}, {"hardware", hardware}};
  auto r = CallApi(cfg.String("node.server"), cfg.String("node.user_key"), "POST", "/api/v1/nodes/register",
                   json::serialize(body));
  if (!r) return Error{r.error().kind, r.error().code, "registering: " + r.error().code + ": " + r.error().message};
  auto registered = IdentityFromJson(*r);
  if (!registered) return Error::Unavailable("bad_answer", "registering: the server's answer has no id and credential");
  const Identity& id = *registered;
  SMART_TRY(WriteState(state, id));
  logger.Info("registered", {{"node_id", id.id}, {"name", name}, {"state_file", state}});
  return id;
}

int Main(int argc, char** argv) {
  CLI::App app{"smart-node: a Smart worker node"};
  std::string config_file, server;
  std::vector<std::string> sets;
  bool print_config = false;
  app.add_option("--config", config_file, "TOML configuration file");
  app.add_option("--server", server, "smartd's URL (node.server)");
  app.add_option("--set", sets, "Override a key: section.key=value");
  app.add_flag("--print-config", print_config, "Print the effective configuration (secrets redacted) and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  config::Config cfg(Schema());
  auto load = [&]() -> Result<void> {
    if (!config_file.empty()) SMART_TRY(cfg.LoadFile(config_file));
    SMART_TRY(cfg.LoadEnv(environ));
    for (const auto& kv : sets) {
      auto eq = kv.find('=');
      if (eq == std::string::npos) return Error::Invalid("invalid_config", "--set expects KEY=VALUE, got '" + kv + "'");
      SMART_TRY(cfg.Set(kv.substr(0, eq), kv.substr(eq + 1), "--set " + kv.substr(0, eq)));
    }
    if (!server.empty()) SMART_TRY(cfg.Set("node.server", server, "--server"));
    return Ok();
  };
  if (auto r = load(); !r) {
    std::cerr << "smart-node: " << r.error().message << "\n";
    return kExitUsage;
  }
  if (print_config) {
    std::cout << cfg.Print();
    return 0;
  }
  auto level = log::ParseLevel(cfg.String("log.level"));
  log::Logger logger(level.value_or(log::Level::kInfo));

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto identity = Resolve(cfg, logger);
  if (!identity) {
    logger.Error("cannot start", {{"error", identity.error().message}});
    return identity.error().kind == ErrorKind::kInvalid ? kExitUsage : kExitFailure;
  }
  Executors executors({.base_url = cfg.String("openai.base_url"),
                       .model = cfg.String("openai.model"),
                       .api_key = cfg.String("openai.api_key"),
                       .timeout = std::chrono::seconds(cfg.Int("openai.timeout_s"))});
  Runner runner({.server = cfg.String("node.server"),
                 .credential = identity->credential,
                 .node_id = identity->id,
                 .workers = static_cast<int>(cfg.Int("node.capacity")),
                 .claim_wait_s = static_cast<int>(cfg.Int("node.claim_wait_s")),
                 .heartbeat = std::chrono::seconds(cfg.Int("node.heartbeat_s")),
                 .drain = std::chrono::seconds(cfg.Int("node.drain_s")),
                 .transport = cfg.String("node.transport")},
                executors, logger);
  std::atomic<bool> stop{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    logger.Info("signal", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
    stop = true;
  });
  logger.Info(
      "running",
      {{"node_id", identity->id}, {"server", cfg.String("node.server")}, {"workers", cfg.Int("node.capacity")}});
  runner.Run(stop);
  waiter.join();
  return 0;
}

}  // namespace
}  // namespace smart::node

int main(int argc, char** argv) { return smart::node::Main(argc, argv); }
