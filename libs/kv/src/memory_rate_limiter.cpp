#include "memory_rate_limiter.hpp"

#include <algorithm>

#include "gcra.hpp"

namespace smart::kv {
namespace {

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

}  // namespace

MemoryRateLimiter::MemoryRateLimiter(size_t max_keys, bool journal)
    : per_shard_(std::max<size_t>(max_keys / kShards, 16)), journal_(journal) {}

Decision MemoryRateLimiter::Check(std::string_view key, const Limit& limit, int64_t now_ms) {
  return Decide(key, limit, now_ms, true);
}

Decision MemoryRateLimiter::Peek(std::string_view key, const Limit& limit, int64_t now_ms) {
  return Decide(key, limit, now_ms, false);
}

Decision MemoryRateLimiter::Decide(std::string_view key, const Limit& limit, int64_t now_ms, bool count) {
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
  if (!count) return gcra::Allowed(p, next, now);  // as if counted: what remains after this request
  if (it == shard.tat.end()) {
    if (shard.tat.size() >= per_shard_) Evict(shard, now);
    shard.tat.emplace(h, next);
  } else {
    it->second = next;
  }
  if (journal_) Journal(shard, h, key, p.interval, p.tolerance, -1, 1);
  return gcra::Allowed(p, next, now);
}

bool MemoryRateLimiter::CheckDaily(std::string_view key, int64_t quota, int64_t now_ms) {
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
  if (journal_) Journal(shard, h + 1, key, 0, quota, day, 1);
  return true;
}

void MemoryRateLimiter::Journal(Shard& shard, uint64_t slot, std::string_view key, int64_t interval, int64_t limit,
                                int64_t day, int64_t count) {
  auto it = shard.counted.find(slot);
  if (it == shard.counted.end()) {
    if (shard.counted.size() >= per_shard_) return;  // not taken for long (Redis away): counted here only
    it = shard.counted.emplace(slot, Counted{.key = std::string(key), .interval = interval, .day = day}).first;
  }
  it->second.limit = limit;
  it->second.count += count;
}

void MemoryRateLimiter::Restore(std::span<const Counted> counted) {
  for (const Counted& c : counted) {
    uint64_t h = Hash(c.key);
    Shard& shard = shards_[h % kShards];
    std::lock_guard lock(shard.mu);
    Journal(shard, c.day < 0 ? h : h + 1, c.key, c.interval, c.limit, c.day, c.count);
  }
}

std::vector<MemoryRateLimiter::Counted> MemoryRateLimiter::TakeCounted() {
  std::vector<Counted> out;
  for (auto& shard : shards_) {
    std::unordered_map<uint64_t, Counted> taken;
    {
      std::lock_guard lock(shard.mu);
      taken.swap(shard.counted);
    }
    for (auto& [slot, c] : taken) out.push_back(std::move(c));
  }
  return out;
}

void MemoryRateLimiter::Raise(std::string_view key, int64_t tat, int64_t now_ms) {
  uint64_t h = Hash(key);
  Shard& shard = shards_[h % kShards];
  std::lock_guard lock(shard.mu);
  auto it = shard.tat.find(h);
  if (it != shard.tat.end()) {
    it->second = std::max(it->second, tat);
  } else if (tat > now_ms * 1000) {  // a TAT in the past is a full bucket: no entry
    if (shard.tat.size() >= per_shard_) Evict(shard, now_ms * 1000);
    shard.tat.emplace(h, tat);
  }
}

void MemoryRateLimiter::RaiseDaily(std::string_view key, int64_t day, int64_t count) {
  uint64_t h = Hash(key);
  Shard& shard = shards_[h % kShards];
  std::lock_guard lock(shard.mu);
  auto& slot = shard.daily[h];
  if (slot.day < day) slot = {day, 0};
  if (slot.day == day) slot.count = std::max(slot.count, count);
}

size_t MemoryRateLimiter::size() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.tat.size() + s.daily.size();
  }
  return n;
}

void MemoryRateLimiter::Evict(Shard& shard, int64_t now) {
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

std::unique_ptr<RateLimiter> NewMemoryRateLimiter(size_t max_keys) {
  return std::make_unique<MemoryRateLimiter>(max_keys);
}

}  // namespace smart::kv
