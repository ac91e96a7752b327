// Rate limiting with GCRA (the generic cell rate algorithm): per key, a
// sustained rate and a burst, with O(1) state per key (its "theoretical
// arrival time"). Behind an interface: in memory, or shared through Redis.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace smart::kv {

struct Limit {
  int64_t per_minute = 60;  // sustained rate
  int64_t burst = 10;       // requests allowed at once
};

struct Decision {
  bool allowed = false;
  int64_t limit = 0;          // the burst: RateLimit-Limit
  int64_t remaining = 0;      // RateLimit-Remaining
  int64_t reset_s = 0;        // seconds until the full burst is available again: RateLimit-Reset
  int64_t retry_after_s = 0;  // when refused: Retry-After
};

class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  // Counts one request for `key` at `now_ms` if the limit allows it. Thread-safe.
  virtual Decision Check(std::string_view key, const Limit& limit, int64_t now_ms) = 0;
  // What Check would decide, without counting anything.
  virtual Decision Peek(std::string_view key, const Limit& limit, int64_t now_ms) = 0;
  // Counts against a fixed quota per UTC day; false once the day's quota is used.
  virtual bool CheckDaily(std::string_view key, int64_t quota, int64_t now_ms) = 0;
  virtual size_t size() const = 0;  // keys held
};

// In-process limiter: 64 shards, keys stored as 64-bit hashes (about 40 bytes
// per key), idle keys (whose state equals "no state") evicted when a shard
// passes its share of `max_keys`; past that, the stalest keys go first.
std::unique_ptr<RateLimiter> NewMemoryRateLimiter(size_t max_keys = 2'000'000);

// Shared by every instance using the same Redis (`url`, keys `<prefix>rl:*`):
// the same GCRA, decided atomically in Redis on Redis's clock (a daily quota
// counts by the caller's UTC day), one round trip a call: for limits whose
// callers wait anyway (failed logins: Argon2 dominates). While Redis cannot be reached
// (and for a second after each failure) `fallback` decides, so a Redis outage
// never stops or frees what it limits.
std::unique_ptr<RateLimiter> NewRedisRateLimiter(std::string url, std::string prefix, RateLimiter& fallback);

// Decides in process at once, as the in-memory limiter, and exchanges what it
// counted with every instance using the same Redis (`url`; the same keys and
// format as NewRedisRateLimiter's) every `period`, on a thread of its own:
// each key's count is added to the shared state and the totals come back, so
// every instance's requests count against one budget for the price of a round
// trip a period, not one a call. A key the exchange finds over its limit (its
// burst used, its day's quota reached) is announced to every instance; one
// under its limit is learned by an instance when it counts that key itself.
// Eventually consistent, then: a client firing a burst at N instances within
// one period may get up to N bursts, and nothing more until that debt is paid
// (the sustained rate and the daily quota hold overall). While Redis is away
// each instance limits on its own and keeps its counts for when it is back.
std::unique_ptr<RateLimiter> NewSharedRateLimiter(std::string url, std::string prefix, size_t max_keys = 2'000'000,
                                                  std::chrono::milliseconds period = std::chrono::milliseconds(100));

}  // namespace smart::kv
