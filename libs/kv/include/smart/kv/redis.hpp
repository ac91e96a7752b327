// A blocking Redis connection (hiredis underneath; its header stays out of
// this one). One connection is used by one thread at a time; a thread that
// blocks in a command (XREAD BLOCK) can be woken from another with Interrupt.
// The first Connect ignores SIGPIPE if the program left it at its default (a
// write to a server gone would end the process).
//
// URLs: redis://[[user]:password@]host[:port][/db] (port 6379, db 0 by
// default) or unix://[[user]:password@]/path/to/socket[?db=N]. Credentials
// Redis refuses are kInvalid (redis_auth_refused); a server that cannot be
// reached, or a connection lost, kUnavailable.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "smart/core/result.hpp"

namespace smart::kv {

struct RedisReply {
  enum class Kind { kNil, kInteger, kString, kStatus, kArray };
  Kind kind = Kind::kNil;
  int64_t integer = 0;
  std::string str;  // kString and kStatus
  std::vector<RedisReply> elements;
};

class Redis {
 public:
  // Connects, authenticates and selects the database; `timeout` bounds the
  // connect and every command but those that block on the server's side for
  // longer (give Command a longer one for those).
  static Result<std::unique_ptr<Redis>> Connect(std::string_view url, std::chrono::milliseconds timeout);
  ~Redis();
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  // One command. A Redis error reply is an Error (kInvalid, code "redis_error",
  // the server's text); a broken connection is kUnavailable, and the connection
  // is unusable after it (connect again).
  Result<RedisReply> Command(const std::vector<std::string_view>& args);
  // The same, waiting up to `timeout` for the reply.
  Result<RedisReply> Command(const std::vector<std::string_view>& args, std::chrono::milliseconds timeout);
  // From another thread: makes a command blocked in this connection return
  // kUnavailable at once (the connection is then unusable).
  void Interrupt();

 private:
  struct Impl;
  explicit Redis(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace smart::kv
