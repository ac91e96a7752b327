// smartd: wiring only. Reads configuration, opens the database, applies
// migrations, builds the router and the server, and waits for a signal.
//
// Exit codes: 0 success, 1 operation failed, 2 usage or configuration error.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "config_schema.hpp"
#include "dev.hpp"
#include "smart/api/routes.hpp"
#include "smart/auth/service.hpp"
#include "smart/auth/usage.hpp"
#include "smart/core/config.hpp"
#include "smart/core/crypto.hpp"
#include "smart/core/json_text.hpp"
#include "smart/core/log.hpp"
#include "smart/core/thread_name.hpp"
#include "smart/events/bus.hpp"
#include "smart/events/redis_relay.hpp"
#include "smart/http/middleware.hpp"
#include "smart/http/server.hpp"
#include "smart/ledger/ledger.hpp"
#include "smart/metrics/metrics.hpp"
#include "smart/store/migrations.hpp"
#include "smart/store/store.hpp"
#include "smart/tasks/coordinator.hpp"

extern char** environ;

namespace smart::smartd {
extern const char* const kVersion;
extern const char* const kCommit;

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct Flags {
  std::string config_file;
  std::vector<std::string> sets;
  std::optional<int64_t> port;
  std::optional<std::string> host, data_dir, log_level;
  bool print_config = false;
  bool dev = false, with_node = false;
};

int ConfigError(const Error& e) {
  std::cerr << "smartd: " << e.message << "\n";
  return kExitUsage;
}

// Defaults < file < environment < flags.
Result<config::Config> LoadConfig(const Flags& f) {
  config::Config cfg(ConfigSchema());
  if (!f.config_file.empty()) SMART_TRY(cfg.LoadFile(f.config_file));
  SMART_TRY(cfg.LoadEnv(environ));
  for (const auto& kv : f.sets) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) return Error::Invalid("invalid_config", "--set expects KEY=VALUE, got '" + kv + "'");
    SMART_TRY(cfg.Set(kv.substr(0, eq), kv.substr(eq + 1), "--set " + kv.substr(0, eq)));
  }
  if (f.port) SMART_TRY(cfg.Set("http.port", std::to_string(*f.port), "--port"));
  if (f.host) SMART_TRY(cfg.Set("http.host", *f.host, "--host"));
  if (f.data_dir) SMART_TRY(cfg.Set("server.data_dir", *f.data_dir, "--data-dir"));
  if (f.log_level) SMART_TRY(cfg.Set("log.level", *f.log_level, "--log-level"));
  if (f.dev) SMART_TRY(cfg.Set("server.dev", "true", "--dev"));
  if (f.with_node) SMART_TRY(cfg.Set("server.with_node", "true", "--with-node"));
  if (cfg.Bool("server.with_node") && !cfg.Bool("server.dev")) {
    return Error::Invalid("invalid_config", "--with-node (server.with_node) needs --dev (server.dev)");
  }
  if (cfg.Bool("server.dev")) SMART_TRY(cfg.Set("ledger.dev_faucet", "true", "server.dev"));
  if (cfg.String("database.url").empty()) {
    SMART_TRY(cfg.Set("database.url", "sqlite:" + cfg.String("server.data_dir") + "/smart.db",
                      "derived from server.data_dir"));
  }
  return cfg;
}

Result<std::unique_ptr<store::Database>> OpenDatabase(const config::Config& cfg) {
  store::Options opt;
  opt.pool_size = static_cast<int>(cfg.Int("database.pool_size"));
  opt.busy_timeout_ms = static_cast<int>(cfg.Int("database.busy_timeout_ms"));
  opt.sqlite_synchronous_full = cfg.String("database.sqlite_synchronous") == "full";
  return store::Open(cfg.String("database.url"), opt);
}

http::ServerOptions ServerOptionsFrom(const config::Config& cfg) {
  using std::chrono::seconds;
  http::ServerOptions o;
  o.host = cfg.String("http.host");
  o.port = static_cast<uint16_t>(cfg.Int("http.port"));
  o.threads = static_cast<int>(cfg.Int("http.threads"));
  o.worker_threads = static_cast<int>(cfg.Int("http.worker_threads"));
  o.long_poll_threads = static_cast<int>(cfg.Int("http.long_poll_threads"));
  o.max_connections = static_cast<size_t>(cfg.Int("http.max_connections"));
  o.max_header_bytes = static_cast<size_t>(cfg.Int("http.max_header_bytes"));
  o.max_body_bytes = static_cast<size_t>(cfg.Int("http.max_body_bytes"));
  o.header_timeout = seconds(cfg.Int("http.header_timeout_s"));
  o.body_timeout = seconds(cfg.Int("http.body_timeout_s"));
  o.idle_timeout = seconds(cfg.Int("http.idle_timeout_s"));
  o.write_timeout = seconds(cfg.Int("http.write_timeout_s"));
  o.shutdown_grace = seconds(cfg.Int("http.shutdown_grace_s"));
  o.ws_max_message_bytes = static_cast<size_t>(cfg.Int("http.ws_max_message_bytes"));
  o.ws_send_queue_limit = static_cast<size_t>(cfg.Int("http.ws_send_queue_limit"));
  o.ws_idle_timeout = seconds(cfg.Int("http.ws_idle_timeout_s"));
  return o;
}

// The signing secret: configured, or generated once and kept in the data
// directory (mode 0600) so that tokens survive restarts of a single instance.
Result<std::string> JwtSecret(const config::Config& cfg, log::Logger& logger) {
  std::string secret = cfg.String("auth.jwt_secret");
  if (!secret.empty()) {
    if (secret.size() < 32) return Error::Invalid("invalid_config", "config key 'auth.jwt_secret': at least 32 bytes");
    return secret;
  }
  std::filesystem::path path = std::filesystem::path(cfg.String("server.data_dir")) / "jwt_secret";
  if (std::ifstream in(path); in && std::getline(in, secret) && secret.size() >= 32) return secret;
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  secret = crypto::RandomToken(48);
  {
    std::ofstream out(path, std::ios::trunc);
    out << secret << "\n";
    if (!out) return Error::Unavailable("secret_unwritable", "cannot write " + path.string());
  }
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::replace, ec);
  logger.Warn("generated a JWT signing secret; set auth.jwt_secret when running more than one instance",
              {{"path", path.string()}});
  return secret;
}

Result<auth::AuthConfig> AuthConfigFrom(const config::Config& cfg, log::Logger& logger) {
  auth::AuthConfig a;
  auto secret = JwtSecret(cfg, logger);
  if (!secret) return secret.take_error();
  a.active_kid = cfg.String("auth.jwt_kid");
  a.keys.push_back({a.active_kid, *secret});
  for (const auto& entry : cfg.StringList("auth.jwt_previous_keys")) {
    auto colon = entry.find(':');
    if (colon == std::string::npos || colon == 0 || entry.size() - colon - 1 < 32) {
      return Error::Invalid(
          "invalid_config",
          "config key 'auth.jwt_previous_keys': each entry is \"kid:secret\" with a secret of 32+ bytes");
    }
    a.keys.push_back({entry.substr(0, colon), entry.substr(colon + 1)});
  }
  a.issuer = cfg.String("auth.issuer");
  a.audience = cfg.String("auth.audience");
  a.access_ttl_s = cfg.Int("auth.access_ttl_s");
  a.refresh_ttl_s = cfg.Int("auth.refresh_ttl_s");
  a.min_password_length = static_cast<size_t>(cfg.Int("auth.min_password_length"));
  a.password.t_cost = static_cast<uint32_t>(cfg.Int("auth.argon2_t_cost"));
  a.password.m_cost_kib = static_cast<uint32_t>(cfg.Int("auth.argon2_m_cost_kib"));
  a.password.parallelism = static_cast<uint32_t>(cfg.Int("auth.argon2_parallelism"));
  return a;
}

api::RateLimits RateLimitsFrom(const config::Config& cfg) {
  auto limit = [&](const std::string& name) {
    return kv::Limit{cfg.Int("rate_limit." + name + "_per_min"), cfg.Int("rate_limit." + name + "_burst")};
  };
  api::RateLimits r;
  r.enabled = cfg.Bool("rate_limit.enabled");
  r.per_address = limit("address");
  r.auth = limit("auth");
  r.login_failures = limit("login_failures");
  r.free = {limit("free"), cfg.Int("rate_limit.free_per_day")};
  r.standard = {limit("default"), cfg.Int("rate_limit.default_per_day")};
  r.pro = {limit("pro"), cfg.Int("rate_limit.pro_per_day")};
  return r;
}

Result<ledger::LedgerConfig> LedgerConfigFrom(const config::Config& cfg) {
  ledger::LedgerConfig c;
  auto assets = ledger::ParseAssets(cfg.StringList("ledger.assets"));
  if (!assets) return Error::Invalid("invalid_config", "config key 'ledger.assets': " + assets.error().message);
  c.assets = std::move(assets).value();
  c.platform_token = cfg.String("ledger.platform_token");
  bool known = false;
  for (const auto& a : c.assets) known = known || a.code == c.platform_token;
  if (!known) {
    return Error::Invalid("invalid_config",
                          "config key 'ledger.platform_token': '" + c.platform_token + "' is not in ledger.assets");
  }
  return c;
}

Result<tasks::TasksConfig> TasksConfigFrom(const config::Config& cfg, const ledger::LedgerConfig& ledger) {
  tasks::TasksConfig c;
  auto bad = [](const std::string& key, const std::string& why) {
    return Error::Invalid("invalid_config", "config key '" + key + "': " + why);
  };
  c.asset = cfg.String("tasks.asset");
  bool known = false;
  for (const auto& a : ledger.assets) known = known || a.code == c.asset;
  if (!known) return bad("tasks.asset", "'" + c.asset + "' is not in ledger.assets");
  c.types = cfg.StringList("tasks.types");
  if (c.types.empty()) return bad("tasks.types", "at least one type");
  c.prices.clear();
  for (const auto& entry : cfg.StringList("tasks.prices")) {
    auto colon = entry.find(':');
    auto price = colon == std::string::npos ? std::nullopt : ledger::ParseAmount(entry.substr(colon + 1));
    if (!price) return bad("tasks.prices", "'" + entry + "' is not TYPE:PRICE");
    c.prices[entry.substr(0, colon)] = *price;
  }
  if (!c.prices.count("other")) return bad("tasks.prices", "needs a price for 'other'");
  c.fee_pct = static_cast<int>(cfg.Int("tasks.fee_pct"));
  c.slash_pct = static_cast<int>(cfg.Int("tasks.slash_pct"));
  auto stake = ledger::ParseAmount(cfg.String("tasks.min_stake"));
  if (!stake) return bad("tasks.min_stake", "a string of integer base units");
  c.min_stake = *stake;
  c.max_tasks_per_node = static_cast<int>(cfg.Int("tasks.max_tasks_per_node"));
  c.min_timeout_s = cfg.Int("tasks.min_timeout_s");
  c.max_timeout_s = cfg.Int("tasks.max_timeout_s");
  if (c.min_timeout_s > c.max_timeout_s) return bad("tasks.min_timeout_s", "larger than tasks.max_timeout_s");
  c.default_timeout_s = cfg.Int("tasks.default_timeout_s");
  c.heartbeat_s = cfg.Int("tasks.heartbeat_s");
  c.offline_after_s = cfg.Int("tasks.offline_after_s");
  c.max_per_requester = static_cast<int>(cfg.Int("tasks.max_per_requester"));
  return c;
}

// `smartd ledger verify`: recomputes the hash chain and every balance.
int LedgerVerify(const config::Config& cfg) {
  auto db = OpenDatabase(cfg);
  if (!db) {
    std::cerr << "smartd: " << db.error().message << "\n";
    return kExitFailure;
  }
  auto st = store::GetMigrationStatus(**db, api::AllMigrations());
  if (!st || st->current < 200) {
    std::cerr << "smartd: the database has no ledger yet (run smartd migrate)\n";
    return kExitFailure;
  }
  auto report = ledger::Verify(**db);
  if (!report) {
    std::cerr << "smartd: ledger verify failed to run: " << report.error().message << "\n";
    return kExitFailure;
  }
  std::cout << "transfers: " << report->transfers << "\naccounts: " << report->accounts << "\n";
  for (const auto& t : report->totals) {
    std::cout << t.asset << ": debits " << ledger::FormatAmount(t.debits_posted) << " = credits "
              << ledger::FormatAmount(t.credits_posted) << ", pending " << ledger::FormatAmount(t.debits_pending)
              << ", supply " << ledger::FormatAmount(t.supply) << "\n";
  }
  if (!report->ok) {
    std::cout << "DIVERGENCE: " << report->divergence << "\n";
    return kExitFailure;
  }
  std::cout << "ok: the hash chain and every balance match the history\n";
  return 0;
}

int Migrate(const config::Config& cfg, log::Logger& logger) {
  auto db = OpenDatabase(cfg);
  if (!db) {
    logger.Error("cannot open database", {{"error", db.error().message}});
    return kExitFailure;
  }
  auto n = store::Migrate(**db, api::AllMigrations());
  if (!n) {
    logger.Error("migration failed", {{"error", n.error().message}});
    return kExitFailure;
  }
  auto st = store::GetMigrationStatus(**db, api::AllMigrations());
  logger.Info("migrations applied", {{"applied", *n}, {"version", st ? st->current : -1}});
  return 0;
}

// `smartd admin create`: the first admin. The password comes from stdin
// (--password-stdin) or is generated and printed once.
int AdminCreate(const config::Config& cfg, log::Logger& logger, const std::string& email, const std::string& name,
                bool password_stdin) {
  auto db = OpenDatabase(cfg);
  if (!db) {
    std::cerr << "smartd: " << db.error().message << "\n";
    return kExitFailure;
  }
  if (auto n = store::Migrate(**db, api::AllMigrations()); !n) {
    std::cerr << "smartd: " << n.error().message << "\n";
    return kExitFailure;
  }
  auto auth_config = AuthConfigFrom(cfg, logger);
  if (!auth_config) return ConfigError(auth_config.error());
  std::string password;
  bool generated = false;
  if (password_stdin) {
    std::getline(std::cin, password);
    if (!password.empty() && password.back() == '\r') password.pop_back();
  } else {
    password = crypto::RandomToken(18);
    generated = true;
  }
  SystemClock clock;
  auth::AuthService auth(**db, std::move(auth_config).value(), clock);
  auto user = auth.Register(email, password, name, "admin");
  if (!user) {
    std::cerr << "smartd: cannot create the admin: " << user.error().message << "\n";
    return kExitFailure;
  }
  (void)auth.Audit("cli", "admin_created", user->id, "local");
  std::cout << "created admin " << user->email << " (" << user->id << ")\n";
  if (generated) std::cout << "password: " << password << "\n(shown once; store it now)\n";
  return 0;
}

int Serve(const config::Config& cfg, log::Logger& logger) {
  // Block the stop signals in every thread; this thread alone waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto db = OpenDatabase(cfg);
  if (!db) {
    logger.Error("cannot open database", {{"error", db.error().message}});
    return kExitFailure;
  }
  if (cfg.Bool("database.migrate_on_start")) {
    auto n = store::Migrate(**db, api::AllMigrations());
    if (!n) {
      logger.Error("migration failed", {{"error", n.error().message}});
      return kExitFailure;
    }
    if (*n > 0) logger.Info("migrations applied", {{"applied", *n}});
  }

  auto auth_config = AuthConfigFrom(cfg, logger);
  if (!auth_config) {
    logger.Error("invalid auth configuration", {{"error", auth_config.error().message}});
    return kExitUsage;
  }
  SystemClock clock;
  auth::AuthService auth(**db, std::move(auth_config).value(), clock);

  metrics::Registry registry;
  metrics::AddProcessCollector(registry, kVersion, kCommit);
  // With Redis, request rates and daily quotas count across instances: decided
  // here at once, what each instance counted exchanged every 100 ms.
  const auto max_keys = static_cast<size_t>(cfg.Int("rate_limit.max_keys"));
  auto limiter = cfg.String("redis.url").empty()
                     ? kv::NewMemoryRateLimiter(max_keys)
                     : kv::NewSharedRateLimiter(cfg.String("redis.url"), cfg.String("redis.prefix"), max_keys);
  auth::UsageRecorder usage(**db, clock);
  auto ledger_config = LedgerConfigFrom(cfg);
  if (!ledger_config) {
    logger.Error("invalid ledger configuration", {{"error", ledger_config.error().message}});
    return kExitUsage;
  }
  auto tasks_config = TasksConfigFrom(cfg, *ledger_config);
  if (!tasks_config) {
    logger.Error("invalid tasks configuration", {{"error", tasks_config.error().message}});
    return kExitUsage;
  }
  ledger_config->on_sweep_error = [&logger](const Error& e) {
    logger.Warn("expiring pending transfers failed", {{"error", e.message}});
  };
  auto ledger = std::make_unique<ledger::Ledger>(**db, std::move(ledger_config).value(), clock);
  auto coordinator = std::make_unique<tasks::Coordinator>(**db, *ledger, std::move(tasks_config).value(), clock);
  // Ids from the clock in microseconds: they keep growing across restarts.
  events::Bus bus(static_cast<size_t>(cfg.Int("events.window")), static_cast<uint64_t>(clock.NowMs()) * 1000);
  coordinator->OnUpdate([&bus, &clock](const tasks::Task& t) {
    std::string data = "{\"task_id\":";
    AppendJsonString(data, t.id);
    data += ",\"status\":";
    AppendJsonString(data, t.status);
    data += ",\"progress\":" + std::to_string(t.progress) + ",\"node_id\":";
    if (t.node_id.empty()) {
      data += "null";
    } else {
      AppendJsonString(data, t.node_id);
    }
    // A rough estimate from the progress rate so far.
    int64_t now = clock.NowMs();
    data += ",\"estimated_completion\":";
    if (t.status == "in_progress" && t.progress > 0 && t.progress < 100) {
      AppendJsonString(data, FormatTimestampMs(now + (now - t.created_ms) * (100 - t.progress) / t.progress));
    } else {
      data += "null";
    }
    data += "}";
    bus.Publish("task_update", t.requester, t.id, std::move(data), now);
  });
  coordinator->OnNodeUpdate([&bus, &clock](const tasks::Node& n) {
    std::string data = "{\"node_id\":";
    AppendJsonString(data, n.id);
    data += ",\"status\":";
    AppendJsonString(data, n.status);
    data += ",\"metrics\":{\"load\":" + std::to_string(n.load) + ",\"running\":" + std::to_string(n.running) +
            ",\"reputation\":" + std::to_string(n.reputation) + "}}";
    bus.Publish("node_status", "", n.id, std::move(data), clock.NowMs());
  });
  std::unique_ptr<events::RedisRelay> relay;
  if (const std::string& url = cfg.String("redis.url"); !url.empty()) {
    auto started = events::RedisRelay::Start(
        bus, {.url = url,
              .prefix = cfg.String("redis.prefix"),
              .window = static_cast<size_t>(cfg.Int("events.window")),
              .on_error =
                  [&logger](const Error& e) {
                    logger.Warn("sharing events through Redis failed; retrying", {{"error", e.message}});
                  },
              .on_recovered = [&logger] { logger.Info("sharing events through Redis again"); }});
    if (!started) {
      logger.Error("cannot share events through Redis", {{"error", started.error().message}});
      return started.error().kind == ErrorKind::kInvalid ? kExitUsage : kExitFailure;  // a bad redis.url: 2
    }
    relay = std::move(*started);
    registry.AddCollector([&relay](std::string& out) {
      out +=
          "# HELP smart_events_relayed_total Events through Redis: sent, read back (every instance's), dropped "
          "(Redis away and the queue full, or refused).\n# TYPE smart_events_relayed_total counter\n";
      out += "smart_events_relayed_total{way=\"sent\"} " + std::to_string(relay->sent()) +
             "\nsmart_events_relayed_total{way=\"received\"} " + std::to_string(relay->received()) +
             "\nsmart_events_relayed_total{way=\"dropped\"} " + std::to_string(relay->dropped()) + "\n";
      out +=
          "# HELP smart_events_relay_up 1 while events reach Redis and come back; 0 from a failure until the next "
          "success.\n# TYPE smart_events_relay_up gauge\nsmart_events_relay_up ";
      out += relay->failing() ? "0\n" : "1\n";
    });
  }
  // Failed logins count across instances exactly (a password guesser
  // spreading over them gets one budget; a login waits for Argon2 anyway, so
  // a round trip to Redis each costs nothing that matters).
  std::unique_ptr<kv::RateLimiter> login_limiter;
  if (relay) login_limiter = kv::NewRedisRateLimiter(cfg.String("redis.url"), cfg.String("redis.prefix"), *limiter);
  // Every instance forgets its cached credentials when one changes them
  // (through Redis when set; else this instance's own bus, which already did).
  auth.OnCredentialsChanged([&bus, &clock] { bus.Publish("credentials_changed", "", "", "{}", clock.NowMs()); });
  bus.Subscribe([&auth](const events::Event& e) {
    if (e.type == "credentials_changed") auth.ForgetCachedCredentials();
  });
  // The task network's state, as the event-stats thread last read it (every
  // events.stats_interval_s, for network_stats): no scrape adds a query.
  struct NetworkGauges {
    std::atomic<bool> known{false};
    std::atomic<int64_t> pending{0}, running{0}, failed{0}, completed{0}, online{0}, nodes{0};
  } network;
  registry.AddCollector([&network](std::string& out) {
    if (!network.known.load()) return;
    auto line = [&out](const char* name, const char* label, int64_t v) {
      out += std::string(name) + label + " " + std::to_string(v) + "\n";
    };
    out +=
        "# HELP smart_tasks Tasks now, in the whole database: pending (waiting for a node), running (assigned or in "
        "progress), failed (failed or timed out for good: the dead letters), as of the last network_stats.\n"
        "# TYPE smart_tasks gauge\n";
    line("smart_tasks", "{status=\"pending\"}", network.pending.load());
    line("smart_tasks", "{status=\"running\"}", network.running.load());
    line("smart_tasks", "{status=\"failed\"}", network.failed.load());
    out +=
        "# HELP smart_tasks_completed_total Tasks completed by nodes, all instances (the nodes' counters).\n"
        "# TYPE smart_tasks_completed_total counter\n";
    line("smart_tasks_completed_total", "", network.completed.load());
    out +=
        "# HELP smart_nodes Nodes now: online (active, heartbeating within tasks.offline_after_s) and registered "
        "(not deactivated), as of the last network_stats.\n# TYPE smart_nodes gauge\n";
    line("smart_nodes", "{status=\"online\"}", network.online.load());
    line("smart_nodes", "{status=\"registered\"}", network.nodes.load());
  });
  registry.AddCollector([&coordinator](std::string& out) {
    out +=
        "# HELP smart_tasks_results_total Node results: completed together with others (one statement and one "
        "ledger call for many), or sent on their own (a replica's, a refusal, one behind another operation on its "
        "task, a failed run).\n# TYPE smart_tasks_results_total counter\n";
    out += "smart_tasks_results_total{way=\"together\"} " + std::to_string(coordinator->ResultsCompletedTogether()) +
           "\nsmart_tasks_results_total{way=\"alone\"} " + std::to_string(coordinator->ResultsAlone()) + "\n";
    out +=
        "# HELP smart_tasks_submits_together_total Single task submissions written together with others of their "
        "requester (one fair-queue update and one ledger call for many).\n"
        "# TYPE smart_tasks_submits_together_total counter\nsmart_tasks_submits_together_total " +
        std::to_string(coordinator->SubmittedTogether()) + "\n";
    out +=
        "# HELP smart_tasks_claims_waiting Node claims over HTTP waiting for work now (wait_s), each without a "
        "thread.\n# TYPE smart_tasks_claims_waiting gauge\nsmart_tasks_claims_waiting " +
        std::to_string(coordinator->WaitingClaims()) + "\n";
  });
  api::Deps deps{.db = **db,
                 .registry = registry,
                 .auth = auth,
                 .usage = usage,
                 .ledger = *ledger,
                 .tasks = *coordinator,
                 .bus = bus,
                 .limiter = *limiter,
                 .login_limiter = login_limiter ? *login_limiter : *limiter,
                 .clock = clock,
                 .limits = RateLimitsFrom(cfg),
                 .migrations = api::AllMigrations(),
                 .build = {kVersion, kCommit},
                 .dev_faucet = cfg.Bool("ledger.dev_faucet"),
                 .event_connections_per_user = static_cast<size_t>(cfg.Int("events.max_connections_per_user")),
                 .redis_url = cfg.String("redis.url"),
                 .redis_prefix = cfg.String("redis.prefix"),
                 .node_max_unanswered = static_cast<int>(cfg.Int("tasks.node_max_unanswered"))};
  http::Router router;
  api::RegisterRoutes(router, deps);

  const auto trusted_proxies = cfg.StringList("http.trusted_proxies");
  auto client_address = http::ClientAddress(trusted_proxies);
  if (!client_address) {
    logger.Error("invalid http configuration", {{"error", client_address.error().message}});
    return kExitUsage;
  }
  std::vector<http::Middleware> middlewares;
  if (!trusted_proxies.empty()) {
    middlewares.push_back(std::move(*client_address));  // first: every later one sees the client
  }
  middlewares.push_back(http::RequestId());
  if (cfg.Bool("log.access")) middlewares.push_back(http::AccessLog(logger));
  middlewares.push_back(http::Metrics(registry));
  middlewares.push_back(http::SecurityHeaders());
  middlewares.push_back(http::Cors(cfg.StringList("http.cors_origins")));
  middlewares.push_back(api::Limits(deps));

  http::Server server(ServerOptionsFrom(cfg), std::move(router), std::move(middlewares), logger, registry);
  if (auto started = server.Start(); !started) {
    logger.Error("cannot start HTTP server", {{"error", started.error().message}});
    return kExitFailure;
  }
  std::string host = cfg.String("http.host");
  std::string url =
      "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(server.port());
  logger.Info("listening", {{"url", url},
                            {"port", server.port()},
                            {"database", (*db)->backend()},
                            {"events", relay ? "redis" : "local"},
                            {"version", kVersion},
                            {"commit", kCommit}});
  std::fprintf(stderr, "smartd listening on %s\n", url.c_str());
  pid_t dev_node = 0;
  if (cfg.Bool("server.dev") && host != "127.0.0.1" && host != "::1" && host != "localhost") {
    logger.Warn("development mode on a non-loopback address: the dev faucet and the demo accounts are reachable",
                {{"host", host}});
  }
  if (cfg.Bool("server.dev")) {
    const std::string data_dir = cfg.String("server.data_dir");
    if (auto first = FirstRun(auth, *ledger, data_dir, url); !first) {
      logger.Error("cannot create the development accounts", {{"error", first.error().message}});
    }
    if (cfg.Bool("server.with_node")) {
      auto pid = StartDevNode(data_dir, url, logger);
      if (!pid) {
        logger.Error("cannot start the dev node", {{"error", pid.error().message}});
      } else {
        dev_node = *pid;
      }
    }
  }

  // network_stats events every few seconds, for WebSocket subscribers.
  std::atomic<bool> stats_stop{false};
  std::thread stats([&] {
    NameThread("event-stats");
    int64_t interval_ms = cfg.Int("events.stats_interval_s") * 1000, last_completed = -1;
    for (bool first = true; !stats_stop.load(); first = false) {
      for (int64_t slept = 0; !first && slept < interval_ms && !stats_stop.load(); slept += 100) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      auto st = coordinator->GetStats();
      if (!st || stats_stop.load()) continue;
      network.pending = st->pending, network.running = st->running, network.failed = st->failed;
      network.completed = st->completed, network.online = st->nodes_online, network.nodes = st->nodes_total;
      network.known = true;
      if (last_completed < 0) {  // the gauges at once; network_stats from the next reading, with a throughput
        last_completed = st->completed;
        continue;
      }
      double throughput = double(st->completed - last_completed) * 1000.0 / double(interval_ms);
      last_completed = st->completed;
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "{\"active_nodes\":%lld,\"pending_tasks\":%lld,\"running_tasks\":%lld,\"throughput\":%.2f}",
                    static_cast<long long>(st->nodes_online), static_cast<long long>(st->pending),
                    static_cast<long long>(st->running), throughput);
      // Every instance computes the same figures: with Redis, one publishes them.
      if (!relay || relay->Elect("network_stats", std::chrono::milliseconds(interval_ms))) {
        bus.Publish("network_stats", "", "", buf, clock.NowMs());
      }
    }
  });

  // Usage counts reach the database every few seconds (and at shutdown).
  std::atomic<bool> stopping{false};
  std::thread flusher([&] {
    NameThread("usage-flush");
    while (!stopping.load()) {
      for (int i = 0; i < 50 && !stopping.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (auto r = usage.Flush(); !r) logger.Warn("usage flush failed", {{"error", r.error().message}});
    }
  });

  int sig = 0;
  sigwait(&stop_signals, &sig);
  logger.Info("shutting down",
              {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}, {"grace_s", cfg.Int("http.shutdown_grace_s")}});
  if (dev_node > 0) {  // the dev node first: it gives back what it holds while the API still answers
    ::kill(dev_node, SIGTERM);
    for (int i = 0; i < 100 && ::waitpid(dev_node, nullptr, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (::waitpid(dev_node, nullptr, WNOHANG) == 0) {
      ::kill(dev_node, SIGKILL);
      ::waitpid(dev_node, nullptr, 0);
    }
  }
  coordinator->StopWaiting();  // waiting claims answer now, so the drain is quick
  stats_stop = true;
  stats.join();
  server.Shutdown();
  stopping = true;
  flusher.join();  // its last pass flushes what the final requests counted
  coordinator.reset();
  relay.reset();   // after the coordinator: its last events go to Redis first (up to 2 s)
  ledger.reset();  // finishes queued batches
  db->reset();     // closes every database connection
  logger.Info("stopped");
  return 0;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"smartd: the Smart server. Without a subcommand it serves."};
  app.set_version_flag("--version", std::string(kVersion) + " (" + kCommit + ")");
  Flags f;
  app.add_option("-c,--config", f.config_file, "TOML configuration file")->check(CLI::ExistingFile);
  app.add_option("--set", f.sets, "Override a key: --set http.port=9000 (repeatable)");
  app.add_option("-p,--port", f.port, "Port to listen on (http.port)");
  app.add_option("--host", f.host, "Address to listen on (http.host)");
  app.add_option("--data-dir", f.data_dir, "State directory (server.data_dir)");
  app.add_option("--log-level", f.log_level, "debug, info, warn or error (log.level)");
  app.add_flag("--print-config", f.print_config, "Print the effective configuration (secrets redacted) and exit");
  app.add_flag("--dev", f.dev, "Development mode (server.dev): dev faucet, demo accounts on first run");
  app.add_flag("--with-node", f.with_node, "With --dev: also run a local smart-node (server.with_node)");
  auto* serve = app.add_subcommand("serve", "Serve the API (the default)");
  auto* migrate = app.add_subcommand("migrate", "Apply pending database migrations and exit");
  auto* admin = app.add_subcommand("admin", "Administration");
  admin->require_subcommand(1);
  auto* admin_create = admin->add_subcommand("create", "Create an admin account");
  std::string admin_email, admin_name = "Administrator";
  bool password_stdin = false;
  admin_create->add_option("--email", admin_email, "Email of the new admin")->required();
  admin_create->add_option("--name", admin_name, "Display name");
  admin_create->add_flag("--password-stdin", password_stdin, "Read the password from the first line of stdin");
  admin->fallthrough();
  admin_create->fallthrough();
  auto* ledger_cmd = app.add_subcommand("ledger", "Ledger maintenance");
  ledger_cmd->require_subcommand(1);
  auto* ledger_verify =
      ledger_cmd->add_subcommand("verify", "Recompute the hash chain and balances; exit 1 naming the first divergence");
  ledger_cmd->fallthrough();
  ledger_verify->fallthrough();
  app.require_subcommand(0, 1);
  // Global flags may follow the subcommand: `smartd migrate --data-dir x`.
  serve->fallthrough();
  migrate->fallthrough();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }
  (void)serve;

  auto cfg = LoadConfig(f);
  if (!cfg) return ConfigError(cfg.error());
  if (f.print_config) {
    std::cout << cfg->Print();
    return 0;
  }
  log::Logger logger(*log::ParseLevel(cfg->String("log.level")));
  if (migrate->parsed()) return Migrate(*cfg, logger);
  if (admin_create->parsed()) return AdminCreate(*cfg, logger, admin_email, admin_name, password_stdin);
  if (ledger_verify->parsed()) return LedgerVerify(*cfg);
  return Serve(*cfg, logger);
}

}  // namespace smart::smartd

int main(int argc, char** argv) { return smart::smartd::Main(argc, argv); }
