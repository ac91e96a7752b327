#include <charconv>
#include <chrono>
#include <mutex>
#include <optional>

#include "gcra.hpp"
#include "redis_link.hpp"
#include "smart/kv/rate_limiter.hpp"

namespace smart::kv {
namespace {

// GCRA on Redis's clock, in microseconds: KEYS[1] holds the key's theoretical
// arrival time (TAT). ARGV: interval, tolerance, count (1) or peek (0).
// Returns {allowed, TAT after the request (or the current TAT when refused),
// now}. Lua numbers are doubles: exact below 2^53 (microseconds since 1970
// are ~2^51), printed with %.0f.
constexpr std::string_view kGcraScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if now < tat - tolerance then
  return {0, string.format('%.0f', tat), string.format('%.0f', now)}
end
local next = tat + interval
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.floor((next - now) / 1000) + 1)
end
return {1, string.format('%.0f', next), string.format('%.0f', now)}
)lua";

// A fixed quota per UTC day (Redis's): KEYS[1] the day's counter. ARGV: quota.
constexpr std::string_view kDailyScript = R"lua(
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 172800000)
return 1
)lua";

int64_t Integer(const RedisReply& r) {
  int64_t n = 0;
  std::from_chars(r.str.data(), r.str.data() + r.str.size(), n);
  return n;
}

class RedisRateLimiter final : public RateLimiter {
 public:
  RedisRateLimiter(std::string url, std::string prefix, RateLimiter& fallback)
      : prefix_(std::move(prefix) + "rl:"), fallback_(fallback), link_(std::move(url)) {}

  Decision Check(std::string_view key, const Limit& limit, int64_t now_ms) override {
    return Decide(key, limit, now_ms, true);
  }
  Decision Peek(std::string_view key, const Limit& limit, int64_t now_ms) override {
    return Decide(key, limit, now_ms, false);
  }

  bool CheckDaily(std::string_view key, int64_t quota, int64_t now_ms) override {
    std::string k = prefix_ + "d:" + std::string(key) + ":" + std::to_string(now_ms / 86'400'000);
    std::string q = std::to_string(quota);
    auto r = Call({"EVAL", kDailyScript, "1", k, q});
    if (!r) return fallback_.CheckDaily(key, quota, now_ms);
    return r->integer == 1;
  }

  size_t size() const override { return fallback_.size(); }  // Redis holds (and expires) the shared keys

 private:
  Decision Decide(std::string_view key, const Limit& limit, int64_t now_ms, bool count) {
    const gcra::Params p = gcra::For(limit);
    std::string k = prefix_ + std::string(key), i = std::to_string(p.interval), t = std::to_string(p.tolerance);
    auto r = Call({"EVAL", kGcraScript, "1", k, i, t, count ? "1" : "0"});
    if (!r || r->elements.size() != 3) {
      return count ? fallback_.Check(key, limit, now_ms) : fallback_.Peek(key, limit, now_ms);
    }
    int64_t tat = Integer(r->elements[1]), now = Integer(r->elements[2]);
    return r->elements[0].integer == 1 ? gcra::Allowed(p, tat, now) : gcra::Refused(p, tat, now);
  }

  // One command on the shared connection (none for a second after a
  // failure: the fallback decides meanwhile, without a connect's wait).
  std::optional<RedisReply> Call(const std::vector<std::string_view>& args) {
    std::lock_guard lk(mu_);
    return link_.Command(args);
  }

  std::string prefix_;
  RateLimiter& fallback_;
  std::mutex mu_;
  RedisLink link_;
};

}  // namespace

std::unique_ptr<RateLimiter> NewRedisRateLimiter(std::string url, std::string prefix, RateLimiter& fallback) {
  return std::make_unique<RedisRateLimiter>(std::move(url), std::move(prefix), fallback);
}

}  // namespace smart::kv
