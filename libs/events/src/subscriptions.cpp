#include "smart/events/subscriptions.hpp"

namespace smart::events {
namespace {

void Erase(std::unordered_map<std::string, std::unordered_set<uint64_t>>& index, const std::string& key, uint64_t id) {
  auto it = index.find(key);
  if (it == index.end()) return;
  it->second.erase(id);
  if (it->second.empty()) index.erase(it);
}

void Switch(std::unordered_set<uint64_t>& set, uint64_t id, bool on) {
  if (on) {
    set.insert(id);
  } else {
    set.erase(id);
  }
}

}  // namespace

bool Subscriptions::SetUser(uint64_t id, std::string user, size_t max_per_user) {
  if (auto it = subs_.find(id); it != subs_.end() && !it->second.user.empty()) return it->second.user == user;
  size_t& n = per_user_[user];
  if (n >= max_per_user) {
    if (n == 0) per_user_.erase(user);
    return false;
  }
  ++n;
  subs_[id].user = std::move(user);
  return true;
}

bool Subscriptions::Own(uint64_t id, bool on) {
  Interest& s = subs_[id];
  if (s.user.empty()) return false;
  if (on && !s.own) own_[s.user].insert(id);
  if (!on && s.own) Erase(own_, s.user, id);
  s.own = on;
  return true;
}

void Subscriptions::Stats(uint64_t id, bool on) {
  subs_[id].stats = on;
  Switch(stats_, id, on);
}

void Subscriptions::Nodes(uint64_t id, bool on) {
  subs_[id].nodes = on;
  Switch(nodes_, id, on);
}

bool Subscriptions::Task(uint64_t id, const std::string& task_id, bool on, size_t max_tasks) {
  Interest& s = subs_[id];
  if (!on) {
    if (s.tasks.erase(task_id) > 0) Erase(by_task_, task_id, id);
    return true;
  }
  if (s.tasks.count(task_id)) return true;
  if (s.tasks.size() >= max_tasks) return false;
  s.tasks.insert(task_id);
  by_task_[task_id].insert(id);
  return true;
}

void Subscriptions::Remove(uint64_t id) {
  auto it = subs_.find(id);
  if (it == subs_.end()) return;
  const Interest& s = it->second;
  if (s.own) Erase(own_, s.user, id);
  for (const auto& t : s.tasks) Erase(by_task_, t, id);
  if (!s.user.empty()) {
    auto n = per_user_.find(s.user);
    if (n != per_user_.end() && --n->second == 0) per_user_.erase(n);
  }
  stats_.erase(id);
  nodes_.erase(id);
  subs_.erase(it);
}

const Subscriptions::Interest* Subscriptions::Find(uint64_t id) const {
  auto it = subs_.find(id);
  return it == subs_.end() ? nullptr : &it->second;
}

void Subscriptions::Match(const Event& e, std::vector<uint64_t>& out) const {
  if (e.type == "network_stats") {
    out.insert(out.end(), stats_.begin(), stats_.end());
    return;
  }
  if (e.type == "node_status") {
    out.insert(out.end(), nodes_.begin(), nodes_.end());
    return;
  }
  if (e.owner.empty()) return;  // a task event always has an owner; nothing else reaches users
  if (auto it = own_.find(e.owner); it != own_.end()) out.insert(out.end(), it->second.begin(), it->second.end());
  if (auto it = by_task_.find(e.subject); it != by_task_.end()) {
    for (uint64_t id : it->second) {
      const Interest& s = subs_.at(id);
      // Only one's own tasks, ever; those already reached through "own" once.
      if (s.user == e.owner && !s.own) out.push_back(id);
    }
  }
}

bool Subscriptions::Interest::Wants(const Event& e) const {
  if (user.empty()) return false;
  if (e.type == "network_stats") return stats;
  if (e.type == "node_status") return nodes;
  if (e.owner.empty() || e.owner != user) return false;
  return own || tasks.count(e.subject) > 0;
}

}  // namespace smart::events
