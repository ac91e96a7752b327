// Events shared by every smartd instance through Redis (`redis.url`).
//
// Each instance's bus forwards what it publishes to a sender thread, which
// appends batches of events to one Redis stream (`<prefix>events`) with a
// script that numbers them from a shared counter (`<prefix>events:seq`): ids
// are global and the stream's order is the ids' order. A reader thread per
// instance follows the stream and hands every event, its own included, to its
// bus, so that each instance's subscribers, replay window and `Prefer: wait`
// readers see every instance's events, in the same order. The stream keeps
// about the last `window` events; an instance that starts loads them into its
// window, so a client may resume on any instance.
//
// Redis down: events wait in a bounded queue (the oldest dropped past it) and
// are sent when it is back, in order; a batch sent again (its reply was lost)
// is appended once (each batch is named, and Redis remembers the names).
// Events dropped leave a break in the ids, so a resume across it reports a gap. A counter lost with Redis starts again
// from Redis's clock in microseconds, above any id given before.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "smart/core/result.hpp"
#include "smart/events/bus.hpp"

namespace smart::kv {
class Redis;
}

namespace smart::events {

struct RelayOptions {
  std::string url;
  std::string prefix = "smart:";            // keys: <prefix>events, <prefix>events:{seq,elect:*,batch:*}
  size_t window = 100000;                   // events the stream keeps (about: it is trimmed in whole batches)
  size_t max_queued = 100000;               // events waiting for Redis; past it the oldest are dropped
  std::chrono::milliseconds timeout{2000};  // connect and each command
  // A failure (Redis unreachable, a refused command); called again only after a success.
  std::function<void(const Error&)> on_error;
  std::function<void()> on_recovered;
};

class RedisRelay {
 public:
  // Connects, loads the stream's events into the bus's window, and from then
  // on carries every event published on `bus` through Redis. Redis
  // unreachable now is an outage like a later one (on_error is called; the
  // window is loaded, and events sent, once it answers); a URL or
  // credentials that cannot work are an error. The bus must outlive the relay.
  static Result<std::unique_ptr<RedisRelay>> Start(Bus& bus, RelayOptions options);
  // Sends what is queued (waiting up to `timeout`), then stops both threads.
  ~RedisRelay();
  RedisRelay(const RedisRelay&) = delete;
  RedisRelay& operator=(const RedisRelay&) = delete;

  // True for one instance in each `period` of Redis's clock per `name`: what
  // every instance computes alike (network_stats) is published once. False
  // when Redis cannot be reached.
  bool Elect(std::string_view name, std::chrono::milliseconds period);

  uint64_t sent() const { return sent_.load(); }          // events Redis accepted
  uint64_t received() const { return received_.load(); }  // events read back from the stream
  uint64_t dropped() const { return dropped_.load(); }    // events lost (the queue full, or refused)
  bool failing() const { return failing_.load(); }        // since the last failure, nothing succeeded

 private:
  RedisRelay(Bus& bus, RelayOptions options);
  void Enqueue(Event e);
  void SendLoop();
  // A batch is done: `lost` events refused (their ids and `skipped` left unused).
  void Sent(size_t lost, uint64_t skipped);
  // The stream's last `window` events into the bus's window, not delivered.
  Result<void> LoadWindow(kv::Redis& redis);
  void ReadLoop();
  Result<void> ReadAfter(kv::Redis& redis, bool deliver, std::chrono::milliseconds block);
  void Failed(const Error& e);
  void Succeeded();
  void Pause(int& backoff_ms);

  Bus& bus_;
  RelayOptions options_;
  std::string stream_key_, seq_key_;
  const std::string origin_;  // this instance, in each batch it appends (its own come back marked)

  std::mutex mu_;                    // the queue, skip_, sending_, stop_, and loaded_ when set
  std::condition_variable cv_;       // the sender's, for events and loaded_
  std::condition_variable paused_;   // either thread's, between attempts while Redis is away
  std::condition_variable drained_;  // the queue empty and no batch in flight
  std::deque<Event> queue_;
  uint64_t skip_ = 0;  // ids to leave unused before the next batch: events dropped
  bool sending_ = false;
  bool stop_ = false;

  std::string last_entry_ = "0-0";  // the reader's place in the stream
  std::mutex reader_mu_;            // reader_ (Interrupt from the destructor)
  std::unique_ptr<kv::Redis> reader_;
  std::mutex elect_mu_;
  std::unique_ptr<kv::Redis> elect_;

  std::atomic<bool> loaded_{false};  // the window (the reader's place in the stream) is known
  std::atomic<bool> failing_{false};
  std::atomic<uint64_t> sent_{0}, received_{0}, dropped_{0};
  std::thread sender_, reader_thread_;
};

}  // namespace smart::events
