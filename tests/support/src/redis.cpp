#include "smart/testing/redis.hpp"

#include <csignal>
#include <cstdio>

namespace smart::testing {

RedisServer::RedisServer() : socket_(dir_.path() + "/redis.sock") {
  if (Start()) url_ = "unix://" + socket_;
}

RedisServer::~RedisServer() { Stop(); }

void RedisServer::Stop() {
  if (!proc_) return;
  proc_->Signal(SIGKILL);
  proc_->Wait();
  proc_.reset();
}

bool RedisServer::Start() {
  Stop();
  proc_ = std::make_unique<Process>(std::vector<std::string>{"/usr/bin/redis-server", "--port", "0", "--unixsocket",
                                                             socket_, "--save", "", "--appendonly", "no", "--dir",
                                                             dir_.path(), "--enable-debug-command", "local"});
  if (proc_->WaitForLine("ready to accept connections", std::chrono::seconds(10))) return true;
  std::fprintf(stderr, "redis-server did not start:\n%s\n", proc_->output().c_str());
  return false;
}

}  // namespace smart::testing
