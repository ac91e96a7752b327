// Who wants which events, indexed so that publishing an event costs its
// subscribers, never every connection: a task event looks up its owner's
// "own tasks" subscribers and the subscribers of that task id; the broadcast
// kinds (network_stats, node_status) walk their own sets. Not thread-safe:
// the owner locks.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "smart/events/bus.hpp"

namespace smart::events {

class Subscriptions {
 public:
  // Subscribers are the caller's ids. A subscriber exists from its first call.
  // Its user is set once (on authentication); task events reach only it.
  // True when set (or set already to that user); false, and nothing set, when
  // another user is set already or that user has max_per_user subscribers.
  bool SetUser(uint64_t id, std::string user, size_t max_per_user);

  // The subscription switches. Own needs a user (false without one); Task
  // refuses (false) past max_tasks ids per subscriber.
  bool Own(uint64_t id, bool on);
  void Stats(uint64_t id, bool on);
  void Nodes(uint64_t id, bool on);
  bool Task(uint64_t id, const std::string& task_id, bool on, size_t max_tasks);
  void Remove(uint64_t id);

  // What one subscriber asked for.
  struct Interest {
    std::string user;
    bool own = false, stats = false, nodes = false;
    std::unordered_set<std::string> tasks;
    bool Wants(const Event& e) const;
  };
  const Interest* Find(uint64_t id) const;  // null when unknown

  // Appends every subscriber that wants `e`, each once.
  void Match(const Event& e, std::vector<uint64_t>& out) const;

 private:
  std::unordered_map<uint64_t, Interest> subs_;
  std::unordered_map<std::string, std::unordered_set<uint64_t>> own_;      // by user
  std::unordered_map<std::string, std::unordered_set<uint64_t>> by_task_;  // by task id
  std::unordered_set<uint64_t> stats_, nodes_;
  std::unordered_map<std::string, size_t> per_user_;  // subscribers of each user
};

}  // namespace smart::events
