// The shared rate limiter's cost (NewSharedRateLimiter, redis.url): a flood of
// distinct keys (one per request: the worst case, say requests from as many
// addresses) checked for `seconds` at `rate` keys/s, against the Redis at
// `url`. Prints the hot path's cost per check (journal included) against the
// in-memory limiter's, and the exchanging thread's CPU per key and in % of a
// core, and redis-server's (its pid given) per key.
//   limiter_shared URL RATE SECONDS [REDIS_PID]
#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "smart/kv/rate_limiter.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// CPU ticks of process `pid` (0 if none).
long ProcessTicks(const std::string& pid) {
  std::ifstream stat("/proc/" + pid + "/stat");
  std::string s((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  if (s.empty()) return 0;
  long utime = 0, stime = 0;
  std::sscanf(s.substr(s.rfind(')') + 2).c_str(), "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime,
              &stime);
  return utime + stime;
}

// CPU ticks of this process's thread named `name` (0 if none).
long ThreadTicks(const std::string& name) {
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return 0;
  long ticks = 0;
  while (dirent* e = readdir(dir)) {
    std::string base = std::string("/proc/self/task/") + e->d_name;
    std::ifstream comm(base + "/comm");
    std::string c;
    if (!std::getline(comm, c) || c != name) continue;
    ticks = ProcessTicks(std::string("self/task/") + e->d_name);
  }
  closedir(dir);
  return ticks;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ns per Check of `n` distinct keys, as fast as they go.
double NsPerCheck(smart::kv::RateLimiter& limiter, int n, const std::string& prefix) {
  const smart::kv::Limit limit{600, 100};
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) limiter.Check(prefix + std::to_string(i), limit, NowMs());
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: limiter_shared URL RATE SECONDS [REDIS_PID]\n");
    return 2;
  }
  const std::string url = argv[1];
  const int rate = std::stoi(argv[2]), seconds = std::stoi(argv[3]);
  const std::string redis_pid = argc == 5 ? argv[4] : "";
  auto memory = smart::kv::NewMemoryRateLimiter();
  auto shared = smart::kv::NewSharedRateLimiter(url, "bench:");
  double memory_ns = NsPerCheck(*memory, 200'000, "ip:m"), shared_ns = NsPerCheck(*shared, 200'000, "ip:s");
  std::this_thread::sleep_for(std::chrono::seconds(1));  // those exchanged

  const smart::kv::Limit limit{600, 100};
  long t0 = ThreadTicks("limits-share"), r0 = redis_pid.empty() ? 0 : ProcessTicks(redis_pid);
  auto start = Clock::now();
  int64_t sent = 0;
  for (int ms = 0; ms < seconds * 1000; ++ms) {  // paced in 1 ms steps
    int64_t due = static_cast<int64_t>(rate) * (ms + 1) / 1000;
    for (; sent < due; ++sent) shared->Check("ip:" + std::to_string(sent), limit, NowMs());
    std::this_thread::sleep_until(start + std::chrono::milliseconds(ms + 1));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last exchanges
  long t1 = ThreadTicks("limits-share"), r1 = redis_pid.empty() ? 0 : ProcessTicks(redis_pid);
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK)), keys = static_cast<double>(sent);
  const double cpu_s = static_cast<double>(t1 - t0) / hz, redis_s = static_cast<double>(r1 - r0) / hz;
  std::printf(
      "shared rate limiter: a check %.0f ns (in memory %.0f ns); %d distinct keys/s for %d s: the exchange "
      "%.2f us of CPU a key, %.1f%% of a core",
      shared_ns, memory_ns, rate, seconds, cpu_s / keys * 1e6, cpu_s / (seconds + 0.5) * 100);
  if (!redis_pid.empty()) std::printf("; redis-server %.2f us a key", redis_s / keys * 1e6);
  std::printf("\n");
  return 0;
}
