// Load for bench/tasks: clients submitting `echo` tasks over HTTP and
// simulated nodes (in this separate process) on the node WebSocket, taking
// pushed tasks and sending their results on the same connection.
//   tasks_sim --server URL --client-key KEY --operator-key KEY
//             [--submitters N] [--nodes N] [--credit N] [--seconds S] [--rate R] [--batch N]
// --rate paces the submitters to R tasks/s in all (0: as fast as answered);
// --batch N submits N tasks per request (POST /api/v1/tasks/batch).
// Prints: "completed_per_s submitted_per_s receive_p50_ms receive_p99_ms"
// where receive is the time from sending a submission to a node receiving
// it, and completed counts the results smartd acknowledged in the window.
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

#include "channel.hpp"
#include "smart/core/crypto.hpp"
#include "smart/http/client.hpp"

using namespace smart;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string server, client_key, operator_key;

Result<std::string> Call(const std::string& method, const std::string& key, const std::string& path,
                         const std::string& body) {
  auto r = http::Send({.method = method,
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

// Tasks the nodes completed so far, by smartd's count.
int64_t Completed(const std::vector<std::string>& nodes) {
  int64_t total = 0;
  for (const auto& id : nodes) {
    auto r = Call("GET", operator_key, "/api/v1/nodes/" + id, "");
    if (!r) return -1;
    json::value v = json::parse(*r);
    total += v.as_object().at("completed").as_int64();
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  int submitters = 8, nodes = 4, credit = 100, batch = 1;
  double seconds = 10, rate = 0;
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
    else if (k == "--credit")
      credit = std::stoi(v);
    else if (k == "--seconds")
      seconds = std::stod(v);
    else if (k == "--rate")
      rate = std::stod(v);
    else if (k == "--batch")
      batch = std::max(1, std::stoi(v));
  }
  std::vector<std::string> node_ids;
  for (int i = 0; i < nodes; ++i) {
    auto r = Call("POST", operator_key, "/api/v1/nodes/register",
                  R"({"name":"sim-)" + std::to_string(getpid()) + "-" + std::to_string(i) +
                      R"(","capabilities":["echo"],"capacity":100})");
    if (!r) {
      std::fprintf(stderr, "register: %s %s\n", r.error().code.c_str(), r.error().message.c_str());
      return 1;
    }
    json::value v = json::parse(*r);
    node_ids.emplace_back(v.as_object().at("id").as_string());
  }
  std::atomic<bool> measuring{false}, stop{false};
  std::atomic<int64_t> submitted{0}, errors{0};
  std::mutex mu;
  std::vector<double> latencies;
  std::vector<std::shared_ptr<node::Channel>> channels;
  for (const auto& id : node_ids) {
    auto holder = std::make_shared<std::weak_ptr<node::Channel>>();
    auto ch = node::Channel::Open(server, operator_key, id, credit, {}, [&, id, holder](const json::array& tasks) {
      int64_t received = NowUs();
      auto channel = holder->lock();
      for (const auto& item : tasks) {
        const auto& t = item.as_object();
        std::string input(t.at("input").as_string());
        if (measuring.load()) {
          std::lock_guard lk(mu);
          latencies.push_back(double(received - std::stoll(input)) / 1000.0);
        }
        if (!channel) continue;
        channel->Send({{"type", "result"},
                       {"credit", 1},
                       {"task_id", t.at("id")},
                       {"lease", t.at("lease")},
                       {"output", input},
                       {"proof_hash", crypto::Sha256Hex(input)}});
      }
    });
    if (!ch) {
      std::fprintf(stderr, "node socket: %s %s\n", ch.error().code.c_str(), ch.error().message.c_str());
      return 1;
    }
    std::shared_ptr<node::Channel> shared = std::move(ch).value();
    *holder = shared;
    channels.push_back(std::move(shared));
  }
  std::vector<std::thread> threads;
  for (int s = 0; s < submitters; ++s) {
    threads.emplace_back([&, s] {
      auto interval =
          rate > 0 ? std::chrono::duration<double>(submitters * batch / rate) : std::chrono::duration<double>(0);
      // Staggered: submitters starting together would send in bursts of
      // `submitters` requests, and the queue a burst makes is not the server's.
      auto next = Clock::now() + std::chrono::duration_cast<Clock::duration>(interval * s / submitters);
      while (!stop.load()) {
        if (rate > 0) {
          std::this_thread::sleep_until(next);
          next += std::chrono::duration_cast<Clock::duration>(interval);
        }
        // The input is the time the submission was sent; the node side reads it.
        std::string task = R"({"type":"echo","input":")" + std::to_string(NowUs()) + R"(","timeout_s":600})";
        std::string body = task;
        if (batch > 1) {
          body = "{\"tasks\":[" + task;
          for (int i = 1; i < batch; ++i) body += "," + task;
          body += "]}";
        }
        auto r = Call("POST", client_key, batch > 1 ? "/api/v1/tasks/batch" : "/api/v1/tasks", body);
        if (!r) {
          if (errors.fetch_add(1) == 0) std::fprintf(stderr, "a submission failed: %s\n", r.error().message.c_str());
        } else if (measuring.load()) {
          submitted += batch;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));  // warm up
  int64_t done_before = Completed(node_ids);
  measuring = true;
  auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  measuring = false;
  int64_t done_after = Completed(node_ids);
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  for (auto& t : threads) t.join();
  // Let the nodes finish the backlog (up to a minute) so that the next run starts with an empty queue.
  for (int i = 0; i < 600; ++i) {
    auto r = Call("GET", operator_key, "/api/v1/nodes/stats", "");
    if (!r) break;
    json::value v = json::parse(*r);
    const auto* pending = v.as_object().if_contains("tasks_pending");
    const auto* running = v.as_object().if_contains("tasks_running");
    if (pending && running && pending->to_number<int64_t>() == 0 && running->to_number<int64_t>() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (auto& ch : channels) ch->Close();
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    return latencies.empty() ? 0.0 : latencies[std::min(latencies.size() - 1, size_t(p * latencies.size()))];
  };
  if (errors > 0) std::fprintf(stderr, "%lld requests failed\n", static_cast<long long>(errors.load()));
  if (done_before < 0 || done_after < 0) {
    std::fprintf(stderr, "could not read the nodes' counts\n");
    return 1;
  }
  std::printf("%.0f %.0f %.2f %.2f\n", double(done_after - done_before) / elapsed, double(submitted) / elapsed,
              pct(0.5), pct(0.99));
  return 0;
}
