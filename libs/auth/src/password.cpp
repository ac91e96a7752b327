#include "smart/auth/password.hpp"

#include <argon2.h>

#include <stdexcept>

#include "smart/core/crypto.hpp"

namespace smart::auth {

std::string HashPassword(std::string_view password, const PasswordParams& p) {
  std::string salt = crypto::RandomBytes(16);
  constexpr size_t kHashLen = 32;
  size_t encoded_len =
      argon2_encodedlen(p.t_cost, p.m_cost_kib, p.parallelism, static_cast<uint32_t>(salt.size()), kHashLen, Argon2_id);
  std::string encoded(encoded_len, '\0');
  int rc = argon2id_hash_encoded(p.t_cost, p.m_cost_kib, p.parallelism, password.data(), password.size(), salt.data(),
                                 salt.size(), kHashLen, encoded.data(), encoded.size());
  if (rc != ARGON2_OK) throw std::runtime_error(std::string("argon2id: ") + argon2_error_message(rc));
  encoded.resize(encoded.find('\0'));
  return encoded;
}

bool VerifyPassword(std::string_view password, const std::string& encoded) {
  return argon2id_verify(encoded.c_str(), password.data(), password.size()) == ARGON2_OK;
}

}  // namespace smart::auth
