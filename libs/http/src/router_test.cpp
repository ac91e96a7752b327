#include "smart/http/router.hpp"

#include <gtest/gtest.h>

namespace smart::http {
namespace {

Handler Named(std::string name) {
  return [name](Request&) { return Response::Text(200, name); };
}

std::string Call(const Router::Match& m) {
  Request req;
  return (*m.handler)(req).body;
}

TEST(Router, LiteralAndParameters) {
  Router r;
  r.Add(Method::kGet, "/api/v1/tasks", Named("list"));
  r.Add(Method::kPost, "/api/v1/tasks", Named("create"));
  r.Add(Method::kGet, "/api/v1/tasks/{id}", Named("show"));
  r.Add(Method::kPost, "/api/v1/tasks/{id}/cancel", Named("cancel"));
  r.Add(Method::kGet, "/api/v1/tasks/stats", Named("stats"));

  auto m = r.Find(Method::kGet, "/api/v1/tasks");
  ASSERT_TRUE(m.handler);
  EXPECT_EQ(Call(m), "list");
  EXPECT_EQ(m.route, "/api/v1/tasks");

  m = r.Find(Method::kGet, "/api/v1/tasks/task_123");
  ASSERT_TRUE(m.handler);
  EXPECT_EQ(Call(m), "show");
  EXPECT_EQ(m.route, "/api/v1/tasks/{id}");
  ASSERT_EQ(m.params.size(), 1u);
  EXPECT_EQ(m.params[0].first, "id");
  EXPECT_EQ(m.params[0].second, "task_123");

  m = r.Find(Method::kGet, "/api/v1/tasks/stats");
  EXPECT_EQ(Call(m), "stats") << "a literal segment wins over a parameter";

  m = r.Find(Method::kPost, "/api/v1/tasks/a%20b/cancel");
  ASSERT_TRUE(m.handler);
  EXPECT_EQ(m.params[0].second, "a b");
}

TEST(Router, NotFoundAndMethodNotAllowed) {
  Router r;
  r.Add(Method::kGet, "/health", Named("h"));
  r.Add(Method::kPost, "/items/{id}", Named("p"));

  auto m = r.Find(Method::kGet, "/nope");
  EXPECT_FALSE(m.handler);
  EXPECT_FALSE(m.path_found);

  m = r.Find(Method::kDelete, "/health");
  EXPECT_FALSE(m.handler);
  EXPECT_TRUE(m.path_found);
  EXPECT_EQ(m.allow, "GET, HEAD, OPTIONS");

  m = r.Find(Method::kGet, "/items/");  // an empty parameter does not match
  EXPECT_FALSE(m.path_found);
  m = r.Find(Method::kPost, "/items/%zz");  // a bad escape does not match
  EXPECT_FALSE(m.path_found);
  m = r.Find(Method::kGet, "/health/extra");
  EXPECT_FALSE(m.path_found);
}

TEST(Router, HeadFallsBackToGet) {
  Router r;
  r.Add(Method::kGet, "/health", Named("h"));
  auto m = r.Find(Method::kHead, "/health");
  ASSERT_TRUE(m.handler);
  EXPECT_EQ(Call(m), "h");
}

TEST(Router, WebSocketRoutes) {
  Router r;
  r.AddWebSocket("/ws", [](Request&, std::shared_ptr<WebSocket>) { return WsAccept{}; });
  auto m = r.Find(Method::kGet, "/ws");
  EXPECT_TRUE(m.ws);
  EXPECT_FALSE(m.handler);
  EXPECT_TRUE(m.path_found);
  EXPECT_EQ(m.allow, "GET, OPTIONS");
  auto routes = r.Routes();
  ASSERT_EQ(routes.size(), 1u);
  EXPECT_TRUE(routes[0].websocket);
}

TEST(RouterDeathTest, DuplicateRouteIsABug) {
  Router r;
  r.Add(Method::kGet, "/a", Named("1"));
  EXPECT_DEATH(r.Add(Method::kGet, "/a", Named("2")), "duplicate");
  EXPECT_DEATH(r.Add(Method::kGet, "/b/{x}", Named("2")); r.Add(Method::kGet, "/b/{y}/z", Named("3")), "conflicting");
}

}  // namespace
}  // namespace smart::http
