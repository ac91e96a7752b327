#include <string>

#include "routes_internal.hpp"
#include "smart/auth/usage.hpp"
#include "smart/core/json_text.hpp"
#include "smart/ledger/ledger.hpp"
#include "smart/metrics/metrics.hpp"
#include "smart/tasks/coordinator.hpp"

namespace smart::embedded {
extern const std::string_view kOpenApi;
}

namespace smart::api {
namespace {

std::vector<store::Migration> Collect() {
  std::vector<store::Migration> all = {
      {1, "create_instance",
       "CREATE TABLE instance (id TEXT PRIMARY KEY, created_at TEXT NOT NULL);"
       "INSERT INTO instance (id, created_at) VALUES ('default', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));",
       "CREATE TABLE instance (id TEXT PRIMARY KEY, created_at TEXT NOT NULL);"
       "INSERT INTO instance (id, created_at) VALUES ('default', to_char(now() AT TIME ZONE 'UTC', "
       "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'));"},
  };
  for (auto& m : auth::AuthService::Migrations()) all.push_back(std::move(m));
  for (auto& m : auth::UsageRecorder::Migrations()) all.push_back(std::move(m));
  for (auto& m : ledger::Ledger::Migrations()) all.push_back(std::move(m));
  for (auto& m : tasks::Coordinator::Migrations()) all.push_back(std::move(m));
  return all;
}

const std::vector<store::Migration>& Migrations() {
  static const std::vector<store::Migration> all = Collect();
  return all;
}

http::Response Health(http::Request&) { return http::Response::Json(200, "{\"status\":\"ok\"}"); }

http::Response Ready(const Deps& deps) {
  std::string db_check = "ok", migration_check = "ok";
  bool ready = true;
  if (auto ping = deps.db.Ping(); !ping) {
    db_check = ping.error().message;
    migration_check = "unknown";
    ready = false;
  } else if (auto st = store::GetMigrationStatus(deps.db, deps.migrations); !st) {
    migration_check = st.error().message;
    ready = false;
  } else if (!st->up_to_date()) {
    migration_check = "at version " + std::to_string(st->current) + " of " + std::to_string(st->latest);
    ready = false;
  }
  std::string body = "{\"status\":";
  AppendJsonString(body, ready ? "ready" : "not_ready");
  body += ",\"checks\":{\"database\":";
  AppendJsonString(body, db_check);
  body += ",\"migrations\":";
  AppendJsonString(body, migration_check);
  body += "}}";
  return http::Response::Json(ready ? 200 : 503, std::move(body));
}

}  // namespace

std::string_view OpenApiDocument() { return embedded::kOpenApi; }

std::span<const store::Migration> AllMigrations() { return Migrations(); }

void RegisterRoutes(http::Router& router, const Deps& deps) {
  router.Add(http::Method::kGet, "/health", Health);
  router.Add(http::Method::kGet, "/ready", [&deps](http::Request&) { return Ready(deps); });
  router.Add(http::Method::kGet, "/metrics", [&deps](http::Request&) {
    return http::Response::Text(200, deps.registry.Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  router.Add(http::Method::kGet, "/openapi.json",
             [](http::Request&) { return http::Response::Json(200, std::string(OpenApiDocument())); });
  RegisterAuthRoutes(router, deps);
  RegisterAdminRoutes(router, deps);
  RegisterLedgerRoutes(router, deps);
  RegisterTaskRoutes(router, deps);
  RegisterEventRoutes(router, deps);
  RegisterNodeSocket(router, deps);
  router.Add(http::Method::kGet, "/api/v1/version", [&deps](http::Request&) {
    std::string body = "{\"version\":";
    AppendJsonString(body, deps.build.version);
    body += ",\"commit\":";
    AppendJsonString(body, deps.build.commit);
    body += "}";
    return http::Response::Json(200, std::move(body));
  });
}

}  // namespace smart::api
