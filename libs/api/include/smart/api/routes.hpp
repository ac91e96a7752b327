// The HTTP surface of smartd: handlers that see both http and the domain.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "smart/http/router.hpp"
#include "smart/store/migrations.hpp"

namespace smart::metrics {
class Registry;
}
namespace smart::auth {
class AuthService;
}

namespace smart::api {

struct BuildInfo {
  std::string version;
  std::string commit;
};

// What the handlers need; everything is owned by main and outlives the server.
struct Deps {
  store::Database& db;
  metrics::Registry& registry;
  auth::AuthService& auth;
  std::span<const store::Migration> migrations;
  BuildInfo build;
};

// Registers every public route of smartd.
void RegisterRoutes(http::Router& router, const Deps& deps);

// The OpenAPI 3.1 document (docs/openapi.json, embedded at build time).
std::string_view OpenApiDocument();

// The platform's schema migrations, in version order. Each library owns a
// range of versions (api 1-99, auth 100-199, ledger 200-299, tasks 300-399).
std::span<const store::Migration> AllMigrations();

}  // namespace smart::api
