// A Redis connection made on demand, and made again at most once a second
// after a failure: its users decide without Redis meanwhile, instead of each
// call waiting for a connect that will fail. Not thread-safe (one user, or
// its users' lock).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "smart/kv/redis.hpp"

namespace smart::kv {

class RedisLink {
 public:
  explicit RedisLink(std::string url) : url_(std::move(url)) {}

  // One command; nullopt while Redis cannot be reached (or refused it).
  std::optional<RedisReply> Command(const std::vector<std::string_view>& args) {
    auto now = std::chrono::steady_clock::now();
    if (!redis_) {
      if (now - failed_at_ < std::chrono::seconds(1)) return std::nullopt;
      auto c = Redis::Connect(url_, std::chrono::milliseconds(500));
      if (!c) {
        failed_at_ = now;
        return std::nullopt;
      }
      redis_ = std::move(*c);
    }
    auto r = redis_->Command(args);
    if (!r) {
      if (r.error().kind == ErrorKind::kUnavailable) redis_.reset();  // unusable: connect again
      failed_at_ = now;
      return std::nullopt;
    }
    return std::move(*r);
  }

 private:
  std::string url_;
  std::unique_ptr<Redis> redis_;
  std::chrono::steady_clock::time_point failed_at_{};
};

}  // namespace smart::kv
