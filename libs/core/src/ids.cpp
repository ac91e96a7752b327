#include "smart/core/ids.hpp"

#include <chrono>
#include <cstdint>
#include <random>

namespace smart {

std::string NewUlid() {
  static constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }()};
  uint64_t ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  uint64_t hi = rng() & 0xFFFF;  // 16 random bits
  uint64_t lo = rng();           // 64 random bits
  std::string out(26, '0');
  // 128 bits = ms(48) | hi(16) | lo(64), written as 26 base32 digits (130 bits, top 2 zero).
  __extension__ typedef unsigned __int128 U128;  // NOLINT(modernize-use-using)
  U128 v = (static_cast<U128>((ms << 16) | hi) << 64) | lo;
  for (int i = 25; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kAlphabet[static_cast<unsigned>(v & 31)];
    v >>= 5;
  }
  return out;
}

std::string MakeId(std::string_view prefix) {
  std::string id;
  id.reserve(prefix.size() + 27);
  id.append(prefix).push_back('_');
  id.append(NewUlid());
  return id;
}

}  // namespace smart
