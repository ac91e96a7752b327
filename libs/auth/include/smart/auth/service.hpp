// Accounts, sessions (JWT access tokens + rotating refresh tokens) and the
// audit log. Thread-safe; all state is in the database.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "smart/auth/jwt.hpp"
#include "smart/auth/password.hpp"
#include "smart/core/clock.hpp"
#include "smart/core/page.hpp"
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
  std::string tier = "default";  // free | default | pro
};

struct Tokens {
  std::string access_token;
  std::string refresh_token;
  int64_t expires_in = 0;  // seconds, of the access token
};

// Scopes name what a credential may do; routes require one.
namespace scope {
inline constexpr std::string_view kTasksRead = "tasks:read";
inline constexpr std::string_view kTasksWrite = "tasks:write";
inline constexpr std::string_view kNodes = "nodes";
inline constexpr std::string_view kLedgerRead = "ledger:read";
inline constexpr std::string_view kLedgerWrite = "ledger:write";
inline constexpr std::string_view kAdmin = "admin";
}  // namespace scope

// Every scope there is, and those a role may hold (a session holds all of its role's).
const std::vector<std::string>& AllScopes();
std::vector<std::string> RoleScopes(std::string_view role);

struct Principal {
  std::string user_id;
  std::string role;
  std::vector<std::string> scopes;
  std::string api_key_id;  // empty for a session (JWT)
  std::string tier;        // rate-limit tier: free | default | pro
  int64_t expires_ms = 0;  // when the credential stops being valid
  bool Has(std::string_view s) const;
};

struct ApiKey {
  std::string id;  // key_<ULID>
  std::string name;
  std::string prefix;  // shown in lists: "sk_AbCdEfGh"
  std::vector<std::string> scopes;
  std::string created_at;
  std::optional<int64_t> expires_at;  // seconds since the epoch
  std::optional<std::string> revoked_at;
};

struct CreatedApiKey {
  ApiKey key;
  std::string secret;  // the whole key; shown once, stored only as a hash
};

struct AuditEntry {
  std::string id, ts, actor, action, target, client, detail;  // detail is a JSON object
};

using smart::Page;  // smart/core/page.hpp

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
  // Verifies an access token, or an API key ("sk_..."), and that its user is still active.
  Result<Principal> Authenticate(std::string_view credential);

  // Scopes must be a non-empty subset of the owner's role scopes; expiry in the future.
  Result<CreatedApiKey> CreateApiKey(const Principal& owner, std::string_view name, std::vector<std::string> scopes,
                                     std::optional<int64_t> expires_at);
  Result<std::vector<ApiKey>> ListApiKeys(std::string_view user_id);
  Result<void> RevokeApiKey(std::string_view user_id, std::string_view key_id);

  Result<User> GetUser(std::string_view id);
  // By id ("usr_…") or by email (normalised); user_not_found otherwise.
  Result<User> FindUser(std::string_view id_or_email);
  Result<User> UpdateProfile(std::string_view id, std::optional<std::string_view> name);

  // Admin. `limit` 1..500; cursors are opaque strings from a previous page.
  Result<Page<User>> ListUsers(int limit, std::string_view cursor);
  // Changes status (active|disabled) and/or role; refuses an admin's change of itself.
  Result<User> AdminUpdateUser(const Principal& admin, std::string_view id, std::optional<std::string_view> status,
                               std::optional<std::string_view> role, std::optional<std::string_view> tier,
                               std::string_view client);
  // Newest first, optionally one action only.
  Result<Page<AuditEntry>> ListAudit(int limit, std::string_view cursor, std::optional<std::string_view> action);

  Result<void> Audit(std::string_view actor, std::string_view action, std::string_view target, std::string_view client,
                     std::string_view detail_json = "{}");

  // Credentials verified are cached for up to 10 s. `fn` runs after every
  // change that empties the cache here (a key revoked; an account's status,
  // role or tier changed), so that other instances can be told (smartd sends
  // it through the event bus); set once, before serving.
  void OnCredentialsChanged(std::function<void()> fn) { on_credentials_changed_ = std::move(fn); }
  // Another instance changed credentials: forget what is cached here.
  void ForgetCachedCredentials() { InvalidateCache(); }

  static std::vector<store::Migration> Migrations();
  // "  Alice@Example.COM " -> "alice@example.com"; nullopt when not an address.
  static std::optional<std::string> NormalizeEmail(std::string_view email);

 private:
  Result<Tokens> Issue(store::Tx& tx, const User& user, const std::string& family);
  Result<Principal> AuthenticateApiKey(std::string_view key);
  // Writes an audit record inside `tx`, so that a change and its record commit together.
  Result<void> AuditIn(store::Tx& tx, std::string_view actor, std::string_view action, std::string_view target,
                       std::string_view client, std::string_view detail_json = "{}");

  // Verified credentials, kept briefly so that a request costs no signature
  // check and no database read. Any change to who may do what (disable, role,
  // tier, key revocation) bumps the epoch and so empties it at once.
  struct CachedPrincipal {
    Principal principal;
    int64_t expires_ms;
    uint64_t epoch;
  };
  struct StringHash {
    using is_transparent = void;  // look up by string_view without building a string
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct CacheShard {
    std::mutex mu;
    std::unordered_map<std::string, CachedPrincipal, StringHash, std::equal_to<>> entries;
  };
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kCacheEntriesPerShard = 4096;
  static constexpr int64_t kCacheTtlMs = 10'000;
  std::optional<Principal> CacheGet(std::string_view credential);
  void CachePut(std::string_view credential, const Principal& p, int64_t expires_ms, uint64_t epoch);
  void InvalidateCache() { cache_epoch_.fetch_add(1); }
  void CredentialsChanged() {
    InvalidateCache();
    if (on_credentials_changed_) on_credentials_changed_();
  }
  std::function<void()> on_credentials_changed_;
  std::array<CacheShard, kCacheShards> cache_;
  std::atomic<uint64_t> cache_epoch_{0};

  store::Database& db_;
  AuthConfig config_;
  const Clock& clock_;
  const JwtKey* active_key_ = nullptr;
  std::string dummy_hash_;  // verified against when the email is unknown
};

}  // namespace smart::auth
