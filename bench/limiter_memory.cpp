// Resident memory of the in-memory rate limiter holding one million distinct keys.
#include <cstdio>
#include <fstream>
#include <string>

#include "smart/kv/rate_limiter.hpp"

namespace {

long ResidentKib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

}  // namespace

int main() {
  constexpr int kKeys = 1'000'000;
  long before = ResidentKib();
  auto limiter = smart::kv::NewMemoryRateLimiter(2'000'000);
  smart::kv::Limit limit{60, 10};
  const int64_t now = 1795343400000;
  for (int i = 0; i < kKeys; ++i) limiter->Check("u:usr_01JDR6W5E8V6S4ZK1P9M" + std::to_string(i), limit, now);
  long after = ResidentKib();
  std::printf("rate limiter: %zu keys held, %.1f MiB resident for 1M keys (target <= 128 MiB)\n", limiter->size(),
              (after - before) / 1024.0);
  return 0;
}
