// The standard middlewares. Each is a value to pass to Server in this order:
// RequestId, AccessLog, Metrics, SecurityHeaders, Cors. (Exceptions from
// handlers become a 500 inside the server's dispatch, after all of them.)
#pragma once

#include <string>
#include <vector>

#include "smart/http/server.hpp"

namespace smart::http {

// Keeps a sane X-Request-Id (1-128 of [A-Za-z0-9._:-]) or generates one; echoes it back.
Middleware RequestId();
// One JSON line per request: ts, method, route, path, status, bytes, duration_ms, request_id, client.
Middleware AccessLog(log::Logger& logger);
// http_requests_total{method,route,status} and http_request_duration_seconds{method,route}.
Middleware Metrics(metrics::Registry& registry);
// nosniff, frame denial, no referrer, a restrictive CSP and no caching by default.
Middleware SecurityHeaders();
// CORS for the listed origins ("*" allows any); answers preflight requests itself.
Middleware Cors(std::vector<std::string> allowed_origins);

}  // namespace smart::http
