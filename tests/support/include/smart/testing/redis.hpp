// A throwaway redis-server for one test: a unix socket in a temp dir, no
// persistence; stopped (SIGKILL) and started again on the same socket to test
// what survives a Redis outage.
#pragma once

#include <memory>
#include <string>

#include "smart/testing/process.hpp"

namespace smart::testing {

class RedisServer {
 public:
  RedisServer();  // started; url() is empty if it could not start (explained on stderr)
  ~RedisServer();
  const std::string& url() const { return url_; }
  void Stop();   // SIGKILL: its data is lost
  bool Start();  // again, empty, on the same socket

 private:
  TempDir dir_;
  std::string socket_, url_;
  std::unique_ptr<Process> proc_;
};

}  // namespace smart::testing
