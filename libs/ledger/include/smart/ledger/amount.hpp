// Amounts of value: unsigned 128-bit integers of an asset's base units (an
// 18-decimal token needs more than 64 bits). Never floating point.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace smart::ledger {

__extension__ typedef unsigned __int128 Amount;  // NOLINT(modernize-use-using): __extension__ needs typedef

inline constexpr Amount kMaxAmount = ~Amount{0};

// Decimal digits only: no sign, no leading zeros ("0" itself is fine), at most
// 2^128 - 1. nullopt otherwise.
std::optional<Amount> ParseAmount(std::string_view digits);
std::string FormatAmount(Amount a);
// `credits - debits` as a signed decimal ("-250").
std::string FormatDifference(Amount credits, Amount debits);
// For people: "0.25 USDC" for 250000 with 6 decimals; trailing zeros dropped.
std::string DisplayAmount(Amount a, int decimals, std::string_view code, bool negative = false);

// a + b, or nullopt on overflow.
inline std::optional<Amount> CheckedAdd(Amount a, Amount b) {
  if (a > kMaxAmount - b) return std::nullopt;
  return a + b;
}

}  // namespace smart::ledger
