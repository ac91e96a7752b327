#include <algorithm>
#include <array>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "gcra.hpp"
#include "smart/kv/rate_limiter.hpp"

namespace smart::kv {
namespace {

constexpr size_t kShards = 64;

uint64_t Hash(std::string_view key) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a, then a finaliser to spread the bits
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

class MemoryRateLimiter final : public RateLimiter {
 public:
  explicit MemoryRateLimiter(size_t max_keys) : per_shard_(std::max<size_t>(max_keys / kShards, 16)) {}

  Decision Check(std::string_view key, const Limit& limit, int64_t now_ms) override {
    return Decide(key, limit, now_ms, true);
  }
  Decision Peek(std::string_view key, const Limit& limit, int64_t now_ms) override {
    return Decide(key, limit, now_ms, false);
  }

  Decision Decide(std::string_view key, const Limit& limit, int64_t now_ms, bool count) {
    // Work in microseconds so that high rates keep their precision.
    int64_t now = now_ms * 1000;
    const gcra::Params p = gcra::For(limit);
    uint64_t h = Hash(key);
    Shard& shard = shards_[h % kShards];
    std::lock_guard lock(shard.mu);
    auto it = shard.tat.find(h);
    int64_t tat = it == shard.tat.end() ? now : std::max(it->second, now);
    if (now < tat - p.tolerance) return gcra::Refused(p, tat, now);
    int64_t next = tat + p.interval;
    if (!count) {
      // As if counted: what remains after this request.
    } else if (it == shard.tat.end()) {
      if (shard.tat.size() >= per_shard_) Evict(shard, now);
      shard.tat.emplace(h, next);
    } else {
      it->second = next;
    }
    return gcra::Allowed(p, next, now);
  }

  bool CheckDaily(std::string_view key, int64_t quota, int64_t now_ms) override {
    uint64_t h = Hash(key);
    int64_t day = now_ms / 86'400'000;
    Shard& shard = shards_[h % kShards];
    std::lock_guard lock(shard.mu);
    auto& slot = shard.daily[h];
    if (slot.day != day) slot = {day, 0};
    if (slot.count >= quota) return false;
    ++slot.count;
    if (shard.daily.size() > per_shard_) {
      std::erase_if(shard.daily, [day](const auto& kv) { return kv.second.day != day; });
    }
    return true;
  }

  size_t size() const override {
    size_t n = 0;
    for (const auto& s : shards_) {
      std::lock_guard lock(s.mu);
      n += s.tat.size() + s.daily.size();
    }
    return n;
  }

 private:
  struct DayCount {
    int64_t day = -1;
    int64_t count = 0;
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, int64_t> tat;
    std::unordered_map<uint64_t, DayCount> daily;
  };

  void Evict(Shard& shard, int64_t now) {
    // A TAT in the past means a full bucket: the same as no entry at all.
    std::erase_if(shard.tat, [now](const auto& kv) { return kv.second <= now; });
    if (shard.tat.size() < per_shard_) return;
    // Still full of active keys: drop the quarter closest to full again.
    std::vector<int64_t> tats;
    tats.reserve(shard.tat.size());
    for (const auto& [k, v] : shard.tat) tats.push_back(v);
    auto cut = tats.begin() + static_cast<std::ptrdiff_t>(tats.size() / 4);
    std::nth_element(tats.begin(), cut, tats.end());
    int64_t threshold = *cut;
    std::erase_if(shard.tat, [threshold](const auto& kv) { return kv.second <= threshold; });
  }

  size_t per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace

std::unique_ptr<RateLimiter> NewMemoryRateLimiter(size_t max_keys) {
  return std::make_unique<MemoryRateLimiter>(max_keys);
}

}  // namespace smart::kv
