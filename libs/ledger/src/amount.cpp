#include "smart/ledger/amount.hpp"

#include <algorithm>

namespace smart::ledger {

std::optional<Amount> ParseAmount(std::string_view digits) {
  if (digits.empty() || digits.size() > 39) return std::nullopt;
  if (digits.size() > 1 && digits[0] == '0') return std::nullopt;
  Amount v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    auto d = static_cast<unsigned>(c - '0');
    if (v > (kMaxAmount - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

std::string FormatAmount(Amount a) {
  if (a == 0) return "0";
  std::string s;
  while (a != 0) {
    s.push_back(static_cast<char>('0' + static_cast<int>(a % 10)));
    a /= 10;
  }
  std::reverse(s.begin(), s.end());
  return s;
}

std::string FormatDifference(Amount credits, Amount debits) {
  if (credits >= debits) return FormatAmount(credits - debits);
  std::string out = FormatAmount(debits - credits);
  out.insert(out.begin(), '-');  // not "-" + s: GCC 12 warns falsely (-Wrestrict) about that
  return out;
}

std::string DisplayAmount(Amount a, int decimals, std::string_view code, bool negative) {
  std::string digits = FormatAmount(a);
  auto d = static_cast<size_t>(std::max(decimals, 0));
  if (digits.size() <= d) digits.insert(0, d + 1 - digits.size(), '0');
  std::string whole = digits.substr(0, digits.size() - d);
  std::string frac = digits.substr(digits.size() - d);
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  std::string out = negative && a != 0 ? "-" : "";
  out += whole;
  if (!frac.empty()) out += "." + frac;
  out += " ";
  out += code;
  return out;
}

}  // namespace smart::ledger
