// NewSharedRateLimiter: the in-process limiter, plus a thread that exchanges
// what it counted with the other instances through Redis.
#include <charconv>
#include <chrono>

#include "memory_rate_limiter.hpp"
#include "periodic.hpp"
#include "redis_link.hpp"

namespace smart::kv {
namespace {

// Adds each key's count to the shared state and answers it; a key this
// makes refuse requests (over its burst, or its day's quota used) is also
// announced on a stream, so that the instances that have not counted it
// lately hear of it too. KEYS[1]: that stream; KEYS[2..]: the counted keys.
// ARGV[1]: the last stream entry this instance read ('' for none yet); then
// per key five: its name without the prefix, its day (-1 for a rate), its
// interval in microseconds (0 for a day's count), the count, and its
// tolerance in microseconds (or the quota). A rate's key holds its TAT on
// Redis's clock, as the Redis limiter's script keeps it (NewRedisRateLimiter:
// one format, one namespace); a day's, its count. Returns the values (a TAT
// as a string: Lua numbers are doubles, printed with %.0f) and the stream's
// entries after ARGV[1] (at most 1,000).
constexpr std::string_view kExchangeScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local values = {}
for i = 2, #KEYS do
  local a = 2 + (i - 2) * 5
  local day, interval, count, limit = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local value, blocked
  if interval == 0 then
    value = redis.call('INCRBY', KEYS[i], count)
    redis.call('PEXPIRE', KEYS[i], 172800000)
    blocked = value >= limit
  else
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    tat = tat + count * interval
    value = string.format('%.0f', tat)
    redis.call('SET', KEYS[i], value, 'PX', math.floor((tat - now) / 1000) + 1)
    blocked = tat - now > limit
  end
  values[i - 1] = value
  if blocked then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', '10000', '*', 'k', ARGV[a], 'd', day, 'v', tostring(value))
  end
end
local from = ARGV[1] == '' and '-' or '(' .. ARGV[1]
return {values, redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 1000)}
)lua";

constexpr size_t kKeysPerCall = 256;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class SharedRateLimiter final : public RateLimiter {
 public:
  SharedRateLimiter(std::string url, std::string prefix, size_t max_keys, std::chrono::milliseconds period)
      : prefix_(std::move(prefix) + "rl:"),
        local_(max_keys, true),
        link_(std::move(url)),
        // A stopping instance sends what it counted last.
        exchange_("limits-share", period, [this](bool) { Exchange(); }) {}

  Decision Check(std::string_view key, const Limit& limit, int64_t now_ms) override {
    return local_.Check(key, limit, now_ms);
  }
  Decision Peek(std::string_view key, const Limit& limit, int64_t now_ms) override {
    return local_.Peek(key, limit, now_ms);
  }
  bool CheckDaily(std::string_view key, int64_t quota, int64_t now_ms) override {
    return local_.CheckDaily(key, quota, now_ms);
  }
  size_t size() const override { return local_.size(); }

 private:
  // Sends what was counted since the last exchange, takes in every
  // instance's totals and hears of the keys other instances found over their
  // limits. While Redis is away the counts wait (the journal is bounded); a
  // call that fails is sent again at the next exchange (its reply lost, its
  // counts may count twice: stricter for a moment, never looser).
  void Exchange() {
    std::vector<MemoryRateLimiter::Counted> counted = local_.TakeCounted();
    const std::string stream = prefix_ + "blocked";
    size_t at = 0;
    do {  // at least once: the announcements
      size_t n = std::min(kKeysPerCall, counted.size() - at);
      std::vector<std::string> owned;
      owned.reserve(n * 5 + 1);
      std::vector<std::string_view> args{"EVAL", kExchangeScript, owned.emplace_back(std::to_string(n + 1)), stream};
      for (size_t i = at; i < at + n; ++i) {
        const auto& c = counted[i];
        args.push_back(
            owned.emplace_back(c.day < 0 ? prefix_ + c.key : prefix_ + "d:" + c.key + ":" + std::to_string(c.day)));
      }
      args.push_back(last_seen_);
      for (size_t i = at; i < at + n; ++i) {
        const auto& c = counted[i];
        args.push_back(c.key);
        args.push_back(owned.emplace_back(std::to_string(c.day)));
        args.push_back(owned.emplace_back(std::to_string(c.day < 0 ? c.interval : 0)));
        args.push_back(owned.emplace_back(std::to_string(c.count)));
        args.push_back(owned.emplace_back(std::to_string(c.limit)));
      }
      auto r = link_.Command(args);
      if (!r || r->elements.size() != 2 || r->elements[0].elements.size() != n) {
        local_.Restore(std::span(counted).subspan(at));
        return;
      }
      int64_t now_ms = NowMs();
      for (size_t i = 0; i < n; ++i) {
        const auto& c = counted[at + i];
        TakeIn(c.key, c.day, r->elements[0].elements[i], now_ms);
      }
      for (const RedisReply& entry : r->elements[1].elements) {
        if (entry.elements.size() != 2) continue;
        last_seen_ = entry.elements[0].str;
        const auto& f = entry.elements[1].elements;  // k, key, d, day, v, value
        if (f.size() != 6) continue;
        TakeIn(f[1].str, Integer(f[3].str), f[5], now_ms);
      }
      at += n;
    } while (at < counted.size());
  }

  void TakeIn(std::string_view key, int64_t day, const RedisReply& value, int64_t now_ms) {
    int64_t v = value.kind == RedisReply::Kind::kInteger ? value.integer : Integer(value.str);
    if (day >= 0) {
      local_.RaiseDaily(key, day, v);
    } else {
      local_.Raise(key, v, now_ms);
    }
  }

  static int64_t Integer(std::string_view s) {
    int64_t n = 0;
    std::from_chars(s.data(), s.data() + s.size(), n);
    return n;
  }

  const std::string prefix_;
  MemoryRateLimiter local_;
  RedisLink link_;         // the exchanging thread's
  std::string last_seen_;  // the last entry read from the stream of keys over their limits
  Periodic exchange_;      // last: stops first, starts last
};

}  // namespace

std::unique_ptr<RateLimiter> NewSharedRateLimiter(std::string url, std::string prefix, size_t max_keys,
                                                  std::chrono::milliseconds period) {
  return std::make_unique<SharedRateLimiter>(std::move(url), std::move(prefix), max_keys, period);
}

}  // namespace smart::kv
