// PostgreSQL's LISTEN/NOTIFY for Database::Signal and Database::Listen.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "smart/store/store.hpp"

namespace smart::store::detail {

// One connection and one thread ("pg-signals"), started on first use; it
// reconnects with a growing pause (0.1 to 5 s) when the connection fails.
// Handles from Listen must be destroyed before this.
class PgSignals {
 public:
  explicit PgSignals(std::string url);
  ~PgSignals();
  PgSignals(const PgSignals&) = delete;
  PgSignals& operator=(const PgSignals&) = delete;

  void Signal(std::string_view channel);
  std::unique_ptr<Database::Listening> Listen(std::string channel, std::function<void()> fn);

 private:
  class Handle;
  struct Listener {
    uint64_t id;
    std::string channel;
    std::function<void()> fn;
    bool called = false;  // since the connection was made: once its channel is listened to
  };
  void Forget(uint64_t id);
  void StartLocked();
  void Poke();
  // Calls the listeners of `channel`, or with an empty channel those not
  // called since the connection was made whose channel is in `listening`.
  void Call(std::string_view channel, const std::set<std::string>& listening = {});
  void Run();

  const std::string url_;
  std::mutex call_mu_;  // held while listeners are called (Forget waits on it)
  std::mutex mu_;
  std::vector<Listener> listeners_;
  std::set<std::string> to_send_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  int wake_fd_ = -1;
  std::thread thread_;
};

}  // namespace smart::store::detail
