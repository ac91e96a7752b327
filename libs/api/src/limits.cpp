#include "json_body.hpp"
#include "routes_internal.hpp"
#include "smart/auth/usage.hpp"

namespace smart::api {
namespace {

void SetHeaders(http::Response& res, const kv::Decision& d) {
  res.headers.Set("RateLimit-Limit", std::to_string(d.limit));
  res.headers.Set("RateLimit-Remaining", std::to_string(d.remaining));
  res.headers.Set("RateLimit-Reset", std::to_string(d.reset_s));
}

http::Response TooMany(const http::Request& req, const kv::Decision& d, std::string code, std::string detail) {
  http::Response res = http::MakeProblem(req, {.status = 429, .code = std::move(code), .detail = std::move(detail)});
  SetHeaders(res, d);
  res.headers.Set("Retry-After", std::to_string(std::max<int64_t>(1, d.retry_after_s)));
  return res;
}

// "prefix" + id in a per-thread buffer: limiter keys cost no allocation.
std::string_view Key(std::string_view prefix, std::string_view id) {
  thread_local std::string buf;
  buf.assign(prefix).append(id);
  return buf;
}

// The tighter of two decisions is the one to report.
const kv::Decision& Tighter(const kv::Decision& a, const kv::Decision& b) { return b.remaining < a.remaining ? b : a; }

}  // namespace

bool HasCredentials(const http::Request& req) {
  return req.headers.Get("Authorization").has_value() || req.headers.Get("X-API-Key").has_value();
}

http::Middleware Limits(const Deps& deps) {
  return [&deps](http::Request& req, const http::Handler& next) {
    if (!req.path.starts_with("/api/v1/")) return next(req);
    int64_t now = deps.clock.NowMs();
    if (HasCredentials(req)) req.context = Authenticate(deps, req);
    if (!deps.limits.enabled) return next(req);

    bool auth_route = req.route.starts_with("/api/v1/auth/");
    // Each class of limit keeps its own state: one key shared by two rates would mix them.
    kv::Decision shown = auth_route ? deps.limiter.Check(Key("ipa:", req.remote_address), deps.limits.auth, now)
                                    : deps.limiter.Check(Key("ip:", req.remote_address), deps.limits.per_address, now);
    if (!shown.allowed) return TooMany(req, shown, "rate_limited", "Too many requests from this address; slow down.");

    if (const auto* who = std::any_cast<Result<auth::Principal>>(&req.context); who && who->ok()) {
      const auto& p = who->value();
      const TierLimits& tier = deps.limits.ForTier(p.tier);
      kv::Decision user = deps.limiter.Check(Key("u:", p.user_id), tier.rate, now);
      if (!user.allowed) return TooMany(req, user, "rate_limited", "Too many requests for this account; slow down.");
      shown = Tighter(shown, user);
      if (!p.api_key_id.empty()) {
        kv::Decision key = deps.limiter.Check(Key("k:", p.api_key_id), tier.rate, now);
        if (!key.allowed) return TooMany(req, key, "rate_limited", "Too many requests with this API key; slow down.");
        shown = Tighter(shown, key);
      }
      if (!deps.limiter.CheckDaily(Key("d:", p.user_id), tier.per_day, now)) {
        kv::Decision day = shown;
        day.remaining = 0;
        day.retry_after_s = 86400 - (now / 1000) % 86400;  // until midnight UTC
        return TooMany(req, day, "daily_quota_exceeded",
                       "This account has used its daily quota of " + std::to_string(tier.per_day) + " requests.");
      }
    }
    if (const auto* who = std::any_cast<Result<auth::Principal>>(&req.context); who && who->ok()) {
      deps.usage.Count(who->value().user_id, who->value().api_key_id);
    }
    http::Response res = next(req);
    res.Then([shown](http::Response& r) { SetHeaders(r, shown); });
    return res;
  };
}

bool LoginBlocked(const Deps& deps, const http::Request& req, std::string_view email, kv::Decision* out) {
  int64_t now = deps.clock.NowMs();
  auto account = deps.login_limiter.Peek("lf:a:" + std::string(email), deps.limits.login_failures, now);
  auto address = deps.login_limiter.Peek("lf:ip:" + req.remote_address, deps.limits.login_failures, now);
  *out = account.allowed ? address : account;
  return deps.limits.enabled && (!account.allowed || !address.allowed);
}

void CountLoginFailure(const Deps& deps, const http::Request& req, std::string_view email) {
  int64_t now = deps.clock.NowMs();
  deps.login_limiter.Check("lf:a:" + std::string(email), deps.limits.login_failures, now);
  deps.login_limiter.Check("lf:ip:" + req.remote_address, deps.limits.login_failures, now);
}

http::Response LoginBackoff(const http::Request& req, const kv::Decision& d) {
  return TooMany(req, d, "too_many_failed_logins", "Too many failed logins; wait before trying again.");
}

}  // namespace smart::api
