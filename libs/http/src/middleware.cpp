#include "smart/http/middleware.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <unordered_map>

#include "smart/core/ids.hpp"
#include "smart/core/log.hpp"
#include "smart/metrics/metrics.hpp"

namespace smart::http {
namespace {

bool SaneRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == ':' || c == '-';
  });
}

std::string_view MethodLabel(const Request& req) {
  return req.method == Method::kOther ? std::string_view("OTHER") : ToString(req.method);
}

std::string_view RouteLabel(const Request& req) {
  return req.route.empty() ? std::string_view("unmatched") : req.route;
}

}  // namespace

Middleware RequestId() {
  return [](Request& req, const Handler& next) {
    auto given = req.headers.Get("X-Request-Id");
    req.request_id = given && SaneRequestId(*given) ? std::string(*given) : NewUlid();
    Response res = next(req);
    res.Then([&req](Response& r) { r.headers.Set("X-Request-Id", req.request_id); });
    return res;
  };
}

Middleware AccessLog(log::Logger& logger) {
  return [&logger](Request& req, const Handler& next) {
    auto start = std::chrono::steady_clock::now();
    Response res = next(req);
    res.Then([&logger, &req, start](Response& r) {
      if (!logger.Enabled(log::Level::kInfo)) return;
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      logger.Info("request", {{"method", req.method_text},
                              {"route", RouteLabel(req)},
                              {"path", req.path},
                              {"status", r.status},
                              {"bytes", r.body.size()},
                              {"duration_ms", ms},
                              {"request_id", req.request_id},
                              {"client", req.remote_address}});
    });
    return res;
  };
}

Middleware Metrics(metrics::Registry& registry) {
  auto& requests = registry.AddCounter("http_requests_total", "HTTP requests by method, route and status.",
                                       {"method", "route", "status"});
  auto& durations =
      registry.AddHistogram("http_request_duration_seconds", "HTTP request handling time.", {"method", "route"});
  return [&requests, &durations](Request& req, const Handler& next) {
    auto start = std::chrono::steady_clock::now();
    Response res = next(req);
    res.Then([&requests, &durations, &req, start](Response& r) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      // Each thread remembers the children it used, so the hot path takes no
      // lock and allocates nothing once a (method, route, status) has been seen.
      struct Children {
        metrics::Counter* count;
        metrics::Histogram* duration;
      };
      thread_local std::unordered_map<std::string, Children> cache;
      thread_local std::string key;
      std::string_view method = MethodLabel(req), route = RouteLabel(req);
      // The family's address keeps two middlewares (two registries) on one thread apart.
      const void* family = &requests;
      key.assign(reinterpret_cast<const char*>(&family), sizeof family);
      key.append(method).push_back(' ');
      key.append(route).push_back(' ');
      key.append(std::to_string(r.status));
      auto it = cache.find(key);
      if (it == cache.end()) {
        Children c{&requests.WithLabels({method, route, std::to_string(r.status)}),
                   &durations.WithLabels({method, route})};
        it = cache.emplace(key, c).first;
      }
      it->second.count->Inc();
      it->second.duration->Observe(secs);
    });
    return res;
  };
}

Middleware SecurityHeaders() {
  return [](Request& req, const Handler& next) {
    Response res = next(req);
    res.Then([](Response& r) {
      auto set_default = [&](std::string_view name, std::string value) {
        if (!r.headers.Get(name)) r.headers.Add(std::string(name), std::move(value));
      };
      set_default("X-Content-Type-Options", "nosniff");
      set_default("X-Frame-Options", "DENY");
      set_default("Referrer-Policy", "no-referrer");
      set_default("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
      set_default("Cache-Control", "no-store");
    });
    return res;
  };
}

Middleware Cors(std::vector<std::string> allowed_origins) {
  bool any = std::find(allowed_origins.begin(), allowed_origins.end(), "*") != allowed_origins.end();
  return [origins = std::move(allowed_origins), any](Request& req, const Handler& next) {
    auto origin = req.headers.Get("Origin");
    bool allowed = origin && (any || std::find(origins.begin(), origins.end(), *origin) != origins.end());
    bool preflight = req.method == Method::kOptions && origin && req.headers.Get("Access-Control-Request-Method");
    Response res;
    if (preflight && !req.route.empty()) {
      res = Response::Empty(204);
      if (allowed) {
        res.headers.Add("Access-Control-Allow-Methods", std::string(req.allow));
        res.headers.Add("Access-Control-Allow-Headers",
                        "Authorization, Content-Type, Idempotency-Key, X-API-Key, X-Request-Id");
        res.headers.Add("Access-Control-Max-Age", "600");
      }
    } else {
      res = next(req);
    }
    if (allowed) {
      res.Then([any, origin = std::string(*origin)](Response& r) {
        r.headers.Set("Access-Control-Allow-Origin", any ? "*" : origin);
        r.headers.Set("Access-Control-Expose-Headers",
                      "X-Request-Id, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After");
        if (!any) r.headers.Set("Vary", "Origin");
      });
    }
    return res;
  };
}

}  // namespace smart::http
