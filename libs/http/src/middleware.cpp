#include "smart/http/middleware.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstring>
#include <optional>
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

// An IPv4 or IPv6 address as 16 bytes (IPv4 mapped into IPv6), for prefix tests.
using Address = std::array<uint8_t, 16>;

std::optional<Address> ParseAddress(std::string_view text) {
  if (text.empty() || text.size() > 45) return std::nullopt;
  std::string s(text);
  Address a{};
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    a[10] = a[11] = 0xff;
    std::memcpy(a.data() + 12, &v4, 4);
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), a.data()) == 1) return a;
  return std::nullopt;
}

std::string FormatAddress(const Address& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a.data(), kMapped, 12) == 0) {
    inet_ntop(AF_INET, a.data() + 12, buf, sizeof buf);
  } else {
    inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
  }
  return buf;
}

struct Network {
  Address base;
  int bits;  // of the 128
  bool Contains(const Address& a) const {
    int whole = bits / 8, rest = bits % 8;
    if (std::memcmp(a.data(), base.data(), static_cast<size_t>(whole)) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (a[static_cast<size_t>(whole)] & mask) == (base[static_cast<size_t>(whole)] & mask);
  }
};

std::optional<Network> ParseNetwork(std::string_view text) {
  auto slash = text.find('/');
  auto base = ParseAddress(text.substr(0, slash));
  if (!base) return std::nullopt;
  bool v4 = text.substr(0, slash).find(':') == std::string_view::npos;
  int bits = v4 ? 32 : 128;
  if (slash != std::string_view::npos) {
    auto digits = text.substr(slash + 1);
    int n = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || n < 0 || n > bits) {
      return std::nullopt;
    }
    bits = n;
  }
  return Network{*base, v4 ? bits + 96 : bits};
}

// An X-Forwarded-For entry: an address, perhaps with a port ("1.2.3.4:80", "[::1]:80").
std::optional<Address> ForwardedEntry(std::string_view e) {
  while (!e.empty() && (e.front() == ' ' || e.front() == '\t')) e.remove_prefix(1);
  while (!e.empty() && (e.back() == ' ' || e.back() == '\t')) e.remove_suffix(1);
  if (e.starts_with('[')) {
    auto close = e.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    return ParseAddress(e.substr(1, close - 1));
  }
  if (std::count(e.begin(), e.end(), ':') == 1) e = e.substr(0, e.find(':'));  // IPv4 with a port
  return ParseAddress(e);
}

}  // namespace

Result<Middleware> ClientAddress(const std::vector<std::string>& trusted) {
  std::vector<Network> proxies;
  for (const auto& t : trusted) {
    auto n = ParseNetwork(t);
    if (!n) {
      return Error::Invalid("invalid_trusted_proxy",
                            "http.trusted_proxies: '" + t + "' is not an IP address or CIDR range");
    }
    proxies.push_back(*n);
  }
  return Middleware([proxies = std::move(proxies)](Request& req, const Handler& next) {
    auto is_proxy = [&](const Address& a) {
      return std::any_of(proxies.begin(), proxies.end(), [&](const Network& n) { return n.Contains(a); });
    };
    auto forwarded = proxies.empty() ? std::nullopt : req.headers.Get("X-Forwarded-For");
    if (!forwarded) return next(req);
    auto peer = ParseAddress(req.remote_address);
    if (!peer || !is_proxy(*peer)) return next(req);
    Address client = *peer;
    std::string_view rest = *forwarded;
    while (is_proxy(client) && !rest.empty()) {
      auto comma = rest.rfind(',');
      auto entry = ForwardedEntry(comma == std::string_view::npos ? rest : rest.substr(comma + 1));
      if (!entry) break;
      client = *entry;
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(0, comma);
    }
    req.remote_address = FormatAddress(client);
    return next(req);
  });
}

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
