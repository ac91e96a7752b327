// The HTTP/1.1 + WebSocket server: Boost.Beast with C++20 coroutines behind a
// pimpl, so that no Beast or Asio header leaks to users of this library.
//
// Threads: `threads` I/O threads, each running its own event loop; a connection
// lives on one thread for its whole life. Handlers run on that I/O thread and
// must not block for long (a database read is fine), unless their route is
// marked `blocking`: then the request's middlewares and handler run on a pool
// of `worker_threads`, and the connection's thread serves others meanwhile.
// A handler whose work waits on another thread (a durable write) can instead
// answer later (Response::Later): no thread waits; the connection's thread
// writes the answer when it comes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "smart/core/result.hpp"
#include "smart/http/router.hpp"

namespace smart::log {
class Logger;
}
namespace smart::metrics {
class Registry;
}

namespace smart::http {

// Middleware wraps everything after it: call `next(req)` to continue, or answer
// directly. Change or read what `next` answered through Response::Then: a
// handler may answer later (Response::Later), after `next` has returned.
using Middleware = std::function<Response(Request& req, const Handler& next)>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;        // 0: any free port, see Server::port()
  int threads = 0;             // 0: one per core
  int worker_threads = 4;      // the pool that runs blocking handlers
  int long_poll_threads = 64;  // the pool that runs long-poll handlers: at most this many wait at once
  size_t max_connections = 10000;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1024 * 1024;
  std::chrono::seconds header_timeout{10};  // from the first byte of a request to its last header
  std::chrono::seconds body_timeout{30};    // to receive the body
  std::chrono::seconds idle_timeout{60};    // a keep-alive connection waiting for its next request
  std::chrono::seconds write_timeout{30};
  std::chrono::seconds shutdown_grace{10};  // in-flight work allowed to finish on Shutdown
  size_t ws_max_message_bytes = 1024 * 1024;
  size_t ws_send_queue_limit = 1024;         // messages queued per connection
  std::chrono::seconds ws_idle_timeout{30};  // pings at half of it; no traffic for all of it closes
};

class Server {
 public:
  // Middlewares run in order, the first outermost; the router's dispatch is innermost.
  Server(ServerOptions options, Router router, std::vector<Middleware> middlewares, log::Logger& logger,
         metrics::Registry& registry);
  ~Server();  // Shuts down if still running.
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the I/O threads; returns at once. An error names the address.
  Result<void> Start();
  // The bound port (useful with port 0). Valid after Start.
  uint16_t port() const;
  // Graceful shutdown: stops accepting, closes idle connections, lets in-flight
  // requests finish (their responses carry Connection: close) and closes
  // WebSockets with 1001, for at most shutdown_grace; then stops the threads.
  // Blocks until done. Safe to call from any thread except an I/O thread, and more than once.
  void Shutdown();

  struct Impl;  // opaque; public only so that the implementation's helpers can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace smart::http
