// Outgoing HTTP(S) requests (libcurl underneath): smart-node talking to
// smartd and to OpenAI-compatible endpoints, later webhooks and JSON-RPC.
// Thread-safe; each thread keeps its connections alive for its next requests.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "smart/core/result.hpp"

namespace smart::http {

struct ClientRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{30'000};  // the whole exchange
};

struct ClientResponse {
  int status = 0;
  std::string body;  // empty when an on_data callback took it
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;  // the final response's fields, as received

  // The first field named `name` (any case), or empty.
  std::string_view Header(std::string_view name) const;
};

// Sends `req`; any HTTP status is a response. Connection failures and
// timeouts are kUnavailable ("http_unreachable", "http_timeout"). With
// `on_data`, the body is handed over as it arrives (server-sent events);
// returning false aborts the transfer.
Result<ClientResponse> Send(const ClientRequest& req,
                            const std::function<bool(std::string_view chunk)>& on_data = nullptr);

}  // namespace smart::http
