#include "smart/core/log.hpp"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>

#include "smart/core/json_text.hpp"

namespace smart::log {

std::string_view ToString(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "info";
}

std::optional<Level> ParseLevel(std::string_view text) {
  for (auto l : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    if (ToString(l) == text) return l;
  }
  return std::nullopt;
}

void Logger::Write(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                 .count();
  thread_local std::string line;
  line.clear();
  line.append("{\"ts\":\"").append(FormatTimestampMs(now)).append("\",\"level\":\"");
  line.append(ToString(level)).append("\",\"msg\":");
  AppendJsonString(line, msg);
  char num[32];
  for (const Field& f : fields) {
    line.push_back(',');
    AppendJsonString(line, f.key);
    line.push_back(':');
    switch (f.type) {
      case Field::Type::kString: AppendJsonString(line, f.s); break;
      case Field::Type::kInt: line.append(num, std::to_chars(num, num + sizeof num, f.i).ptr); break;
      case Field::Type::kUint: line.append(num, std::to_chars(num, num + sizeof num, f.u).ptr); break;
      case Field::Type::kDouble: {
        auto r = std::to_chars(num, num + sizeof num, f.d, std::chars_format::fixed, 3);
        line.append(num, r.ptr);
        break;
      }
      case Field::Type::kBool: line.append(f.b ? "true" : "false"); break;
    }
  }
  line.append("}\n");
  // One write(2) per line; a short write (pipe full) continues where it stopped.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // Nowhere to report a failing log sink.
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace smart::log
