// Durable ledger transfers per second through the library, with group commit:
// `threads` callers each submit batches of `batch` random transfers between
// `accounts` funded accounts and wait for each to be durable.
//   ledger_bench [--url sqlite:/path | postgresql://...] [--threads N] [--batch N]
//                [--accounts N] [--seconds S]
// Prints one line: "transfers_per_s p50_ms p99_ms" (latency of a whole call).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "smart/ledger/ledger.hpp"

using namespace smart;
using Steady = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::string url;
  int threads = 64, batch = 1, accounts = 10000;
  double seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--url")
      url = v;
    else if (k == "--threads")
      threads = std::stoi(v);
    else if (k == "--batch")
      batch = std::stoi(v);
    else if (k == "--accounts")
      accounts = std::stoi(v);
    else if (k == "--seconds")
      seconds = std::stod(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  std::string dir;
  if (url.empty()) {
    dir = (std::filesystem::temp_directory_path() / ("ledger-bench-" + std::to_string(getpid()))).string();
    std::filesystem::create_directories(dir);
    url = "sqlite:" + dir + "/ledger.db";
  }
  auto db = store::Open(url);
  if (!db) {
    std::fprintf(stderr, "%s\n", db.error().message.c_str());
    return 1;
  }
  if (auto m = store::Migrate(**db, ledger::Ledger::Migrations()); !m) {
    std::fprintf(stderr, "%s\n", m.error().message.c_str());
    return 1;
  }
  SystemClock clock;
  ledger::LedgerConfig config;
  config.assets = {{"USDC", 6}};
  auto l = std::make_unique<ledger::Ledger>(**db, config, clock);
  auto ref = [](int i) { return ledger::AccountRef{"usr_" + std::to_string(i), "available", "USDC"}; };
  const std::string run = std::to_string(clock.NowMs());
  for (int i = 0; i < accounts; i += 1000) {
    std::vector<ledger::TransferRequest> mint;
    for (int j = i; j < std::min(accounts, i + 1000); ++j) {
      mint.push_back({.key = "mint/" + run + "/" + std::to_string(j),
                      .debit = {"platform", "issuer", "USDC"},
                      .credit = ref(j),
                      .amount = 1'000'000'000'000,
                      .code = "mint"});
    }
    if (auto r = l->Execute(mint); !r) {
      std::fprintf(stderr, "mint: %s\n", r.error().message.c_str());
      return 1;
    }
  }

  // Statistics for the freshly filled tables, as autovacuum would gather within
  // a minute: PostgreSQL otherwise keeps plans made while the tables were empty.
  if (auto a = (*db)->Transact(store::TxMode::kWrite, [](store::Tx& tx) { return tx.ExecScript("ANALYZE"); }); !a) {
    std::fprintf(stderr, "analyze: %s\n", a.error().message.c_str());
    return 1;
  }

  std::atomic<bool> stop{false};
  std::atomic<int64_t> done{0}, failed{0};
  std::vector<std::vector<double>> latencies(threads);
  std::vector<std::thread> workers;
  auto start = Steady::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t * 7919 + 1));
      int64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        std::vector<ledger::TransferRequest> reqs;
        for (int b = 0; b < batch; ++b) {
          int from = static_cast<int>(rng() % accounts), to = static_cast<int>(rng() % accounts);
          if (from == to) to = (to + 1) % accounts;
          reqs.push_back({.key = run + "/" + std::to_string(t) + "/" + std::to_string(n++),
                          .debit = ref(from),
                          .credit = ref(to),
                          .amount = 1 + rng() % 1000,
                          .code = "transfer"});
        }
        auto t0 = Steady::now();
        auto r = l->Execute(std::move(reqs));
        latencies[t].push_back(std::chrono::duration<double, std::milli>(Steady::now() - t0).count());
        if (r) {
          done += batch;
        } else {
          ++failed;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& w : workers) w.join();
  double elapsed = std::chrono::duration<double>(Steady::now() - start).count();
  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, size_t(p * all.size()))]; };
  l.reset();
  auto verify = ledger::Verify(**db);
  if (!verify || !verify->ok) {
    std::fprintf(stderr, "ledger verify failed: %s\n",
                 verify ? verify->divergence.c_str() : verify.error().message.c_str());
    return 1;
  }
  if (failed > 0) {
    std::fprintf(stderr, "%lld calls failed\n", static_cast<long long>(failed.load()));
    return 1;
  }
  std::printf("%.0f %.3f %.3f\n", static_cast<double>(done.load()) / elapsed, pct(0.5), pct(0.99));
  if (!dir.empty()) std::filesystem::remove_all(dir);
  return 0;
}
