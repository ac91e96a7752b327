// Identifiers: opaque, time-ordered strings with a type prefix ("task_01J...").
#pragma once

#include <string>
#include <string_view>

namespace smart {

// A 26-character ULID (48-bit milliseconds + 80 random bits, Crockford base32):
// sorts by creation time; thread-safe; not a secret (use crypto helpers for those).
std::string NewUlid();

// prefix + "_" + ULID.
std::string MakeId(std::string_view prefix);

}  // namespace smart
