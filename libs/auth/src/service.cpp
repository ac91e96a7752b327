#include "smart/auth/service.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "smart/core/crypto.hpp"
#include "smart/core/ids.hpp"
#include "smart/core/json_text.hpp"

namespace smart::auth {
namespace {

using store::Value;

constexpr size_t kMaxPasswordBytes = 1024;  // Argon2 input is bounded: long inputs cost time
constexpr size_t kMaxNameChars = 100;

// Valid UTF-8 without control characters.
bool ValidText(std::string_view s) {
  if (!IsValidUtf8(s)) return false;
  return std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

Result<User> ReadUser(store::Tx& tx, std::string_view column, std::string_view value, std::string* password_hash) {
  std::string sql = "SELECT id, email, name, role, status, created_at, password_hash, tier FROM users WHERE " +
                    std::string(column) + " = $1";
  auto row = tx.QueryOne(sql, {Value{std::string(value)}});
  if (!row) return row.take_error();
  if (!*row) return Error::NotFound("user_not_found", "no such user");
  const auto& r = **row;
  if (password_hash) *password_hash = r.Text(6);
  return User{r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.Text(4), r.Text(5), r.Text(7)};
}

Error InvalidCredentials() { return Error::Unauthenticated("invalid_credentials", "the email or password is wrong"); }
Error InvalidRefresh() { return Error::Unauthenticated("invalid_refresh_token", "the refresh token is not valid"); }

}  // namespace

AuthService::AuthService(store::Database& db, AuthConfig config, const Clock& clock)
    : db_(db), config_(std::move(config)), clock_(clock) {
  for (const auto& k : config_.keys) {
    if (k.kid == config_.active_kid) active_key_ = &k;
  }
  if (!active_key_) {
    std::fprintf(stderr, "BUG: auth: active key id '%s' is not among the keys\n", config_.active_kid.c_str());
    std::abort();
  }
  dummy_hash_ = HashPassword(crypto::RandomToken(16), config_.password);
}

std::optional<std::string> AuthService::NormalizeEmail(std::string_view email) {
  while (!email.empty() && (email.front() == ' ' || email.front() == '\t')) email.remove_prefix(1);
  while (!email.empty() && (email.back() == ' ' || email.back() == '\t')) email.remove_suffix(1);
  if (email.empty() || email.size() > 254) return std::nullopt;
  auto at = email.find('@');
  if (at == 0 || at == std::string_view::npos || email.find('@', at + 1) != std::string_view::npos) return std::nullopt;
  auto domain = email.substr(at + 1);
  if (domain.size() < 3 || domain.find('.') == std::string_view::npos || domain.front() == '.' ||
      domain.back() == '.') {
    return std::nullopt;
  }
  std::string out;
  for (char c : email) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '"' || c == '\\' || c == ',' || c == '<' || c == '>') return std::nullopt;
    out.push_back(static_cast<char>(u < 0x80 ? std::tolower(u) : u));
  }
  if (!ValidText(out)) return std::nullopt;
  return out;
}

Result<User> AuthService::Register(std::string_view email, std::string_view password, std::string_view name,
                                   std::string_view role) {
  auto normalized = NormalizeEmail(email);
  if (!normalized) return Error::Invalid("invalid_email", "email: not a valid email address");
  if (password.size() < config_.min_password_length) {
    return Error::Invalid("weak_password",
                          "password: must be at least " + std::to_string(config_.min_password_length) + " characters");
  }
  if (password.size() > kMaxPasswordBytes) return Error::Invalid("invalid_password", "password: at most 1024 bytes");
  if (name.empty() || Utf8Length(name) > kMaxNameChars || !ValidText(name)) {
    return Error::Invalid("invalid_name", "name: 1 to 100 characters of text");
  }
  if (role != "user" && role != "node" && role != "admin")
    return Error::Invalid("invalid_role", "role: user, node or admin");
  User user{MakeId("usr"), *normalized, std::string(name), std::string(role), "active", FormatTimestamp(clock_.NowS())};
  std::string hash = HashPassword(password, config_.password);
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    auto ins = tx.Exec(
        "INSERT INTO users (id, email, name, password_hash, role, status, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        {Value{user.id}, Value{user.email}, Value{user.name}, Value{hash}, Value{user.role}, Value{user.status},
         Value{user.created_at}});
    if (!ins) {
      if (ins.error().code == "unique_violation") {
        return Error::Conflict("email_taken", "email: an account with this email already exists");
      }
      return ins.take_error();
    }
    return AuditIn(tx, user.id, "user_registered", user.id, "");
  });
  if (!r) return r.take_error();
  return user;
}

Result<Tokens> AuthService::Issue(store::Tx& tx, const User& user, const std::string& family) {
  int64_t now = clock_.NowS();
  JwtClaims claims{config_.issuer, config_.audience, user.id, NewUlid(), user.role, now, now + config_.access_ttl_s};
  Tokens t;
  t.access_token = SignJwt(claims, *active_key_);
  t.refresh_token = "rt_" + crypto::RandomToken(32);
  t.expires_in = config_.access_ttl_s;
  SMART_TRY(tx.Exec(
      "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
      {Value{crypto::Sha256Hex(t.refresh_token)}, Value{family}, Value{user.id}, Value{now + config_.refresh_ttl_s},
       Value{now}}));
  return t;
}

Result<Tokens> AuthService::Login(std::string_view email, std::string_view password, std::string_view client) {
  auto normalized = NormalizeEmail(email);
  std::string hash;
  std::optional<User> user;
  if (normalized && password.size() <= kMaxPasswordBytes) {
    auto found = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
      auto u = ReadUser(tx, "email", *normalized, &hash);
      if (u)
        user = std::move(u).value();
      else if (u.error().kind != ErrorKind::kNotFound)
        return u.take_error();
      return Ok();
    });
    if (!found) return found.take_error();
  }
  // Always one Argon2 verification, so timing does not tell unknown emails apart.
  bool ok = VerifyPassword(password.substr(0, kMaxPasswordBytes), user ? hash : dummy_hash_) && user.has_value();
  if (!ok) {
    std::string detail = "{\"email\":";
    AppendJsonString(detail, normalized.value_or(std::string(email.substr(0, 254))));
    detail += "}";
    (void)Audit(user ? user->id : "", "login_failed", user ? user->id : "", client, detail);
    return InvalidCredentials();
  }
  if (user->status != "active") {
    (void)Audit(user->id, "login_refused_disabled", user->id, client);
    return InvalidCredentials();
  }
  Tokens tokens;
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    auto t = Issue(tx, *user, MakeId("fam"));
    if (!t) return t.take_error();
    tokens = std::move(t).value();
    return AuditIn(tx, user->id, "login_succeeded", user->id, client);
  });
  if (!r) return r.take_error();
  return tokens;
}

Result<Tokens> AuthService::Refresh(std::string_view refresh_token, std::string_view client) {
  if (!refresh_token.starts_with("rt_") || refresh_token.size() > 128) return InvalidRefresh();
  std::string hash = crypto::Sha256Hex(refresh_token);
  int64_t now = clock_.NowS();
  Tokens tokens;
  bool reused = false;
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    reused = false;
    auto row =
        tx.QueryOne("SELECT family_id, user_id, expires_at, used_at, revoked FROM refresh_tokens WHERE token_hash = $1",
                    {Value{hash}});
    if (!row) return row.take_error();
    if (!*row) return InvalidRefresh();
    const auto& t = **row;
    std::string family = t.Text(0), user_id = t.Text(1);
    if (!t.IsNull(3) || t.Int(4) != 0) {
      // Reuse: someone holds a copy. End every session of this family.
      SMART_TRY(tx.Exec("UPDATE refresh_tokens SET revoked = 1 WHERE family_id = $1", {Value{family}}));
      reused = true;
      return AuditIn(tx, user_id, "refresh_token_reused", user_id, client, "{\"family\":\"" + family + "\"}");
    }
    if (t.Int(2) <= now) return Error::Unauthenticated("refresh_token_expired", "the refresh token has expired");
    auto user = ReadUser(tx, "id", user_id, nullptr);
    if (!user) return user.take_error();
    if (user->status != "active") return InvalidRefresh();
    SMART_TRY(tx.Exec("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2", {Value{now}, Value{hash}}));
    auto issued = Issue(tx, *user, family);
    if (!issued) return issued.take_error();
    tokens = std::move(issued).value();
    return Ok();
  });
  if (!r) return r.take_error();
  if (reused) {
    return Error::Unauthenticated("refresh_token_reused",
                                  "this refresh token was already used; every session of its login was revoked");
  }
  return tokens;
}

Result<void> AuthService::Logout(std::string_view refresh_token) {
  std::string hash = crypto::Sha256Hex(refresh_token);
  return db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    auto row = tx.QueryOne("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1", {Value{hash}});
    if (!row) return row.take_error();
    if (!*row) return InvalidRefresh();
    std::string user_id = (*row)->Text(1);
    SMART_TRY(tx.Exec("UPDATE refresh_tokens SET revoked = 1 WHERE family_id = $1", {Value{(*row)->Text(0)}}));
    return AuditIn(tx, user_id, "logout", user_id, "");
  });
}

std::optional<Principal> AuthService::CacheGet(std::string_view credential) {
  auto& shard = cache_[std::hash<std::string_view>{}(credential) % kCacheShards];
  std::lock_guard lock(shard.mu);
  auto it = shard.entries.find(credential);
  if (it == shard.entries.end()) return std::nullopt;
  if (it->second.epoch != cache_epoch_.load() || it->second.expires_ms <= clock_.NowMs()) {
    shard.entries.erase(it);
    return std::nullopt;
  }
  return it->second.principal;
}

void AuthService::CachePut(std::string_view credential, const Principal& p, int64_t expires_ms, uint64_t epoch) {
  auto& shard = cache_[std::hash<std::string_view>{}(credential) % kCacheShards];
  std::lock_guard lock(shard.mu);
  if (shard.entries.size() >= kCacheEntriesPerShard) shard.entries.clear();
  shard.entries[std::string(credential)] = {p, std::min(expires_ms, clock_.NowMs() + kCacheTtlMs), epoch};
}

Result<Principal> AuthService::Authenticate(std::string_view credential) {
  if (credential.size() > 8192) return Error::Unauthenticated("malformed_token", "the credential is too long");
  if (auto hit = CacheGet(credential)) return *hit;
  // Read the epoch before the database: a change racing with this lookup
  // bumps it after, so the entry stored below is already stale and unused.
  uint64_t epoch = cache_epoch_.load();
  if (credential.starts_with("sk_")) {
    auto p = AuthenticateApiKey(credential);
    if (p) CachePut(credential, *p, p->expires_ms, epoch);
    return p;
  }
  auto claims = VerifyJwt(credential, config_.keys, config_.issuer, config_.audience, clock_.NowS());
  if (!claims) return claims.take_error();
  // A disabled account stops working at once, whatever tokens it holds.
  std::string status, role, tier;
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto row = tx.QueryOne("SELECT status, role, tier FROM users WHERE id = $1", {Value{claims->sub}});
    if (!row) return row.take_error();
    if (*row) {
      status = (*row)->Text(0);
      role = (*row)->Text(1);
      tier = (*row)->Text(2);
    }
    return Ok();
  });
  if (!r) return r.take_error();
  if (status != "active") return Error::Unauthenticated("account_disabled", "the account is disabled or gone");
  // The role comes from the database, so a demotion applies to tokens already issued.
  Principal p{claims->sub, role, RoleScopes(role), "", tier, claims->exp * 1000};
  CachePut(credential, p, p.expires_ms, epoch);
  return p;
}

Result<User> AuthService::GetUser(std::string_view id) {
  User user;
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto u = ReadUser(tx, "id", id, nullptr);
    if (!u) return u.take_error();
    user = std::move(u).value();
    return Ok();
  });
  if (!r) return r.take_error();
  return user;
}

Result<User> AuthService::FindUser(std::string_view id_or_email) {
  if (id_or_email.starts_with("usr_")) return GetUser(id_or_email);
  auto email = NormalizeEmail(id_or_email);
  if (!email) return Error::NotFound("user_not_found", "no such user");
  User user;
  SMART_TRY(db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto u = ReadUser(tx, "email", *email, nullptr);
    if (!u) return u.take_error();
    user = std::move(u).value();
    return Ok();
  }));
  return user;
}

Result<User> AuthService::UpdateProfile(std::string_view id, std::optional<std::string_view> name) {
  if (name && (name->empty() || Utf8Length(*name) > kMaxNameChars || !ValidText(*name))) {
    return Error::Invalid("invalid_name", "name: 1 to 100 characters of text");
  }
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    if (name) {
      auto n = tx.Exec("UPDATE users SET name = $1, updated_at = $2 WHERE id = $3",
                       {Value{std::string(*name)}, Value{FormatTimestamp(clock_.NowS())}, Value{std::string(id)}});
      if (!n) return n.take_error();
      if (*n == 0) return Error::NotFound("user_not_found", "no such user");
    }
    return Ok();
  });
  if (!r) return r.take_error();
  return GetUser(id);
}

Result<void> AuthService::Audit(std::string_view actor, std::string_view action, std::string_view target,
                                std::string_view client, std::string_view detail_json) {
  return db_.Transact(store::TxMode::kWrite,
                      [&](store::Tx& tx) { return AuditIn(tx, actor, action, target, client, detail_json); });
}

Result<void> AuthService::AuditIn(store::Tx& tx, std::string_view actor, std::string_view action,
                                  std::string_view target, std::string_view client, std::string_view detail_json) {
  SMART_TRY(tx.Exec(
      "INSERT INTO audit_log (id, ts, actor, action, target, client, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
      {Value{MakeId("aud")}, Value{FormatTimestampMs(clock_.NowMs())}, Value{std::string(actor)},
       Value{std::string(action)}, Value{std::string(target)}, Value{std::string(client)},
       Value{std::string(detail_json)}}));
  return Ok();
}

std::vector<store::Migration> AuthService::Migrations() {
  return {
      {100, "create_auth",
       "CREATE TABLE users ("
       " id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, password_hash TEXT NOT NULL,"
       " role TEXT NOT NULL CHECK (role IN ('user', 'node', 'admin')),"
       " status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),"
       " created_at TEXT NOT NULL, updated_at TEXT NOT NULL);"
       "CREATE TABLE refresh_tokens ("
       " token_hash TEXT PRIMARY KEY, family_id TEXT NOT NULL, user_id TEXT NOT NULL REFERENCES users(id),"
       " expires_at BIGINT NOT NULL, used_at BIGINT, revoked INTEGER NOT NULL DEFAULT 0, created_at BIGINT NOT NULL);"
       "CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);"
       "CREATE TABLE audit_log ("
       " id TEXT PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
       " client TEXT NOT NULL, detail TEXT NOT NULL);"
       "CREATE INDEX audit_log_action ON audit_log (action);",
       ""},
      {101, "create_api_keys",
       "CREATE TABLE api_keys ("
       " id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), name TEXT NOT NULL,"
       " prefix TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, created_at TEXT NOT NULL,"
       " expires_at BIGINT, revoked_at TEXT);"
       "CREATE INDEX api_keys_user ON api_keys (user_id);",
       ""},
      {102, "add_user_tier",
       "ALTER TABLE users ADD COLUMN tier TEXT NOT NULL DEFAULT 'default' CHECK (tier IN ('free', 'default', 'pro'));",
       ""}};
}

}  // namespace smart::auth

namespace smart::auth {
namespace {

using store::Value;

std::string JoinScopes(const std::vector<std::string>& scopes) {
  std::string out;
  for (const auto& s : scopes) out += (out.empty() ? "" : " ") + s;
  return out;
}

std::vector<std::string> SplitScopes(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    auto sp = text.find(' ');
    if (sp != 0) out.emplace_back(text.substr(0, sp));
    if (sp == std::string_view::npos) break;
    text.remove_prefix(sp + 1);
  }
  return out;
}

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

const std::vector<std::string>& AllScopes() {
  static const std::vector<std::string> all = {std::string(scope::kTasksRead),   std::string(scope::kTasksWrite),
                                               std::string(scope::kNodes),       std::string(scope::kLedgerRead),
                                               std::string(scope::kLedgerWrite), std::string(scope::kAdmin)};
  return all;
}

std::vector<std::string> RoleScopes(std::string_view role) {
  if (role == "admin") return AllScopes();
  if (role == "user") {
    return {std::string(scope::kTasksRead), std::string(scope::kTasksWrite), std::string(scope::kNodes),
            std::string(scope::kLedgerRead), std::string(scope::kLedgerWrite)};
  }
  if (role == "node") return {std::string(scope::kNodes), std::string(scope::kTasksRead)};
  return {};
}

bool Principal::Has(std::string_view s) const { return Contains(scopes, s); }

Result<CreatedApiKey> AuthService::CreateApiKey(const Principal& owner, std::string_view name,
                                                std::vector<std::string> scopes, std::optional<int64_t> expires_at) {
  if (name.empty() || name.size() > 100 || !IsValidUtf8(name) ||
      std::any_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; })) {
    return Error::Invalid("invalid_name", "name: 1 to 100 characters of text");
  }
  if (scopes.empty()) return Error::Invalid("invalid_scopes", "scopes: at least one scope");
  auto allowed = RoleScopes(owner.role);
  std::sort(scopes.begin(), scopes.end());
  scopes.erase(std::unique(scopes.begin(), scopes.end()), scopes.end());
  for (const auto& s : scopes) {
    if (!Contains(AllScopes(), s)) return Error::Invalid("invalid_scopes", "scopes: unknown scope '" + s + "'");
    if (!Contains(allowed, s)) {
      return Error::PermissionDenied("scope_not_allowed", "your role cannot grant the scope '" + s + "'");
    }
  }
  int64_t now = clock_.NowS();
  if (expires_at && *expires_at <= now) return Error::Invalid("invalid_expiry", "expires_at: must be in the future");
  CreatedApiKey out;
  std::string prefix = crypto::RandomToken(6);  // 8 characters
  out.secret = "sk_" + prefix + "_" + crypto::RandomToken(32);
  out.key = {MakeId("key"), std::string(name), "sk_" + prefix, scopes, FormatTimestamp(now), expires_at, std::nullopt};
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    SMART_TRY(
        tx.Exec("INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                {Value{out.key.id}, Value{owner.user_id}, Value{out.key.name}, Value{out.key.prefix},
                 Value{crypto::Sha256Hex(out.secret)}, Value{JoinScopes(scopes)}, Value{out.key.created_at},
                 expires_at ? Value{*expires_at} : Value{}}));
    return AuditIn(tx, owner.user_id, "api_key_created", out.key.id, "",
                   "{\"scopes\":\"" + JoinScopes(scopes) + "\",\"prefix\":\"" + out.key.prefix + "\"}");
  });
  if (!r) return r.take_error();
  return out;
}

Result<std::vector<ApiKey>> AuthService::ListApiKeys(std::string_view user_id) {
  std::vector<ApiKey> keys;
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto rows = tx.Query(
        "SELECT id, name, prefix, scopes, created_at, expires_at, revoked_at FROM api_keys WHERE user_id = $1"
        " ORDER BY id",
        {Value{std::string(user_id)}});
    if (!rows) return rows.take_error();
    for (const auto& row : *rows) {
      keys.push_back({row.Text(0), row.Text(1), row.Text(2), SplitScopes(row.Text(3)), row.Text(4),
                      row.IsNull(5) ? std::nullopt : std::optional<int64_t>(row.Int(5)),
                      row.IsNull(6) ? std::nullopt : std::optional<std::string>(row.Text(6))});
    }
    return Ok();
  });
  if (!r) return r.take_error();
  return keys;
}

Result<void> AuthService::RevokeApiKey(std::string_view user_id, std::string_view key_id) {
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    auto n = tx.Exec("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                     {Value{FormatTimestamp(clock_.NowS())}, Value{std::string(key_id)}, Value{std::string(user_id)}});
    if (!n) return n.take_error();
    if (*n == 0) return Error::NotFound("api_key_not_found", "no such active API key");
    return AuditIn(tx, user_id, "api_key_revoked", key_id, "");
  });
  CredentialsChanged();
  return r;
}

Result<Principal> AuthService::AuthenticateApiKey(std::string_view key) {
  if (key.size() > 128) return Error::Unauthenticated("invalid_api_key", "the API key is not valid");
  Principal p;
  std::string status, scopes;
  std::optional<int64_t> expires;
  bool revoked = false, found = false;
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto row = tx.QueryOne(
        "SELECT k.id, k.user_id, k.scopes, k.expires_at, k.revoked_at, u.status, u.role, u.tier"
        " FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1",
        {Value{crypto::Sha256Hex(key)}});
    if (!row) return row.take_error();
    if (!*row) return Ok();
    const auto& k = **row;
    found = true;
    p.api_key_id = k.Text(0);
    p.user_id = k.Text(1);
    scopes = k.Text(2);
    if (!k.IsNull(3)) expires = k.Int(3);
    revoked = !k.IsNull(4);
    status = k.Text(5);
    p.role = k.Text(6);
    p.tier = k.Text(7);
    return Ok();
  });
  if (!r) return r.take_error();
  if (!found || revoked) return Error::Unauthenticated("invalid_api_key", "the API key is not valid or was revoked");
  if (expires && *expires <= clock_.NowS()) return Error::Unauthenticated("api_key_expired", "the API key has expired");
  p.expires_ms = expires ? *expires * 1000 : std::numeric_limits<int64_t>::max();
  if (status != "active") return Error::Unauthenticated("account_disabled", "the account is disabled");
  // A key never holds more than its owner's role allows now (a demotion applies at once).
  auto allowed = RoleScopes(p.role);
  for (auto& s : SplitScopes(scopes)) {
    if (Contains(allowed, s)) p.scopes.push_back(std::move(s));
  }
  return p;
}

}  // namespace smart::auth

namespace smart::auth {
namespace {

// Queries fetch limit + 1 rows: the extra one says whether a next page exists.
template <class T>
Page<T> FinishPage(Page<T> page, int limit) {
  if (static_cast<int>(page.items.size()) > limit) {
    page.items.pop_back();
    page.next_cursor = page.items.back().id;
  }
  return page;
}

User UserFromRow(const store::Row& r) {
  return User{r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.Text(4), r.Text(5), r.Text(6)};
}

}  // namespace

Result<Page<User>> AuthService::ListUsers(int limit, std::string_view cursor) {
  Page<User> page;
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    page.items.clear();
    auto rows =
        tx.Query("SELECT id, email, name, role, status, created_at, tier FROM users WHERE id > $1 ORDER BY id LIMIT $2",
                 {store::Value{std::string(cursor)}, store::Value{int64_t{limit} + 1}});
    if (!rows) return rows.take_error();
    for (const auto& row : *rows) page.items.push_back(UserFromRow(row));
    return Ok();
  });
  if (!r) return r.take_error();
  return FinishPage(std::move(page), limit);
}

Result<User> AuthService::AdminUpdateUser(const Principal& admin, std::string_view id,
                                          std::optional<std::string_view> status, std::optional<std::string_view> role,
                                          std::optional<std::string_view> tier, std::string_view client) {
  if (tier && *tier != "free" && *tier != "default" && *tier != "pro") {
    return Error::Invalid("invalid_tier", "tier: free, default or pro");
  }
  if (status && *status != "active" && *status != "disabled") {
    return Error::Invalid("invalid_status", "status: active or disabled");
  }
  if (role && *role != "user" && *role != "node" && *role != "admin") {
    return Error::Invalid("invalid_role", "role: user, node or admin");
  }
  if (id == admin.user_id && (status || role)) {
    return Error::Conflict("cannot_change_self", "an admin cannot disable or demote their own account");
  }
  User before;
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    auto u = ReadUser(tx, "id", id, nullptr);
    if (!u) return u.take_error();
    before = *u;
    std::string now = FormatTimestamp(clock_.NowS());
    if (status) {
      SMART_TRY(tx.Exec("UPDATE users SET status = $1, updated_at = $2 WHERE id = $3",
                        {store::Value{std::string(*status)}, store::Value{now}, store::Value{std::string(id)}}));
      if (*status == "disabled") {
        // Sessions end with the account; access tokens are refused by Authenticate.
        SMART_TRY(tx.Exec("UPDATE refresh_tokens SET revoked = 1 WHERE user_id = $1", {store::Value{std::string(id)}}));
      }
    }
    if (role) {
      SMART_TRY(tx.Exec("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3",
                        {store::Value{std::string(*role)}, store::Value{now}, store::Value{std::string(id)}}));
    }
    if (tier) {
      SMART_TRY(tx.Exec("UPDATE users SET tier = $1, updated_at = $2 WHERE id = $3",
                        {store::Value{std::string(*tier)}, store::Value{now}, store::Value{std::string(id)}}));
    }
    // Values were checked against fixed lists above, so they need no escaping.
    std::string detail = "{\"before\":{\"status\":\"" + before.status + "\",\"role\":\"" + before.role +
                         "\",\"tier\":\"" + before.tier + "\"}";
    if (status) detail += ",\"status\":\"" + std::string(*status) + "\"";
    if (role) detail += ",\"role\":\"" + std::string(*role) + "\"";
    if (tier) detail += ",\"tier\":\"" + std::string(*tier) + "\"";
    detail += "}";
    return AuditIn(tx, admin.user_id, role ? "admin_user_role_changed" : "admin_user_updated", id, client, detail);
  });
  CredentialsChanged();
  if (!r) return r.take_error();
  return GetUser(id);
}

Result<Page<AuditEntry>> AuthService::ListAudit(int limit, std::string_view cursor,
                                                std::optional<std::string_view> action) {
  Page<AuditEntry> page;
  std::string before = cursor.empty() ? std::string("~") : std::string(cursor);  // '~' sorts after every id
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    page.items.clear();
    auto rows = action
                    ? tx.Query(
                          "SELECT id, ts, actor, action, target, client, detail FROM audit_log"
                          " WHERE id < $1 AND action = $2 ORDER BY id DESC LIMIT $3",
                          {store::Value{before}, store::Value{std::string(*action)}, store::Value{int64_t{limit} + 1}})
                    : tx.Query(
                          "SELECT id, ts, actor, action, target, client, detail FROM audit_log"
                          " WHERE id < $1 ORDER BY id DESC LIMIT $2",
                          {store::Value{before}, store::Value{int64_t{limit} + 1}});
    if (!rows) return rows.take_error();
    for (const auto& row : *rows) {
      page.items.push_back({row.Text(0), row.Text(1), row.Text(2), row.Text(3), row.Text(4), row.Text(5), row.Text(6)});
    }
    return Ok();
  });
  if (!r) return r.take_error();
  return FinishPage(std::move(page), limit);
}

}  // namespace smart::auth
