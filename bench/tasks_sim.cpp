// Load for bench/tasks: clients submitting `echo` tasks and simulated nodes
// (in this separate process) claiming them and reporting results over HTTP.
//   tasks_sim --server URL --client-key KEY --operator-key KEY
//             [--submitters N] [--nodes N] [--batch N] [--seconds S]
// Prints: "completed_per_s submitted_per_s receive_p50_ms receive_p99_ms"
// where receive is the time from sending a submission to a node receiving it.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "smart/core/crypto.hpp"
#include "smart/http/client.hpp"

using namespace smart;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string server, client_key, operator_key;

Result<std::string> Post(const std::string& key, const std::string& path, const std::string& body) {
  auto r = http::Send({.method = "POST",
                       .url = server + path,
                       .headers = {{"X-API-Key", key}, {"Content-Type", "application/json"}},
                       .body = body,
                       .timeout = std::chrono::seconds(30)});
  if (!r) return r.take_error();
  if (r->status >= 300) return Error::Unavailable("http_" + std::to_string(r->status), r->body.substr(0, 300));
  return std::move(r->body);
}

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  int submitters = 8, nodes = 4, batch = 50;
  double seconds = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--server")
      server = v;
    else if (k == "--client-key")
      client_key = v;
    else if (k == "--operator-key")
      operator_key = v;
    else if (k == "--submitters")
      submitters = std::stoi(v);
    else if (k == "--nodes")
      nodes = std::stoi(v);
    else if (k == "--batch")
      batch = std::stoi(v);
    else if (k == "--seconds")
      seconds = std::stod(v);
  }
  std::vector<std::string> node_ids;
  for (int i = 0; i < nodes; ++i) {
    auto r = Post(operator_key, "/api/v1/nodes/register",
                  R"({"name":"sim-)" + std::to_string(getpid()) + "-" + std::to_string(i) +
                      R"(","capabilities":["echo"],"capacity":100})");
    if (!r) {
      std::fprintf(stderr, "register: %s %s\n", r.error().code.c_str(), r.error().message.c_str());
      return 1;
    }
    node_ids.push_back(std::string(json::parse(*r).as_object().at("id").as_string()));
  }
  std::atomic<bool> stop{false};
  std::atomic<int64_t> submitted{0}, completed{0}, errors{0};
  std::mutex mu;
  std::vector<double> latencies;
  std::vector<std::thread> threads;
  for (int s = 0; s < submitters; ++s) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        // The input is the time the submission was answered, filled in by the node side below.
        auto r = Post(client_key, "/api/v1/tasks",
                      R"({"type":"echo","input":")" + std::to_string(NowUs()) + R"(","timeout_s":600})");
        r ? ++submitted : ++errors;
      }
    });
  }
  for (const auto& node : node_ids) {
    threads.emplace_back([&, node] {
      while (!stop.load()) {
        auto r = Post(operator_key, "/api/v1/nodes/" + node + "/claim",
                      "{\"max\":" + std::to_string(batch) + ",\"wait_s\":1}");
        if (!r) {
          ++errors;
          continue;
        }
        int64_t received = NowUs();
        json::value answer = json::parse(*r);  // kept alive for the loop (a temporary would dangle)
        for (const auto& item : answer.as_object().at("tasks").as_array()) {
          const auto& t = item.as_object();
          std::string input(t.at("input").as_string());
          {
            std::lock_guard lk(mu);
            latencies.push_back(double(received - std::stoll(input)) / 1000.0);
          }
          std::string body = R"({"node_id":")" + node + R"(","lease":)" + std::to_string(t.at("lease").as_int64()) +
                             R"(,"output":")" + input + R"(","proof_hash":")" + crypto::Sha256Hex(input) + "\"}";
          auto done = Post(operator_key, "/api/v1/tasks/" + std::string(t.at("id").as_string()) + "/result", body);
          done ? ++completed : ++errors;
        }
      }
    });
  }
  auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& t : threads) t.join();
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    return latencies.empty() ? 0.0 : latencies[std::min(latencies.size() - 1, size_t(p * latencies.size()))];
  };
  if (errors > 0) std::fprintf(stderr, "%lld requests failed\n", static_cast<long long>(errors.load()));
  std::printf("%.0f %.0f %.2f %.2f\n", completed / elapsed, submitted / elapsed, pct(0.5), pct(0.99));
  return 0;
}
