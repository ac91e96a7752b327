// WebSocket connections as handlers see them (no Beast types).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "smart/http/message.hpp"

namespace smart::http {

// Close codes of RFC 6455 §7.4.1 that Smart uses.
namespace close_code {
inline constexpr uint16_t kNormal = 1000;
inline constexpr uint16_t kGoingAway = 1001;  // server shutting down
inline constexpr uint16_t kProtocolError = 1002;
inline constexpr uint16_t kPolicyViolation = 1008;  // e.g. a slow consumer
inline constexpr uint16_t kTooBig = 1009;
inline constexpr uint16_t kInternalError = 1011;
inline constexpr uint16_t kTryAgainLater = 1013;
}  // namespace close_code

// One accepted connection. Send and Close may be called from any thread, any
// number of times; after close they do nothing.
class WebSocket {
 public:
  enum class SendResult { kQueued, kQueueFull, kClosed };

  virtual ~WebSocket() = default;
  // Queues a text message. The per-connection queue is bounded: when it is full
  // the message is dropped and kQueueFull returned, so a slow reader never grows
  // the server's memory; the caller decides whether to Close.
  SendResult Send(std::string text) { return Send(std::make_shared<const std::string>(std::move(text))); }
  // The same text for many connections (one copy), and `on_written` called on
  // the connection's thread once it is handed to the kernel (not if dropped).
  virtual SendResult Send(std::shared_ptr<const std::string> text, std::function<void()> on_written = nullptr) = 0;
  virtual void Close(uint16_t code, std::string reason) = 0;
  virtual size_t queued() const = 0;
  // The peer has said who it is: a deadline set by WsAccept::admit_or_close no longer applies.
  virtual void Admit() = 0;
};

struct WsCallbacks {
  // Called on the connection's I/O thread, one message at a time.
  std::function<void(std::string_view message)> on_message;
  // Called once when the connection ends, with the close code received or
  // sent (1006 without one, also when the handshake after the accept failed).
  std::function<void(uint16_t code)> on_close;
};

// Decides on an upgrade request: `reject` (e.g. 401) refuses it with that
// response, otherwise `callbacks` receive the connection's events.
struct WsAccept {
  std::optional<Response> reject;
  WsCallbacks callbacks;
  // Non-empty: the connection must be admitted (WebSocket::Admit, e.g. once
  // its first message authenticates it) within http.header_timeout_s, or it
  // is closed with 1008 and this reason. A peer that answers the keep-alive
  // pings would otherwise hold its connection without ever saying who it is.
  std::string admit_or_close;
};

using WsHandler = std::function<WsAccept(Request& req, std::shared_ptr<WebSocket> ws)>;

}  // namespace smart::http
