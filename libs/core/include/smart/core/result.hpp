// Result<T>: the value of an operation that can fail in an expected way.
// Expected failures (validation, not found, conflict, unavailable) are values;
// exceptions are reserved for bugs and abort only the current request.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace smart {

// The broad class of a failure; decides the HTTP status and whether a retry helps.
enum class ErrorKind {
  kInvalid,           // the caller's input is wrong (400/422)
  kNotFound,          // 404
  kConflict,          // unique violation, state conflict (409)
  kRetryable,         // serialization failure, busy database: retrying may succeed
  kUnavailable,       // a dependency is down (503)
  kInternal,          // a broken invariant (500)
  kUnauthenticated,   // no valid credentials (401)
  kPermissionDenied,  // valid credentials, not allowed (403)
};

struct Error {
  ErrorKind kind = ErrorKind::kInternal;
  std::string code;     // stable snake_case machine code, e.g. "unique_violation"
  std::string message;  // human detail; never contains secrets

  static Error Invalid(std::string code, std::string message) {
    return {ErrorKind::kInvalid, std::move(code), std::move(message)};
  }
  static Error NotFound(std::string code, std::string message) {
    return {ErrorKind::kNotFound, std::move(code), std::move(message)};
  }
  static Error Conflict(std::string code, std::string message) {
    return {ErrorKind::kConflict, std::move(code), std::move(message)};
  }
  static Error Retryable(std::string code, std::string message) {
    return {ErrorKind::kRetryable, std::move(code), std::move(message)};
  }
  static Error Unavailable(std::string code, std::string message) {
    return {ErrorKind::kUnavailable, std::move(code), std::move(message)};
  }
  static Error Internal(std::string code, std::string message) {
    return {ErrorKind::kInternal, std::move(code), std::move(message)};
  }
  static Error Unauthenticated(std::string code, std::string message) {
    return {ErrorKind::kUnauthenticated, std::move(code), std::move(message)};
  }
  static Error PermissionDenied(std::string code, std::string message) {
    return {ErrorKind::kPermissionDenied, std::move(code), std::move(message)};
  }
};

const char* ToString(ErrorKind kind);

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }
  Error&& take_error() {
    assert(!ok());
    return std::get<1>(std::move(v_));
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }
  Error&& take_error() {
    assert(!ok_);
    return std::move(error_);
  }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> Ok() { return {}; }

}  // namespace smart

// Evaluates `expr` (a Result); returns its error from the enclosing function on failure.
#define SMART_TRY(expr)                                                 \
  do {                                                                  \
    auto smart_try_result_ = (expr);                                    \
    if (!smart_try_result_.ok()) return smart_try_result_.take_error(); \
  } while (0)
