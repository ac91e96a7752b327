// The coordinator alone, without HTTP or WebSockets: submitters call Submit
// on threads, attached nodes (Attach + Credit, as the node WebSocket does)
// complete what is pushed to them with asynchronous results. The ceiling of
// the durable task path itself (SQLite FULL sync, or PostgreSQL), for
// comparison with bench/tasks' end-to-end figure.
//   tasks_core [--url URL] [--submitters N] [--nodes N] [--seconds S]
// Prints: "completed_per_s submitted_per_s"
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "smart/core/crypto.hpp"
#include "smart/tasks/coordinator.hpp"

using namespace smart;

int Run(const std::string& url, int submitters, int nodes, double seconds);

int main(int argc, char** argv) {
  std::string url;
  int submitters = 16, nodes = 16;
  double seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--url") {
      url = v;
    } else if (k == "--submitters") {
      submitters = std::stoi(v);
    } else if (k == "--nodes") {
      nodes = std::stoi(v);
    } else if (k == "--seconds") {
      seconds = std::stod(v);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  std::filesystem::path dir;
  if (url.empty()) {
    dir = std::filesystem::temp_directory_path() / ("tasks-core-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    url = "sqlite:" + (dir / "tasks.db").string();
  }
  int rc = Run(url, submitters, nodes, seconds);
  if (!dir.empty()) std::filesystem::remove_all(dir);
  return rc;
}

int Run(const std::string& url, int submitters, int nodes, double seconds) {
  auto db = store::Open(url);
  if (!db) {
    std::fprintf(stderr, "%s\n", db.error().message.c_str());
    return 1;
  }
  auto ms = ledger::Ledger::Migrations();
  for (auto& m : tasks::Coordinator::Migrations()) ms.push_back(m);
  if (auto m = store::Migrate(**db, ms); !m) {
    std::fprintf(stderr, "%s\n", m.error().message.c_str());
    return 1;
  }
  SystemClock clock;
  ledger::Ledger ledger(**db, {.assets = {{"USDC", 6}}}, clock);
  tasks::TasksConfig config;
  config.min_stake = 1;
  config.max_tasks_per_node = 100;
  config.max_per_requester = 1'000'000;
  tasks::Coordinator coord(**db, ledger, config, clock);
  (void)coord.UpdateSettings({.min_stake = 1, .max_tasks_per_node = 100, .min_timeout_s = 300, .max_timeout_s = 86400});
  const std::string run = std::to_string(clock.NowMs());
  for (const char* who : {"usr_client", "usr_operator"}) {
    auto r = ledger.Execute({{.key = "fund/" + run + "/" + who,
                              .debit = {"platform", "issuer", "USDC"},
                              .credit = {who, "available", "USDC"},
                              .amount = 1'000'000'000'000'000,
                              .code = "mint"}});
    if (!r) {
      std::fprintf(stderr, "fund: %s\n", r.error().message.c_str());
      return 1;
    }
  }
  std::atomic<bool> stop{false}, measuring{false};
  std::atomic<int64_t> submitted{0}, completed{0}, errors{0};
  std::vector<uint64_t> attachments(nodes);
  for (int i = 0; i < nodes; ++i) {
    auto n = coord.RegisterNode(
        "usr_operator", {.name = "core-" + run + "-" + std::to_string(i), .capabilities = {"echo"}, .capacity = 100});
    if (!n) {
      std::fprintf(stderr, "register: %s\n", n.error().message.c_str());
      return 1;
    }
    std::string node_id = n->id;
    attachments[i] = coord.Attach("usr_operator", node_id, {}, [&, node_id, i](Result<std::vector<tasks::Task>> r) {
      if (!r) {
        ++errors;
        return;
      }
      for (const auto& t : *r) {
        coord.Apply("usr_operator", node_id,
                    {.kind = tasks::LeaseOp::Kind::kResult,
                     .task_id = t.id,
                     .lease = t.attempt,
                     .output = t.input,
                     .proof_hash = crypto::Sha256Hex(t.input)},
                    [&, i](Result<tasks::Task> done) {
                      if (!done) {
                        ++errors;
                      } else if (measuring.load()) {
                        ++completed;
                      }
                      coord.Credit(attachments[i], 1);
                    });
      }
    });
    coord.Credit(attachments[i], 100);
  }
  std::vector<std::thread> threads;
  for (int s = 0; s < submitters; ++s) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        auto t = coord.Submit("usr_client", {.type = "echo", .input = "x", .timeout_s = 600}, "");
        if (!t) {
          ++errors;
        } else if (measuring.load()) {
          ++submitted;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  measuring = true;
  auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  measuring = false;
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop = true;
  for (auto& t : threads) t.join();
  for (auto a : attachments) coord.Detach(a);
  if (errors > 0) std::fprintf(stderr, "%lld operations failed\n", static_cast<long long>(errors.load()));
  std::printf("%.0f %.0f\n", double(completed) / elapsed, double(submitted) / elapsed);
  return 0;
}
