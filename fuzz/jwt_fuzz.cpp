// Untrusted: every Authorization header. Must never crash, and must never
// accept a token that this key did not sign.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "smart/auth/jwt.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const smart::auth::JwtKey kKey{"k1", std::string(32, 'k')};
  std::string_view token(reinterpret_cast<const char*>(data), size);
  auto r = smart::auth::VerifyJwt(token, {&kKey, 1}, "smart", "smart-api", 1795343400);
  // A forged token would need the HMAC key: acceptance means a real bug.
  if (r.ok() && token.find("forged") != std::string_view::npos) std::abort();
  return 0;
}
