#pragma once

#include <boost/json/object.hpp>
#include <variant>

#include "smart/api/routes.hpp"
#include "smart/auth/service.hpp"

namespace smart::tasks {
struct Task;
}

namespace smart::api {

// Password hashing and durable writes run on the server's worker pool.
inline constexpr http::RouteOptions kBlocking{.blocking = true};

void RegisterAuthRoutes(http::Router& router, const Deps& deps);

void RegisterAdminRoutes(http::Router& router, const Deps& deps);

void RegisterLedgerRoutes(http::Router& router, const Deps& deps);

void RegisterTaskRoutes(http::Router& router, const Deps& deps);

void RegisterEventRoutes(http::Router& router, const Deps& deps);

void RegisterNodeSocket(http::Router& router, const Deps& deps);

// A task as the API shows it; `full` adds the input, parameters and output, which lists leave out.
boost::json::object TaskJson(const Deps& deps, const tasks::Task& t, bool full);

boost::json::object UserJson(const auth::User& u);

bool HasCredentials(const http::Request& req);
// Login back-off: refused while the account or the address has failed too often.
bool LoginBlocked(const Deps& deps, const http::Request& req, std::string_view email, kv::Decision* out);
void CountLoginFailure(const Deps& deps, const http::Request& req, std::string_view email);
http::Response LoginBackoff(const http::Request& req, const kv::Decision& d);

// The caller behind `Authorization: Bearer <token or key>` or `X-API-Key: <key>`.
Result<auth::Principal> Authenticate(const Deps& deps, const http::Request& req);
// The caller, if it holds `scope` (403 insufficient_scope otherwise); with
// `session_only`, API keys are refused (a key cannot mint or manage keys).
std::variant<auth::Principal, http::Response> Require(const Deps& deps, const http::Request& req,
                                                      std::string_view scope, bool session_only = false);
// A 401 problem with the WWW-Authenticate challenge.
http::Response Unauthorized(const http::Request& req, const Error& e);

}  // namespace smart::api
