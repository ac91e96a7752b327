// Password hashing with Argon2id (libargon2). Hashes are self-describing PHC
// strings ($argon2id$v=19$m=...,t=...,p=...$salt$hash), so parameters can be
// raised later without invalidating stored hashes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace smart::auth {

struct PasswordParams {
  uint32_t t_cost = 2;          // iterations
  uint32_t m_cost_kib = 19456;  // memory (OWASP's Argon2id minimum: 19 MiB, t=2)
  uint32_t parallelism = 1;
};

std::string HashPassword(std::string_view password, const PasswordParams& params);
// Constant-time verification; false for a malformed hash.
bool VerifyPassword(std::string_view password, const std::string& encoded);

}  // namespace smart::auth
