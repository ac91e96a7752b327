// The node's loop: heartbeats, work pushed on the node WebSocket (or
// long-poll claims over HTTP while it is unavailable), a bounded pool of
// workers that start, run, and report each task under its lease, with
// back-off on network errors. Stopping stops claiming, lets running tasks finish for
// `drain`, then gives back (releases) whatever is left.
#pragma once

#include <atomic>
#include <boost/json/fwd.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "channel.hpp"
#include "executors.hpp"
#include "smart/core/log.hpp"

namespace smart::node {

struct RunnerConfig {
  std::string server;      // "http://127.0.0.1:8080"
  std::string credential;  // the node's API key
  std::string node_id;
  int workers = 2;
  int claim_wait_s = 20;
  std::chrono::milliseconds heartbeat{5000};
  std::chrono::milliseconds drain{30'000};
  // "auto": pushed work over the node WebSocket, HTTP claims while it is
  // unavailable (tried again every ws_retry); "http": HTTP claims only.
  std::string transport = "auto";
  std::chrono::milliseconds ws_retry{30'000};
};

// One call to smartd's API: the JSON answer, or the problem's code and
// detail as an Error (kUnavailable for network trouble and 5xx: retry).
Result<std::string> CallApi(const std::string& server, const std::string& credential, const std::string& method,
                            const std::string& path, const std::string& body,
                            std::chrono::milliseconds timeout = std::chrono::seconds(30));

class Runner {
 public:
  Runner(RunnerConfig config, const Executors& executors, log::Logger& logger);
  // Blocks until `stop` is set and the drain is over.
  void Run(const std::atomic<bool>& stop);

 private:
  struct Leased {
    Job job;
    int lease = 0;
  };
  static std::optional<Leased> ParseLeased(const boost::json::value& item);
  void Work();
  struct Stop;
  void Handle(const Leased& t, Stop& stop);
  // Retries `call` with back-off while it fails with kUnavailable, for up to `for_how_long`.
  Result<std::string> Retry(const std::string& path, const std::string& body, std::chrono::milliseconds for_how_long);
  // A leased operation ("start", "result", ...) with its `fields`: on the node
  // socket while it is open, else over HTTP with retries for `for_how_long`.
  Result<void> Report(const Leased& t, const std::string& op, boost::json::object fields,
                      std::chrono::milliseconds for_how_long);
  // Queues the tasks of a claim's answer or of a push; returns how many were new.
  int Accept(const boost::json::array& tasks);
  // A task held here ended without this node (the server's {"type":"cancelled"}):
  // dropped if it waits, stopped if it runs, and not reported.
  void Cancelled(const std::string& task_id);
  std::shared_ptr<Channel> channel();
  void Heartbeat();
  // Serves pushed work until the socket closes or `stop`; false if it could not open.
  bool ServeSocket(const std::atomic<bool>& stop);
  void ClaimOverHttp(const std::atomic<bool>& stop, std::chrono::milliseconds& pause);

  RunnerConfig config_;
  const Executors& executors_;
  log::Logger& logger_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Leased> queue_;
  std::set<std::string> held_;  // ids of the tasks queued or running here
  // Each running task's: `stop` ends its job (the drain, a cancellation),
  // `cancelled` says the server no longer wants it.
  struct Stop {
    std::atomic<bool> stop{false}, cancelled{false};
  };
  std::map<std::string, std::shared_ptr<Stop>> running_;
  int busy_ = 0;
  std::shared_ptr<Channel> channel_;  // the node socket while open
  bool closing_ = false;              // no new work is taken
  std::atomic<bool> cancel_{false};   // the drain is over: running jobs stop
  // The socket was ended because another connection attached as this node:
  // the next attempt waits ws_retry, so two processes sharing a node do not
  // take the socket from each other every second.
  std::atomic<bool> replaced_{false};
};

}  // namespace smart::node
