// JSON Web Tokens, HS256 only. Verification accepts exactly that algorithm:
// "none", RS256/ES256 confusion and anything else fail before any key is used.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "smart/core/result.hpp"

namespace smart::auth {

struct JwtKey {
  std::string kid;     // key id, written to the header, used to pick the key on verify
  std::string secret;  // at least 32 bytes
};

struct JwtClaims {
  std::string iss, aud, sub, jti, role;
  int64_t iat = 0, exp = 0;  // seconds since the epoch
};

std::string SignJwt(const JwtClaims& claims, const JwtKey& key);

// Errors (all ErrorKind::kUnauthenticated): malformed_token, unsupported_algorithm,
// unknown_key, bad_signature, expired_token, wrong_issuer, wrong_audience.
Result<JwtClaims> VerifyJwt(std::string_view token, std::span<const JwtKey> keys, std::string_view issuer,
                            std::string_view audience, int64_t now_s, int64_t leeway_s = 30);

}  // namespace smart::auth
