// /api/v1/auth/* and /api/v1/user/profile.
#include <boost/json.hpp>

#include "json_body.hpp"
#include "routes_internal.hpp"
#include "smart/auth/usage.hpp"
#include "smart/core/json_text.hpp"

namespace smart::api {
namespace json = boost::json;
namespace {}  // namespace

json::object UserJson(const auth::User& u) {
  return {{"id", u.id},     {"email", u.email},          {"name", u.name}, {"role", u.role}, {"status", u.status},
          {"tier", u.tier}, {"created_at", u.created_at}};
}

namespace {

// The body {"refresh_token": "..."} of refresh and logout.
std::variant<std::string, http::Response> RefreshTokenFrom(const http::Request& req) {
  auto body = ParseJsonObject(req, {"refresh_token"});
  if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
  FieldReader f(std::get<json::object>(body));
  auto token = f.String("refresh_token", true);
  if (!f.ok()) return f.Problem(req);
  return std::move(*token);
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
  if (auto key = req.headers.Get("X-API-Key")) return deps.auth.Authenticate(*key);
  auto header = req.headers.Get("Authorization");
  if (!header) {
    return Error::Unauthenticated("unauthenticated", "send Authorization: Bearer <access token or API key>");
  }
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

std::variant<auth::Principal, http::Response> Require(const Deps& deps, const http::Request& req,
                                                      std::string_view scope, bool session_only) {
  // The Limits middleware may have authenticated the caller already.
  const auto* cached = std::any_cast<Result<auth::Principal>>(&req.context);
  Result<auth::Principal> who = cached ? *cached : Authenticate(deps, req);
  if (!who) return Unauthorized(req, who.error());
  if (session_only && !who->api_key_id.empty()) {
    return http::MakeProblem(req, {.status = 403,
                                   .code = "session_required",
                                   .detail = "Sign in with a session token for this; API keys cannot do it."});
  }
  if (!scope.empty() && !who->Has(scope)) {
    http::Response res = http::MakeProblem(
        req,
        {.status = 403, .code = "insufficient_scope", .detail = "This needs the scope '" + std::string(scope) + "'."});
    res.headers.Add("WWW-Authenticate",
                    "Bearer realm=\"smart\", error=\"insufficient_scope\", scope=\"" + std::string(scope) + "\"");
    return res;
  }
  return std::move(who).value();
}

json::object KeyJson(const auth::ApiKey& k) {
  json::array scopes;
  for (const auto& s : k.scopes) scopes.emplace_back(s);
  json::object o{{"id", k.id},
                 {"name", k.name},
                 {"prefix", k.prefix},
                 {"scopes", std::move(scopes)},
                 {"created_at", k.created_at}};
  o["expires_at"] = k.expires_at ? json::value(FormatTimestamp(*k.expires_at)) : json::value(nullptr);
  o["revoked_at"] = k.revoked_at ? json::value(*k.revoked_at) : json::value(nullptr);
  return o;
}

void RegisterAuthRoutes(http::Router& router, const Deps& deps) {
  router.Add(
      http::Method::kPost, "/api/v1/user/api-keys",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, "", true);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto body = ParseJsonObject(req, {"name", "scopes", "expires_at"});
        if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
        FieldReader f(std::get<json::object>(body));
        auto name = f.String("name", true);
        auto scopes = f.StringList("scopes", true);
        auto expires = f.Timestamp("expires_at", false);
        if (!f.ok()) return f.Problem(req);
        auto created = deps.auth.CreateApiKey(std::get<auth::Principal>(who), *name, *scopes, expires);
        if (!created) return ErrorResponse(req, created.error());
        json::object o = KeyJson(created->key);
        o["key"] = created->secret;
        http::Response res = http::Response::Json(201, json::serialize(o));
        res.headers.Add("Location", "/api/v1/user/api-keys/" + created->key.id);
        return res;
      },
      kBlocking);

  router.Add(http::Method::kGet, "/api/v1/user/api-keys", [&deps](http::Request& req) {
    auto who = Require(deps, req, "");
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    auto keys = deps.auth.ListApiKeys(std::get<auth::Principal>(who).user_id);
    if (!keys) return ErrorResponse(req, keys.error());
    json::array items;
    for (const auto& k : *keys) items.push_back(KeyJson(k));
    return http::Response::Json(200,
                                json::serialize(json::object{{"items", std::move(items)}, {"next_cursor", nullptr}}));
  });

  router.Add(
      http::Method::kDelete, "/api/v1/user/api-keys/{id}",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, "");
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto r = deps.auth.RevokeApiKey(std::get<auth::Principal>(who).user_id, req.Param("id"));
        if (!r) return ErrorResponse(req, r.error());
        return http::Response::Empty(204);
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/auth/register",
      [&deps](http::Request& req) {
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
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/auth/login",
      [&deps](http::Request& req) {
        auto body = ParseJsonObject(req, {"email", "password"});
        if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
        FieldReader f(std::get<json::object>(body));
        auto email = f.String("email", true), password = f.String("password", true);
        if (!f.ok()) return f.Problem(req);
        std::string account = auth::AuthService::NormalizeEmail(*email).value_or(email->substr(0, 254));
        kv::Decision backoff;
        if (LoginBlocked(deps, req, account, &backoff)) return LoginBackoff(req, backoff);
        auto tokens = deps.auth.Login(*email, *password, req.remote_address);
        if (!tokens) {
          if (tokens.error().code == "invalid_credentials") CountLoginFailure(deps, req, account);
          return Unauthorized(req, tokens.error());
        }
        return TokensJson(*tokens);
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/auth/refresh",
      [&deps](http::Request& req) {
        auto token = RefreshTokenFrom(req);
        if (auto* res = std::get_if<http::Response>(&token)) return std::move(*res);
        auto tokens = deps.auth.Refresh(std::get<std::string>(token), req.remote_address);
        if (!tokens) return Unauthorized(req, tokens.error());
        return TokensJson(*tokens);
      },
      kBlocking);

  router.Add(
      http::Method::kPost, "/api/v1/auth/logout",
      [&deps](http::Request& req) {
        auto token = RefreshTokenFrom(req);
        if (auto* res = std::get_if<http::Response>(&token)) return std::move(*res);
        auto r = deps.auth.Logout(std::get<std::string>(token));
        if (!r) return Unauthorized(req, r.error());
        return http::Response::Empty(204);
      },
      kBlocking);

  router.Add(
      http::Method::kGet, "/api/v1/user/usage",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, "");
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        (void)deps.usage.Flush();  // include what this instance counted so far
        auto rows = deps.usage.ForUser(std::get<auth::Principal>(who).user_id, 30);
        if (!rows) return ErrorResponse(req, rows.error());
        // Group by day: {day, requests, by_key: [{key_id, requests}]}.
        json::array days;
        for (const auto& row : *rows) {
          if (days.empty() || days.back().as_object().at("day").as_string() != row.day) {
            days.push_back(json::object{{"day", row.day}, {"requests", 0}, {"by_key", json::array{}}});
          }
          auto& day = days.back().as_object();
          day["requests"] = day["requests"].as_int64() + row.requests;
          json::object entry{{"requests", row.requests}};
          entry["key_id"] = row.key_id.empty() ? json::value(nullptr) : json::value(row.key_id);
          day["by_key"].as_array().push_back(std::move(entry));
        }
        return http::Response::Json(200, json::serialize(json::object{{"days", std::move(days)}}));
      },
      kBlocking);

  router.Add(http::Method::kGet, "/api/v1/user/profile", [&deps](http::Request& req) {
    auto who = Require(deps, req, "");
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    auto user = deps.auth.GetUser(std::get<auth::Principal>(who).user_id);
    if (!user) return ErrorResponse(req, user.error());
    return http::Response::Json(200, json::serialize(UserJson(*user)));
  });

  router.Add(
      http::Method::kPatch, "/api/v1/user/profile",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, "", true);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto body = ParseJsonObject(req, {"name"});
        if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
        FieldReader f(std::get<json::object>(body));
        auto name = f.String("name", false);
        if (!f.ok()) return f.Problem(req);
        auto user = deps.auth.UpdateProfile(std::get<auth::Principal>(who).user_id,
                                            name ? std::optional<std::string_view>(*name) : std::nullopt);
        if (!user) return ErrorResponse(req, user.error());
        return http::Response::Json(200, json::serialize(UserJson(*user)));
      },
      kBlocking);
}

}  // namespace smart::api
