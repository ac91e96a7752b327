// JSON-lines logger. One line per call, written with a single write(2) so lines
// from different threads never interleave. Thread-safe; owned by main and passed
// by reference to whoever logs.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace smart::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

std::string_view ToString(Level level);
std::optional<Level> ParseLevel(std::string_view text);

// A key and a scalar value; keys are trusted literals, values are escaped.
struct Field {
  enum class Type { kString, kInt, kUint, kDouble, kBool };
  std::string_view key;
  Type type;
  std::string_view s;
  union {
    int64_t i;
    uint64_t u;
    double d;
    bool b;
  };

  Field(std::string_view k, std::string_view v) : key(k), type(Type::kString), s(v), i(0) {}
  Field(std::string_view k, const char* v) : Field(k, std::string_view(v)) {}
  Field(std::string_view k, const std::string& v) : Field(k, std::string_view(v)) {}
  Field(std::string_view k, bool v) : key(k), type(Type::kBool), b(v) {}
  Field(std::string_view k, double v) : key(k), type(Type::kDouble), d(v) {}
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Field(std::string_view k, T v) : key(k) {
    if constexpr (std::is_signed_v<T>) {
      type = Type::kInt;
      i = v;
    } else {
      type = Type::kUint;
      u = v;
    }
  }
};

class Logger {
 public:
  // Writes to `fd` (stdout by default); the logger does not own it.
  explicit Logger(Level min_level = Level::kInfo, int fd = 1) : min_(min_level), fd_(fd) {}

  bool Enabled(Level level) const { return level >= min_; }
  void set_level(Level level) { min_ = level; }

  void Write(Level level, std::string_view msg, std::initializer_list<Field> fields = {});
  void Debug(std::string_view msg, std::initializer_list<Field> f = {}) {
    if (Enabled(Level::kDebug)) Write(Level::kDebug, msg, f);
  }
  void Info(std::string_view msg, std::initializer_list<Field> f = {}) {
    if (Enabled(Level::kInfo)) Write(Level::kInfo, msg, f);
  }
  void Warn(std::string_view msg, std::initializer_list<Field> f = {}) {
    if (Enabled(Level::kWarn)) Write(Level::kWarn, msg, f);
  }
  void Error(std::string_view msg, std::initializer_list<Field> f = {}) {
    if (Enabled(Level::kError)) Write(Level::kError, msg, f);
  }

 private:
  Level min_;
  int fd_;
};

}  // namespace smart::log
