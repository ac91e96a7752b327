#include "smart/auth/service.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

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

size_t Utf8Length(std::string_view s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

Result<User> ReadUser(store::Tx& tx, std::string_view column, std::string_view value, std::string* password_hash) {
  std::string sql = "SELECT id, email, name, role, status, created_at, password_hash FROM users WHERE " +
                    std::string(column) + " = $1";
  auto row = tx.QueryOne(sql, {Value{std::string(value)}});
  if (!row) return row.take_error();
  if (!*row) return Error::NotFound("user_not_found", "no such user");
  const auto& r = **row;
  if (password_hash) *password_hash = r.Text(6);
  return User{r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.Text(4), r.Text(5)};
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
    return Ok();
  });
  if (!r) return r.take_error();
  (void)Audit(user.id, "user_registered", user.id, "");
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
    return Ok();
  });
  if (!r) return r.take_error();
  (void)Audit(user->id, "login_succeeded", user->id, client);
  return tokens;
}

Result<Tokens> AuthService::Refresh(std::string_view refresh_token, std::string_view client) {
  if (!refresh_token.starts_with("rt_") || refresh_token.size() > 128) return InvalidRefresh();
  std::string hash = crypto::Sha256Hex(refresh_token);
  int64_t now = clock_.NowS();
  Tokens tokens;
  std::string reused_family, reused_user;
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    reused_family.clear();
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
      reused_family = family;
      reused_user = user_id;
      return Ok();
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
  if (!reused_family.empty()) {
    (void)Audit(reused_user, "refresh_token_reused", reused_user, client, "{\"family\":\"" + reused_family + "\"}");
    return Error::Unauthenticated("refresh_token_reused",
                                  "this refresh token was already used; every session of its login was revoked");
  }
  return tokens;
}

Result<void> AuthService::Logout(std::string_view refresh_token) {
  std::string hash = crypto::Sha256Hex(refresh_token);
  std::string user_id;
  auto r = db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    auto row = tx.QueryOne("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1", {Value{hash}});
    if (!row) return row.take_error();
    if (!*row) return InvalidRefresh();
    user_id = (*row)->Text(1);
    SMART_TRY(tx.Exec("UPDATE refresh_tokens SET revoked = 1 WHERE family_id = $1", {Value{(*row)->Text(0)}}));
    return Ok();
  });
  if (!r) return r;
  (void)Audit(user_id, "logout", user_id, "");
  return Ok();
}

Result<Principal> AuthService::Authenticate(std::string_view access_token) {
  auto claims = VerifyJwt(access_token, config_.keys, config_.issuer, config_.audience, clock_.NowS());
  if (!claims) return claims.take_error();
  // A disabled account stops working at once, whatever tokens it holds.
  std::string status, role;
  auto r = db_.Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
    auto row = tx.QueryOne("SELECT status, role FROM users WHERE id = $1", {Value{claims->sub}});
    if (!row) return row.take_error();
    if (*row) {
      status = (*row)->Text(0);
      role = (*row)->Text(1);
    }
    return Ok();
  });
  if (!r) return r.take_error();
  if (status != "active") return Error::Unauthenticated("account_disabled", "the account is disabled or gone");
  // The role comes from the database, so a demotion applies to tokens already issued.
  return Principal{claims->sub, role};
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
  return db_.Transact(store::TxMode::kWrite, [&](store::Tx& tx) -> Result<void> {
    SMART_TRY(tx.Exec(
        "INSERT INTO audit_log (id, ts, actor, action, target, client, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        {Value{MakeId("aud")}, Value{FormatTimestampMs(clock_.NowMs())}, Value{std::string(actor)},
         Value{std::string(action)}, Value{std::string(target)}, Value{std::string(client)},
         Value{std::string(detail_json)}}));
    return Ok();
  });
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
       ""}};
}

}  // namespace smart::auth
