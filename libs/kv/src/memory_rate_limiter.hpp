// The in-process limiter (NewMemoryRateLimiter), with what the shared one
// (NewSharedRateLimiter) builds on: a journal of what it counted, and a way
// to take in what other instances counted.
#pragma once

#include <array>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "smart/kv/rate_limiter.hpp"

namespace smart::kv {

class MemoryRateLimiter final : public RateLimiter {
 public:
  explicit MemoryRateLimiter(size_t max_keys, bool journal = false);

  Decision Check(std::string_view key, const Limit& limit, int64_t now_ms) override;
  Decision Peek(std::string_view key, const Limit& limit, int64_t now_ms) override;
  bool CheckDaily(std::string_view key, int64_t quota, int64_t now_ms) override;
  size_t size() const override;

  // What was counted since the last call (with `journal` on), a key at a time;
  // at most max_keys keys wait to be taken (more are counted here only).
  struct Counted {
    std::string key;
    int64_t interval = 0;  // a rate's, in microseconds
    int64_t limit = 0;     // a rate's tolerance (microseconds), or the day's quota
    int64_t day = -1;      // a daily quota's (UTC days since 1970); -1 for a rate
    int64_t count = 0;
  };
  std::vector<Counted> TakeCounted();
  // Counts taken and not delivered: waiting again (added to any taken since).
  void Restore(std::span<const Counted> counted);
  // What every instance counted: a key's TAT (microseconds) moves up to
  // `tat`; a day's count up to `count`. Never down (what was counted here
  // meanwhile stays counted).
  void Raise(std::string_view key, int64_t tat, int64_t now_ms);
  void RaiseDaily(std::string_view key, int64_t day, int64_t count);

 private:
  static constexpr size_t kShards = 64;
  struct DayCount {
    int64_t day = -1;
    int64_t count = 0;
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, int64_t> tat;
    std::unordered_map<uint64_t, DayCount> daily;
    std::unordered_map<uint64_t, Counted> counted;  // by the key's hash (rates) or its hash + 1 (days)
  };

  Decision Decide(std::string_view key, const Limit& limit, int64_t now_ms, bool count);
  void Evict(Shard& shard, int64_t now);
  // Adds `count` to what waits for `key` (the string made only for a key not waiting yet).
  void Journal(Shard& shard, uint64_t slot, std::string_view key, int64_t interval, int64_t limit, int64_t day,
               int64_t count);

  size_t per_shard_;
  bool journal_;
  std::array<Shard, kShards> shards_;
};

}  // namespace smart::kv
