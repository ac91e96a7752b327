// Accounts, sessions (JWT access tokens + rotating refresh tokens) and the
// audit log. Thread-safe; all state is in the database.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "smart/auth/jwt.hpp"
#include "smart/auth/password.hpp"
#include "smart/core/clock.hpp"
#include "smart/store/migrations.hpp"

namespace smart::auth {

struct AuthConfig {
  std::vector<JwtKey> keys;  // accepted keys; tokens are signed with `active_kid`
  std::string active_kid;
  std::string issuer = "smart";
  std::string audience = "smart-api";
  int64_t access_ttl_s = 900;
  int64_t refresh_ttl_s = 30 * 86400;
  size_t min_password_length = 10;
  PasswordParams password;
};

struct User {
  std::string id;  // usr_<ULID>
  std::string email;
  std::string name;
  std::string role;    // user | node | admin
  std::string status;  // active | disabled
  std::string created_at;
};

struct Tokens {
  std::string access_token;
  std::string refresh_token;
  int64_t expires_in = 0;  // seconds, of the access token
};

struct Principal {
  std::string user_id;
  std::string role;
};

class AuthService {
 public:
  AuthService(store::Database& db, AuthConfig config, const Clock& clock);

  // Validation errors are ErrorKind::kInvalid with the field in the message;
  // a taken email is kConflict "email_taken".
  Result<User> Register(std::string_view email, std::string_view password, std::string_view name,
                        std::string_view role = "user");
  // Unknown email and wrong password give the same error (invalid_credentials)
  // in about the same time, so accounts cannot be discovered.
  Result<Tokens> Login(std::string_view email, std::string_view password, std::string_view client);
  // Rotation: each refresh token works once. Presenting a used one revokes its
  // whole family (every session descended from the same login) and is audited.
  Result<Tokens> Refresh(std::string_view refresh_token, std::string_view client);
  Result<void> Logout(std::string_view refresh_token);
  // Verifies an access token and that its user is still active.
  Result<Principal> Authenticate(std::string_view access_token);

  Result<User> GetUser(std::string_view id);
  Result<User> UpdateProfile(std::string_view id, std::optional<std::string_view> name);

  Result<void> Audit(std::string_view actor, std::string_view action, std::string_view target, std::string_view client,
                     std::string_view detail_json = "{}");

  static std::vector<store::Migration> Migrations();
  // "  Alice@Example.COM " -> "alice@example.com"; nullopt when not an address.
  static std::optional<std::string> NormalizeEmail(std::string_view email);

 private:
  Result<Tokens> Issue(store::Tx& tx, const User& user, const std::string& family);

  store::Database& db_;
  AuthConfig config_;
  const Clock& clock_;
  const JwtKey* active_key_ = nullptr;
  std::string dummy_hash_;  // verified against when the email is unknown
};

}  // namespace smart::auth
