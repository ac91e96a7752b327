// The shared state of a response given later (Response::Later), between the
// handler's Reply and the server's connection waiting for it.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>

#include "smart/http/message.hpp"

namespace smart::http::detail {

struct Later {
  std::mutex mu;
  bool given = false;
  // Later(wait, on_timeout): the answer when none came by the deadline.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  std::function<Response()> on_timeout;
  std::function<Response()> make;  // null when every Reply was dropped unanswered
  std::function<void()> wake;      // set by the server while it waits; called once given
  // Middlewares' hooks (Response::Then): added and run on the connection's
  // thread (or the worker running its chain), one after the other, so unlocked.
  std::vector<std::function<void(Response&)>> then;

  bool Given() {
    std::lock_guard lk(mu);
    return given;
  }
  // The first answer wins; later ones are ignored.
  void Give(std::function<Response()> answer) {
    std::lock_guard lk(mu);
    if (given) return;
    given = true;
    make = std::move(answer);
    if (wake) wake();
  }
};

// Shared by a Reply's copies: the last one dropped answers if none did.
struct ReplyState {
  std::shared_ptr<Later> later;
  ~ReplyState() { later->Give(nullptr); }
};

}  // namespace smart::http::detail
