// The HTTP surface of smartd: handlers that see both http and the domain.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "smart/core/clock.hpp"
#include "smart/http/server.hpp"
#include "smart/kv/rate_limiter.hpp"
#include "smart/store/migrations.hpp"

namespace smart::metrics {
class Registry;
}
namespace smart::auth {
class AuthService;
class UsageRecorder;
}  // namespace smart::auth
namespace smart::ledger {
class Ledger;
}
namespace smart::tasks {
class Coordinator;
}
namespace smart::events {
class Bus;
}

namespace smart::api {

struct TierLimits {
  kv::Limit rate;
  int64_t per_day = 0;
};

struct RateLimits {
  bool enabled = true;
  kv::Limit per_address{600, 100};  // every /api/v1 request, per client address
  kv::Limit auth{20, 10};           // /api/v1/auth/*, per client address
  kv::Limit login_failures{1, 5};   // failed logins, per account and per address
  TierLimits free{{30, 5}, 5000};
  TierLimits standard{{60, 10}, 20000};
  TierLimits pro{{120, 20}, 100000};
  const TierLimits& ForTier(std::string_view tier) const {
    return tier == "free" ? free : tier == "pro" ? pro : standard;
  }
};

struct BuildInfo {
  std::string version;
  std::string commit;
};

// What the handlers need; everything is owned by main and outlives the server.
struct Deps {
  store::Database& db;
  metrics::Registry& registry;
  auth::AuthService& auth;
  auth::UsageRecorder& usage;
  ledger::Ledger& ledger;
  tasks::Coordinator& tasks;
  events::Bus& bus;
  kv::RateLimiter& limiter;
  // Failed logins: shared by every instance when Redis is configured, else `limiter`.
  kv::RateLimiter& login_limiter;
  const Clock& clock;
  RateLimits limits;
  std::span<const store::Migration> migrations;
  BuildInfo build;
  bool dev_faucet = false;                  // admin mint and burn (ledger.dev_faucet)
  size_t event_connections_per_user = 100;  // events.max_connections_per_user
  // The Redis the instances share (redis.url and redis.prefix; empty: none):
  // an account's event connections are then counted over every instance.
  std::string redis_url;
  std::string redis_prefix;
  int node_max_unanswered = 1000;  // tasks.node_max_unanswered
};

// Registers every public route of smartd.
void RegisterRoutes(http::Router& router, const Deps& deps);

// Rate limits for /api/v1: per client address, then per user and per API key
// by tier, plus a daily quota; RateLimit-* headers on every answer, 429 with
// Retry-After when refused. Authenticates the caller once and leaves the result
// in Request::context for the handlers. Place it after the standard middlewares.
http::Middleware Limits(const Deps& deps);

// The OpenAPI 3.1 document (docs/openapi.json, embedded at build time).
std::string_view OpenApiDocument();

// The platform's schema migrations, in version order. Each library owns a
// range of versions (api 1-99, auth 100-199, ledger 200-299, tasks 300-399).
std::span<const store::Migration> AllMigrations();

}  // namespace smart::api
