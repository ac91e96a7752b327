// HTTP request and response values as the rest of Smart sees them: plain
// structs with no Beast types, so that handlers and domain code stay cheap to
// compile. The server converts to and from the wire.
#pragma once

#include <any>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace smart::http {

enum class Method { kGet, kHead, kPost, kPut, kPatch, kDelete, kOptions, kOther };

std::string_view ToString(Method m);
Method ParseMethod(std::string_view text);

bool IEquals(std::string_view a, std::string_view b);

// An ordered list of header fields with case-insensitive lookup.
class Headers {
 public:
  std::optional<std::string_view> Get(std::string_view name) const;
  // Replaces every field named `name` with one field.
  void Set(std::string_view name, std::string value);
  void Add(std::string name, std::string value) { fields_.emplace_back(std::move(name), std::move(value)); }
  void Remove(std::string_view name);
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

struct Request {
  Method method = Method::kGet;
  std::string method_text;  // as received, e.g. "GET"
  std::string target;       // "/api/v1/tasks?limit=5"
  std::string path;         // "/api/v1/tasks", percent-decoding not applied
  std::string query;        // "limit=5"
  Headers headers;
  std::string body;
  std::string remote_address;
  bool keep_alive = true;

  // Filled by the server before the middleware chain runs. `route` and `allow`
  // point into the server's router, which outlives every request.
  std::string_view route;  // the matched pattern ("/api/v1/tasks/{id}"), or "" when none matched
  std::vector<std::pair<std::string, std::string>> params;  // path parameters, percent-decoded
  std::string_view allow;  // methods the path accepts, for Allow and CORS ("GET, HEAD, OPTIONS")
  std::string request_id;
  // Set by middlewares for the handlers after them (e.g. the authenticated caller).
  std::any context;

  // A path parameter by name; empty when absent.
  std::string_view Param(std::string_view name) const;
  // The first value of a query parameter, percent-decoded; nullopt when absent.
  std::optional<std::string> Query(std::string_view name) const;
};

struct Response;
namespace detail {
struct Later;
struct ReplyState;
}  // namespace detail

// How a request answered later (Response::Later) is answered: call it once,
// from any thread, with a function that makes the response. The server runs
// that function on the request's connection thread, where the request (which
// it may read) is still alive. If every copy is dropped unanswered, the
// request is answered 500 internal_error.
class Reply {
 public:
  void operator()(std::function<Response()> make) const;

 private:
  friend struct Response;
  std::shared_ptr<detail::ReplyState> state_;
};

struct Response {
  int status = 200;
  Headers headers;
  std::string body;
  // Set for a response to come (Later): the server waits for it.
  std::shared_ptr<detail::Later> later;

  static Response Json(int status, std::string body);
  static Response Text(int status, std::string body, std::string content_type = "text/plain; charset=utf-8");
  static Response Empty(int status);
  // A response given later through the Reply, for work that finishes on
  // another thread (a durable write): the connection waits for it without
  // holding a thread, where a `blocking` route would hold a worker. What the
  // handler returns is a placeholder (status 0): middlewares must change or
  // read a response through Then, which sees the final one.
  static std::pair<Response, Reply> Later();
  // The same with a deadline: if no answer came within `wait`, or the server
  // is shutting down, the request is answered by `on_timeout` (on the
  // connection's thread; a Reply given afterwards is ignored). For long polls.
  static std::pair<Response, Reply> Later(std::chrono::milliseconds wait, std::function<Response()> on_timeout);
  // Runs `fn` on this response now or, for a Later one, on the final
  // response once it is given (on the connection's thread, before it is
  // written; hooks run in the order they were added).
  template <class Fn>
  void Then(Fn&& fn) {
    if (later) {
      ThenLater(std::function<void(Response&)>(std::forward<Fn>(fn)));
    } else {
      fn(*this);
    }
  }

 private:
  void ThenLater(std::function<void(Response&)> fn);
};

// A validation failure of one field, listed in a problem's `errors`.
struct FieldError {
  std::string field;
  std::string message;
};

// An RFC 9457 problem. `code` is the stable snake_case machine code clients
// branch on; `detail` is for people and never carries internals or secrets.
struct Problem {
  int status = 500;
  std::string code;
  std::string detail;
  std::vector<FieldError> errors;
  std::string title;  // defaults to the status's reason phrase
};

// An application/problem+json response carrying the request's id.
Response MakeProblem(const Request& req, const Problem& problem);
// The same, when no parsed request exists (malformed input at the connection level).
Response MakeProblem(std::string_view request_id, const Problem& problem);

std::string_view ReasonPhrase(int status);

// Percent-decodes `s`; '+' is kept unless `plus_is_space`. nullopt on a bad escape.
std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space = false);

}  // namespace smart::http
