// /api/v1/admin/*: scope `admin` (held only by the admin role).
#include <boost/json.hpp>

#include "json_body.hpp"
#include "routes_internal.hpp"

namespace smart::api {
namespace json = boost::json;

void RegisterAdminRoutes(http::Router& router, const Deps& deps) {
  router.Add(http::Method::kGet, "/api/v1/admin/users", [&deps](http::Request& req) {
    auto who = Require(deps, req, auth::scope::kAdmin);
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    auto q = ParsePageQuery(req);
    if (auto* res = std::get_if<http::Response>(&q)) return std::move(*res);
    auto page = deps.auth.ListUsers(std::get<PageQuery>(q).limit, std::get<PageQuery>(q).cursor);
    if (!page) return ErrorResponse(req, page.error());
    json::array items;
    for (const auto& u : page->items) items.push_back(UserJson(u));
    json::object o{{"items", std::move(items)}};
    o["next_cursor"] = page->next_cursor ? json::value(*page->next_cursor) : json::value(nullptr);
    return http::Response::Json(200, json::serialize(o));
  });

  router.Add(
      http::Method::kPatch, "/api/v1/admin/users/{id}",
      [&deps](http::Request& req) {
        auto who = Require(deps, req, auth::scope::kAdmin);
        if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
        auto body = ParseJsonObject(req, {"status", "role", "tier"});
        if (auto* res = std::get_if<http::Response>(&body)) return std::move(*res);
        FieldReader f(std::get<json::object>(body));
        auto status = f.String("status", false), role = f.String("role", false), tier = f.String("tier", false);
        if (!f.ok()) return f.Problem(req);
        auto user =
            deps.auth.AdminUpdateUser(std::get<auth::Principal>(who), req.Param("id"),
                                      status ? std::optional<std::string_view>(*status) : std::nullopt,
                                      role ? std::optional<std::string_view>(*role) : std::nullopt,
                                      tier ? std::optional<std::string_view>(*tier) : std::nullopt, req.remote_address);
        if (!user) return ErrorResponse(req, user.error());
        return http::Response::Json(200, json::serialize(UserJson(*user)));
      },
      kBlocking);

  router.Add(http::Method::kGet, "/api/v1/admin/audit", [&deps](http::Request& req) {
    auto who = Require(deps, req, auth::scope::kAdmin);
    if (auto* res = std::get_if<http::Response>(&who)) return std::move(*res);
    auto q = ParsePageQuery(req);
    if (auto* res = std::get_if<http::Response>(&q)) return std::move(*res);
    auto action = req.Query("action");
    auto page = deps.auth.ListAudit(std::get<PageQuery>(q).limit, std::get<PageQuery>(q).cursor,
                                    action ? std::optional<std::string_view>(*action) : std::nullopt);
    if (!page) return ErrorResponse(req, page.error());
    json::array items;
    for (const auto& e : page->items) {
      boost::system::error_code ec;
      json::value detail = json::parse(e.detail, ec);
      if (ec) detail = json::object{};
      items.push_back(json::object{{"id", e.id},
                                   {"ts", e.ts},
                                   {"actor", e.actor},
                                   {"action", e.action},
                                   {"target", e.target},
                                   {"client", e.client},
                                   {"detail", std::move(detail)}});
    }
    json::object o{{"items", std::move(items)}};
    o["next_cursor"] = page->next_cursor ? json::value(*page->next_cursor) : json::value(nullptr);
    return http::Response::Json(200, json::serialize(o));
  });
}

}  // namespace smart::api
