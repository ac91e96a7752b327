// In-process event bus: events get monotonic ids, the last `window` are kept
// so that a client reconnecting with its last id gets what it missed, and
// subscribers are called synchronously on the publisher's thread (they must
// be quick: queue, do not block). Thread-safe.
//
// Across instances (RedisRelay): events published here go to a shared log
// instead, which gives them their ids, and come back to every instance's bus
// through Receive, in the same order everywhere.
//
// Event names follow the house convention: snake_case nouns with the verb in
// a field (`task_update` {task_id, status, ...}); every event has `id`,
// `type`, `ts` and `data`. Ids are per smartd instance, or shared through the log.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace smart::events {

struct Event {
  uint64_t id = 0;
  std::string type;  // "task_update", "node_status", "network_stats"
  int64_t ts_ms = 0;
  std::string owner;    // the user it concerns; empty: public
  std::string subject;  // the task or node id, if any
  std::string data;     // a JSON object
  // The whole event as one JSON text: {"id","type","ts","data"}.
  std::string Json() const;
};

class Bus {
 public:
  // Ids start at `first_id` (smartd starts from its clock, in microseconds,
  // so that ids keep growing across restarts and a resume can tell).
  explicit Bus(size_t window = 10000, uint64_t first_id = 1) : window_(window), next_id_(first_id) {}

  // Stores and delivers an event; returns its id. With a forwarder, hands it
  // there instead and returns 0: it comes back through Receive.
  uint64_t Publish(std::string type, std::string owner, std::string subject, std::string data, int64_t ts_ms);
  // Every event published from now on goes to `forward` (called under the
  // bus's lock: it must only queue); nullptr: stored and delivered here again.
  void Forward(std::function<void(Event)> forward);
  // An event with the id the shared log gave it: kept, and delivered unless
  // `deliver` is false (the window loaded at start); `own`: published here
  // while forwarded, so SubscribeOwn's subscribers have heard it already. A
  // break in the ids (events lost on the way) empties the window first, so
  // that a resume across it reports the gap.
  void Receive(Event e, bool deliver = true, bool own = false);

  using Subscriber = std::function<void(const Event&)>;
  uint64_t Subscribe(Subscriber fn);
  // While events are forwarded, `fn` hears those published here at once, with
  // id 0, instead of at their return with an id (Receive's `own`), and the
  // others' as Subscribe's do: for what only needs to know that something
  // changed (a long-poll read), without a round trip through the shared log,
  // or while it is away. Without a forwarder it hears what Subscribe's hear.
  uint64_t SubscribeOwn(Subscriber fn);
  void Unsubscribe(uint64_t token);

  // What a reconnecting client missed: the events after `last_id` still in
  // the window that `wanted` accepts, oldest first, at most `max`. An id this
  // bus has not reached is not complete (another process's, or before a
  // restart). `wanted`
  // runs under the bus's lock: it must be quick and take no lock of its own.
  struct Missed {
    std::vector<Event> events;
    bool complete = true;  // false: some events after last_id were already dropped from the window
    bool more = false;     // more than `max` were wanted
  };
  Missed Since(uint64_t last_id, const std::function<bool(const Event&)>& wanted, size_t max) const;
  uint64_t last_id() const;

 private:
  // Appends `e` (mu_ held by `lk`) and, if `deliver`, calls the subscribers after unlocking.
  void Keep(Event e, bool deliver, std::unique_lock<std::mutex>& lk, bool own = false);

  size_t window_;
  mutable std::mutex mu_;
  std::deque<Event> recent_;
  uint64_t next_id_;
  std::map<uint64_t, Subscriber> subscribers_, own_subscribers_;
  uint64_t next_token_ = 1;
  std::function<void(Event)> forward_;
};

}  // namespace smart::events
