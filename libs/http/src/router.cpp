#include "smart/http/router.hpp"

#include <cstdio>
#include <cstdlib>

namespace smart::http {

struct Router::Node {
  std::map<std::string, std::unique_ptr<Node>, std::less<>> literal;
  std::unique_ptr<Node> param;
  std::string param_name;
  std::string pattern;
  std::string allow;  // derived from handlers and ws; rebuilt on every Add
  std::map<Method, Handler> handlers;
  std::map<Method, RouteOptions> options;
  std::unique_ptr<WsHandler> ws;
};

namespace {

[[noreturn]] void Bug(std::string_view what, std::string_view pattern) {
  std::fprintf(stderr, "BUG: router: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(pattern.size()), pattern.data());
  std::abort();
}

// Splits "/a/b/" into {"a", "b", ""}; the root "/" gives {}.
std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path[0] != '/') return out;
  path.remove_prefix(1);
  if (path.empty()) return out;
  while (true) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

}  // namespace

Router::Router() : root_(std::make_unique<Node>()) {}
Router::~Router() = default;
Router::Router(Router&&) noexcept = default;
Router& Router::operator=(Router&&) noexcept = default;

Router::Node* Router::Insert(std::string_view pattern) {
  if (pattern.empty() || pattern[0] != '/') Bug("pattern must start with '/'", pattern);
  Node* node = root_.get();
  for (auto seg : Segments(pattern)) {
    if (seg.size() >= 2 && seg.front() == '{' && seg.back() == '}') {
      auto name = seg.substr(1, seg.size() - 2);
      if (!node->param) {
        node->param = std::make_unique<Node>();
        node->param_name = std::string(name);
      } else if (node->param_name != name) {
        Bug("conflicting parameter names at the same position", pattern);
      }
      node = node->param.get();
    } else {
      if (seg.find_first_of("{}") != std::string_view::npos) Bug("malformed parameter", pattern);
      auto it = node->literal.find(seg);
      if (it == node->literal.end()) it = node->literal.emplace(std::string(seg), std::make_unique<Node>()).first;
      node = it->second.get();
    }
  }
  node->pattern = std::string(pattern);
  return node;
}

void Router::RebuildAllow(Node& node) {
  std::string allow;
  auto add = [&](std::string_view m) { allow.append(allow.empty() ? "" : ", ").append(m); };
  for (const auto& [meth, h] : node.handlers) {
    add(ToString(meth));
    if (meth == Method::kGet && !node.handlers.count(Method::kHead)) add("HEAD");
  }
  if (node.ws && !node.handlers.count(Method::kGet)) add("GET");
  if (!node.handlers.count(Method::kOptions)) add("OPTIONS");
  node.allow = std::move(allow);
}

void Router::Add(Method method, std::string_view pattern, Handler handler, RouteOptions options) {
  Node* node = Insert(pattern);
  if (method == Method::kOther || node->handlers.count(method)) Bug("duplicate or invalid route", pattern);
  node->handlers.emplace(method, std::move(handler));
  node->options[method] = options;
  RebuildAllow(*node);
  routes_.push_back({method, std::string(pattern), false});
}

void Router::AddWebSocket(std::string_view pattern, WsHandler handler) {
  Node* node = Insert(pattern);
  if (node->ws) Bug("duplicate WebSocket route", pattern);
  node->ws = std::make_unique<WsHandler>(std::move(handler));
  RebuildAllow(*node);
  routes_.push_back({Method::kGet, std::string(pattern), true});
}

Router::Match Router::Find(Method method, std::string_view path) const {
  Match m;
  const Node* node = root_.get();
  for (auto seg : Segments(path)) {
    if (auto it = node->literal.find(seg); it != node->literal.end()) {
      node = it->second.get();
    } else if (node->param && !seg.empty()) {
      auto decoded = PercentDecode(seg);
      if (!decoded) return m;
      m.params.emplace_back(node->param_name, std::move(*decoded));
      node = node->param.get();
    } else {
      return m;
    }
  }
  if (node->handlers.empty() && !node->ws) return m;
  m.path_found = true;
  m.route = node->pattern;
  m.allow = node->allow;
  if (node->ws) m.ws = node->ws.get();
  auto it = node->handlers.find(method);
  if (it == node->handlers.end() && method == Method::kHead) it = node->handlers.find(Method::kGet);
  if (it != node->handlers.end()) {
    m.handler = &it->second;
    const RouteOptions& o = node->options.at(it->first);
    m.blocking = o.blocking || o.long_poll;
    m.long_poll = o.long_poll;
  }
  return m;
}

std::vector<RouteInfo> Router::Routes() const { return routes_; }

}  // namespace smart::http
