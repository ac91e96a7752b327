// /api/v1/auth/* and /api/v1/user/profile.
#include <boost/json.hpp>

#include "json_body.hpp"
#include "routes_internal.hpp"

namespace smart::api {
namespace json = boost::json;
namespace {

json::object UserJson(const auth::User& u) {
  return {{"id", u.id},     {"email", u.email},   {"name", u.name},
          {"role", u.role}, {"status", u.status}, {"created_at", u.created_at}};
}

http::Response TokensJson(const auth::Tokens& t) {
  json::object o{{"access_token", t.access_token},
                 {"refresh_token", t.refresh_token},
                 {"token_type", "Bearer"},
                 {"expires_in", t.expires_in}};
  return http::Response::Json(200, json::serialize(o));
}

}  // namespace

Result<auth::Principal> Authenticate(const Deps& deps, const http::Request& req) {
  auto header = req.headers.Get("Authorization");
  if (!header) return Error::Unauthenticated("unauthenticated", "send Authorization: Bearer <access token>");
  std::string_view value = *header;
  if (value.size() < 7 || !http::IEquals(value.substr(0, 7), "Bearer ")) {
    return Error::Unauthenticated("unauthenticated", "the Authorization header must use the Bearer scheme");
  }
  return deps.auth.Authenticate(value.substr(7));
}

http::Response Unauthorized(const http::Request& req, const Error& e) {
  http::Response res = ErrorResponse(req, e);
  if (e.code == "unauthenticated") res.headers.Set("WWW-Authenticate", "Bearer realm=\"smart\"");
  return res;
}

void RegisterAuthRoutes(http::Router& router, const Deps& deps) {
  router.Add(http::Method::kPost, "/api/v1/auth/register", [&deps](http::Request& req) {
    auto body = ParseJsonObject(req, {"email", "password", "name"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    FieldReader f(std::get<json::object>(body));
    auto email = f.String("email", true), password = f.String("password", true), name = f.String("name", true);
    if (!f.ok()) return f.Problem(req);
    auto user = deps.auth.Register(*email, *password, *name);
    if (!user) return ErrorResponse(req, user.error());
    http::Response res = http::Response::Json(201, json::serialize(UserJson(*user)));
    res.headers.Add("Location", "/api/v1/user/profile");
    return res;
  });

  router.Add(http::Method::kPost, "/api/v1/auth/login", [&deps](http::Request& req) {
    auto body = ParseJsonObject(req, {"email", "password"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    FieldReader f(std::get<json::object>(body));
    auto email = f.String("email", true), password = f.String("password", true);
    if (!f.ok()) return f.Problem(req);
    auto tokens = deps.auth.Login(*email, *password, req.remote_address);
    if (!tokens) return Unauthorized(req, tokens.error());
    return TokensJson(*tokens);
  });

  router.Add(http::Method::kPost, "/api/v1/auth/refresh", [&deps](http::Request& req) {
    auto body = ParseJsonObject(req, {"refresh_token"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    FieldReader f(std::get<json::object>(body));
    auto token = f.String("refresh_token", true);
    if (!f.ok()) return f.Problem(req);
    auto tokens = deps.auth.Refresh(*token, req.remote_address);
    if (!tokens) return Unauthorized(req, tokens.error());
    return TokensJson(*tokens);
  });

  router.Add(http::Method::kPost, "/api/v1/auth/logout", [&deps](http::Request& req) {
    auto body = ParseJsonObject(req, {"refresh_token"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    FieldReader f(std::get<json::object>(body));
    auto token = f.String("refresh_token", true);
    if (!f.ok()) return f.Problem(req);
    auto r = deps.auth.Logout(*token);
    if (!r) return Unauthorized(req, r.error());
    return http::Response::Empty(204);
  });

  router.Add(http::Method::kGet, "/api/v1/user/profile", [&deps](http::Request& req) {
    auto who = Authenticate(deps, req);
    if (!who) return Unauthorized(req, who.error());
    auto user = deps.auth.GetUser(who->user_id);
    if (!user) return ErrorResponse(req, user.error());
    return http::Response::Json(200, json::serialize(UserJson(*user)));
  });

  router.Add(http::Method::kPatch, "/api/v1/user/profile", [&deps](http::Request& req) {
    auto who = Authenticate(deps, req);
    if (!who) return Unauthorized(req, who.error());
    auto body = ParseJsonObject(req, {"name"});
    if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
    FieldReader f(std::get<json::object>(body));
    auto name = f.String("name", false);
    if (!f.ok()) return f.Problem(req);
    auto user = deps.auth.UpdateProfile(who->user_id, name ? std::optional<std::string_view>(*name) : std::nullopt);
    if (!user) return ErrorResponse(req, user.error());
    return http::Response::Json(200, json::serialize(UserJson(*user)));
  });
}

}  // namespace smart::api
