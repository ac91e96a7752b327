// Routes by method and path pattern. Patterns are literal segments and
// parameters in braces: "/api/v1/tasks/{id}/cancel". Literal segments win over
// parameters. The router is built before the server starts and is read-only
// afterwards, so lookups need no lock.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "smart/http/message.hpp"
#include "smart/http/websocket.hpp"

namespace smart::http {

using Handler = std::function<Response(Request&)>;

struct RouteInfo {
  Method method;  // kGet for WebSocket routes (an upgrade is a GET)
  std::string pattern;
  bool websocket = false;
};

// How a handler runs. `blocking` handlers (password hashing, durable writes)
// run on the server's worker pool so that they never stall an I/O thread; the
// others run inline on the connection's I/O thread. `long_poll` handlers,
// which wait for something to happen (up to tens of seconds), run on a pool of
// their own, so that waiting never delays the blocking ones.
struct RouteOptions {
  bool blocking = false;
  bool long_poll = false;
};

class Router {
 public:
  Router();
  ~Router();
  Router(Router&&) noexcept;
  Router& operator=(Router&&) noexcept;

  // Aborts on a duplicate (method, pattern) or a malformed pattern: both are bugs.
  void Add(Method method, std::string_view pattern, Handler handler, RouteOptions options = {});
  void AddWebSocket(std::string_view pattern, WsHandler handler);

  struct Match {
    const Handler* handler = nullptr;  // null: see path_found
    bool blocking = false;             // run the request on the worker pool
    bool long_poll = false;            // ... on the long-poll pool
    const WsHandler* ws = nullptr;     // set when the path has a WebSocket route
    bool path_found = false;           // the path exists for some method (then 405, not 404)
    std::string_view route;            // the pattern matched
    std::string allow;                 // "GET, HEAD, OPTIONS"
    std::vector<std::pair<std::string, std::string>> params;
  };
  // HEAD falls back to the GET handler. A percent-escape that does not decode makes no match.
  Match Find(Method method, std::string_view path) const;

  std::vector<RouteInfo> Routes() const;

 private:
  struct Node;
  Node* Insert(std::string_view pattern);
  static void RebuildAllow(Node& node);
  std::unique_ptr<Node> root_;
  std::vector<RouteInfo> routes_;
};

}  // namespace smart::http
