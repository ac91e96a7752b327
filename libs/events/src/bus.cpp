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
  std::vector<Subscriber> to_call;
  Event e;
  {
    std::lock_guard lk(mu_);
    e = Event{next_id_++, std::move(type), ts_ms, std::move(owner), std::move(subject), std::move(data)};
    recent_.push_back(e);
    while (recent_.size() > window_) recent_.pop_front();
    to_call.reserve(subscribers_.size());
    for (const auto& [token, fn] : subscribers_) to_call.push_back(fn);
  }
  // Delivered outside the lock, in id order per publisher thread.
  for (const auto& fn : to_call) fn(e);
  return e.id;
}

uint64_t Bus::Subscribe(Subscriber fn) {
  std::lock_guard lk(mu_);
  subscribers_.emplace(next_token_, std::move(fn));
  return next_token_++;
}

void Bus::Unsubscribe(uint64_t token) {
  std::lock_guard lk(mu_);
  subscribers_.erase(token);
}

std::vector<Event> Bus::Since(uint64_t last_id, bool* complete) const {
  std::lock_guard lk(mu_);
  std::vector<Event> out;
  *complete = recent_.empty() ? last_id + 1 >= next_id_ : recent_.front().id <= last_id + 1;
  for (const auto& e : recent_) {
    if (e.id > last_id) out.push_back(e);
  }
  return out;
}

uint64_t Bus::last_id() const {
  std::lock_guard lk(mu_);
  return next_id_ - 1;
}

}  // namespace smart::events
