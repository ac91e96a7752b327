// GCRA's arithmetic, shared by the in-memory and the Redis limiters: times in
// microseconds; `tat` is the key's theoretical arrival time.
#pragma once

#include <algorithm>
#include <cstdint>

#include "smart/kv/rate_limiter.hpp"

namespace smart::kv::gcra {

inline int64_t CeilDiv(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }
inline int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

struct Params {
  int64_t interval;  // between requests at the sustained rate
  int64_t burst;
  int64_t tolerance;  // how far ahead of now the TAT may run
};

inline Params For(const Limit& limit) {
  int64_t interval = 60'000'000 / std::max<int64_t>(limit.per_minute, 1);
  int64_t burst = std::max<int64_t>(limit.burst, 1);
  return {interval, burst, interval * (burst - 1)};
}

// Refused: the key's TAT is `tat`.
inline Decision Refused(const Params& p, int64_t tat, int64_t now) {
  Decision d;
  d.limit = p.burst;
  d.retry_after_s = std::max<int64_t>(1, CeilDiv(tat - p.tolerance - now, 1'000'000));
  d.reset_s = CeilDiv(tat - now, 1'000'000);
  return d;
}

// Allowed: the key's TAT after this request is `next`.
inline Decision Allowed(const Params& p, int64_t next, int64_t now) {
  Decision d;
  d.allowed = true;
  d.limit = p.burst;
  d.remaining = std::max<int64_t>(0, FloorDiv(now + p.tolerance - next, p.interval) + 1);
  d.reset_s = CeilDiv(next - now, 1'000'000);
  return d;
}

}  // namespace smart::kv::gcra
