// A thread that calls `fn(false)` every `period` and `fn(true)` once as it
// stops: what an instance shares through Redis on a period, its last share
// included. Declare it after everything `fn` uses (it is destroyed first,
// and starts last).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "smart/core/thread_name.hpp"

namespace smart::kv {

class Periodic {
 public:
  Periodic(std::string name, std::chrono::milliseconds period, std::function<void(bool last)> fn)
      : period_(period), fn_(std::move(fn)), thread_([this, name = std::move(name)] {
          NameThread(name);
          Run();
        }) {}
  ~Periodic() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Periodic(const Periodic&) = delete;
  Periodic& operator=(const Periodic&) = delete;

 private:
  void Run() {
    std::unique_lock lk(mu_);
    bool last = false;
    while (!last) {
      last = cv_.wait_for(lk, period_, [&] { return stopping_; });
      lk.unlock();
      fn_(last);
      lk.lock();
    }
  }

  const std::chrono::milliseconds period_;
  const std::function<void(bool)> fn_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once the rest is set
};

}  // namespace smart::kv
