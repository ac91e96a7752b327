// The standard middlewares. Each is a value to pass to Server in this order:
// ClientAddress (behind proxies), RequestId, AccessLog, Metrics,
// SecurityHeaders, Cors. (Exceptions from
// handlers become a 500 inside the server's dispatch, after all of them.)
#pragma once

#include <string>
#include <vector>

#include "smart/http/server.hpp"

namespace smart::http {

// Behind reverse proxies: `trusted` lists their addresses or CIDR ranges
// ("10.0.0.0/8", "::1"). When a request comes from one of them, its client is
// the rightmost X-Forwarded-For entry that is not one of them (each proxy
// appends the address it got the request from), so limits and logs see the
// client, not the proxy; from anyone else, X-Forwarded-For is ignored (any
// client can send one). An entry that is not an address ends the walk at the
// hop that passed it on. An invalid `trusted` entry is an error naming it.
Result<Middleware> ClientAddress(const std::vector<std::string>& trusted);
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
