#include "smart/events/bus.hpp"

#include "smart/core/json_text.hpp"

namespace smart::events {

std::string Event::Json() const {
  std::string out = "{\"id\":" + std::to_string(id) + ",\"type\":";
  AppendJsonString(out, type);
  out += ",\"ts\":";
  AppendJsonString(out, FormatTimestampMs(ts_ms));
  out += ",\"data\":";
  out += data.empty() ? "{}" : data;
  out += "}";
  return out;
}

uint64_t Bus::Publish(std::string type, std::string owner, std::string subject, std::string data, int64_t ts_ms) {
  std::unique_lock lk(mu_);
  if (forward_) {  // under the lock: the relay unhooks itself before it goes
    Event e{0, std::move(type), ts_ms, std::move(owner), std::move(subject), std::move(data)};
    if (own_subscribers_.empty()) {
      forward_(std::move(e));
      return 0;
    }
    forward_(e);
    std::vector<Subscriber> to_call;
    to_call.reserve(own_subscribers_.size());
    for (const auto& [token, fn] : own_subscribers_) to_call.push_back(fn);
    lk.unlock();
    for (const auto& fn : to_call) fn(e);
    return 0;
  }
  uint64_t id = next_id_;
  Keep(Event{id, std::move(type), ts_ms, std::move(owner), std::move(subject), std::move(data)}, true, lk);
  return id;
}

void Bus::Forward(std::function<void(Event)> forward) {
  std::lock_guard lk(mu_);
  forward_ = std::move(forward);
}

void Bus::Receive(Event e, bool deliver, bool own) {
  std::unique_lock lk(mu_);
  if (!recent_.empty() && e.id != recent_.back().id + 1) recent_.clear();
  Keep(std::move(e), deliver, lk, own);
}

void Bus::Keep(Event e, bool deliver, std::unique_lock<std::mutex>& lk, bool own) {
  next_id_ = e.id + 1;
  recent_.push_back(e);
  while (recent_.size() > window_) recent_.pop_front();
  if (!deliver) return;
  std::vector<Subscriber> to_call;
  to_call.reserve(subscribers_.size());
  for (const auto& [token, fn] : subscribers_) {
    if (!own || !own_subscribers_.contains(token)) to_call.push_back(fn);
  }
  lk.unlock();
  // Delivered outside the lock, in id order per publisher thread.
  for (const auto& fn : to_call) fn(e);
}

uint64_t Bus::Subscribe(Subscriber fn) {
  std::lock_guard lk(mu_);
  subscribers_.emplace(next_token_, std::move(fn));
  return next_token_++;
}

uint64_t Bus::SubscribeOwn(Subscriber fn) {
  std::lock_guard lk(mu_);
  subscribers_.emplace(next_token_, fn);
  own_subscribers_.emplace(next_token_, std::move(fn));
  return next_token_++;
}

void Bus::Unsubscribe(uint64_t token) {
  std::lock_guard lk(mu_);
  subscribers_.erase(token);
  own_subscribers_.erase(token);
}

Bus::Missed Bus::Since(uint64_t last_id, const std::function<bool(const Event&)>& wanted, size_t max) const {
  std::lock_guard lk(mu_);
  Missed out;
  out.complete = last_id < next_id_ && (recent_.empty() ? last_id + 1 == next_id_ : recent_.front().id <= last_id + 1);
  if (recent_.empty() || last_id >= recent_.back().id) return out;
  // Ids in the window are consecutive: the first one after last_id is found by arithmetic.
  size_t start = last_id < recent_.front().id ? 0 : static_cast<size_t>(last_id + 1 - recent_.front().id);
  for (auto it = recent_.begin() + static_cast<std::ptrdiff_t>(start); it != recent_.end(); ++it) {
    if (!wanted(*it)) continue;
    if (out.events.size() == max) {
      out.more = true;
      break;
    }
    out.events.push_back(*it);
  }
  return out;
}

uint64_t Bus::last_id() const {
  std::lock_guard lk(mu_);
  return next_id_ - 1;
}

}  // namespace smart::events
