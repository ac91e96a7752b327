// Small helpers to write JSON text by hand on hot paths (logs, metrics labels).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace smart {

// Appends `s` as a quoted JSON string. Invalid UTF-8 becomes U+FFFD, so the
// output is always valid JSON whatever bytes a client sent.
void AppendJsonString(std::string& out, std::string_view s);

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
bool IsValidUtf8(std::string_view s);
// Code points in valid UTF-8 `s`.
size_t Utf8Length(std::string_view s);

// RFC 3339 UTC with milliseconds, e.g. 2026-11-22T10:30:00.123Z.
std::string FormatTimestampMs(int64_t unix_ms);
// RFC 3339 UTC with seconds, e.g. 2026-11-22T10:30:00Z.
std::string FormatTimestamp(int64_t unix_s);
// Parses "YYYY-MM-DDTHH:MM:SSZ" (optionally with .fraction, or a +HH:MM offset)
// to seconds since the epoch; nullopt for anything else.
std::optional<int64_t> ParseTimestamp(std::string_view text);

}  // namespace smart
