// The OpenAPI document must describe every route smartd registers, and be valid JSON.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "smart/api/routes.hpp"
#include "smart/auth/service.hpp"
#include "smart/auth/usage.hpp"
#include "smart/events/bus.hpp"
#include "smart/ledger/ledger.hpp"
#include "smart/metrics/metrics.hpp"
#include "smart/tasks/coordinator.hpp"
#include "smart/testing/process.hpp"

namespace smart::api {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

TEST(OpenApi, IsValidJsonAndVersion31) {
  boost::system::error_code ec;
  auto doc = boost::json::parse(OpenApiDocument(), ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc.at("openapi").as_string(), "3.1.0");
  EXPECT_TRUE(doc.at("paths").is_object());
}

TEST(OpenApi, DescribesEveryRegisteredRoute) {
  testing::TempDir dir;
  auto db = store::Open("sqlite:" + dir.path() + "/t.db");
  ASSERT_TRUE(db.ok());
  metrics::Registry registry;
  SystemClock clock;
  auth::AuthService auth(**db, {.keys = {{"k", std::string(32, 'k')}}, .active_kid = "k"}, clock);
  auto limiter = kv::NewMemoryRateLimiter();
  auth::UsageRecorder usage(**db, clock);
  ASSERT_TRUE(store::Migrate(**db, AllMigrations()).ok());
  ledger::Ledger ledger(**db, {.assets = {{"USDC", 6}}, .platform_token = "USDC"}, clock);
  tasks::Coordinator coordinator(**db, ledger, {.sweep_interval_ms = 0}, clock);
  events::Bus bus;
  Deps deps{.db = **db,
            .registry = registry,
            .auth = auth,
            .usage = usage,
            .ledger = ledger,
            .tasks = coordinator,
            .bus = bus,
            .limiter = *limiter,
            .login_limiter = *limiter,
            .clock = clock,
            .migrations = AllMigrations(),
            .build = {"test", "test"}};
  http::Router router;
  RegisterRoutes(router, deps);

  auto doc = boost::json::parse(OpenApiDocument()).as_object();
  const auto& paths = doc.at("paths").as_object();
  auto routes = router.Routes();
  ASSERT_FALSE(routes.empty());
  for (const auto& r : routes) {
    auto it = paths.find(r.pattern);
    ASSERT_NE(it, paths.end()) << "route " << r.pattern << " is missing from docs/openapi.json";
    std::string method = Lower(http::ToString(r.method));
    EXPECT_TRUE(it->value().as_object().contains(method))
        << http::ToString(r.method) << " " << r.pattern << " is missing from docs/openapi.json";
  }
  // And the reverse: the document promises nothing that is not served.
  for (const auto& [path, item] : paths) {
    for (const auto& [method, op] : item.as_object()) {
      (void)op;
      bool served = false;
      for (const auto& r : routes) served = served || (r.pattern == path && Lower(http::ToString(r.method)) == method);
      EXPECT_TRUE(served) << method << " " << path << " is documented but not registered";
    }
  }
}

TEST(Migrations, AreOrderedAndApplyOnSqlite) {
  testing::TempDir dir;
  auto db = store::Open("sqlite:" + dir.path() + "/t.db");
  ASSERT_TRUE(db.ok());
  auto n = store::Migrate(**db, AllMigrations());
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, static_cast<int>(AllMigrations().size()));
}

}  // namespace
}  // namespace smart::api

#include "json_body.hpp"

namespace smart::api {
namespace {

TEST(ErrorResponse, MapsKindsToStatusesWithoutLeakingInternals) {
  http::Request req;
  req.request_id = "r1";
  auto r = ErrorResponse(req, Error::Invalid("invalid_email", "email: not a valid email address"));
  EXPECT_EQ(r.status, 422);
  EXPECT_NE(r.body.find("{\"field\":\"email\",\"message\":\"not a valid email address\"}"), std::string::npos)
      << r.body;
  r = ErrorResponse(req, Error::Unauthenticated("expired_token", "the token has expired"));
  EXPECT_EQ(r.status, 401);
  EXPECT_TRUE(r.headers.Get("WWW-Authenticate"));
  r = ErrorResponse(req, Error::Unavailable("database_unavailable", "cannot connect to postgresql://db: refused"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.headers.Get("Retry-After"), "1");
  EXPECT_EQ(r.body.find("postgresql://"), std::string::npos) << "internals stay out of answers";
  EXPECT_EQ(ErrorResponse(req, Error::Conflict("email_taken", "email: taken")).status, 409);
  EXPECT_EQ(ErrorResponse(req, Error::PermissionDenied("scope_not_allowed", "no")).status, 403);
  EXPECT_THROW(ErrorResponse(req, Error::Internal("sql_error", "syntax error near SELEC")), std::runtime_error)
      << "bugs go to the server's one 500 path, which logs them";
}

}  // namespace
}  // namespace smart::api
