// The node's WebSocket to smartd (/api/v1/nodes/ws): pushed assignments in,
// heartbeats and the leased operations out, each answered by a message with
// the same ref; lease messages waiting to be written together go in one
// batch frame (answered by one). One I/O thread of its own; every method is
// thread-safe.
#pragma once

#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "smart/core/result.hpp"

namespace smart::node {

class Channel {
 public:
  // Gets the array of tasks of each {"type":"tasks"} message, on the channel's thread.
  using OnTasks = std::function<void(const boost::json::array& tasks)>;
  // Gets the server's refusals of messages sent without a ref (Send), on the channel's thread.
  using OnError = std::function<void(const Error& error)>;
  // Gets the id of a task the node holds that ended without it ({"type":"cancelled"}: its owner
  // cancelled it, or other replicas agreed), on the channel's thread.
  using OnCancelled = std::function<void(const std::string& task_id)>;

  // Connects to ws://host:port/api/v1/nodes/ws of an http:// server, says
  // hello (node, credit, holding) and waits for the welcome. kUnavailable when
  // it cannot (an https:// server, no answer, refused: fall back to HTTP);
  // the server's error (node_not_yours, ...) otherwise.
  static Result<std::unique_ptr<Channel>> Open(const std::string& server, const std::string& credential,
                                               const std::string& node_id, int credit,
                                               const std::vector<std::string>& holding, OnTasks on_tasks,
                                               OnError on_error = nullptr, OnCancelled on_cancelled = nullptr,
                                               std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~Channel();  // closes

  // Sends `message` with a fresh ref and waits for its answer: the answer's
  // object, the server's refusal as an Error (lease_stale: kConflict, ...),
  // or kUnavailable when the connection is gone or nothing came in time.
  Result<boost::json::object> Call(boost::json::object message, std::chrono::milliseconds timeout);
  // Sends without waiting and without a ref (credit, heartbeats): the server
  // answers only a refusal, which goes to OnError.
  void Send(const boost::json::object& message);
  bool open() const;
  void Close();

  struct Impl;

 private:
  explicit Channel(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace smart::node
