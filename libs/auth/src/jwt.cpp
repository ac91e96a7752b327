#include "smart/auth/jwt.hpp"

#include <boost/json.hpp>

#include "smart/core/crypto.hpp"

namespace smart::auth {
namespace json = boost::json;
namespace {

Error Bad(std::string code, std::string message) { return Error::Unauthenticated(std::move(code), std::move(message)); }

const std::string* Str(const json::object& o, std::string_view key, std::string& storage) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return nullptr;
  storage = std::string(it->value().as_string());
  return &storage;
}

}  // namespace

std::string SignJwt(const JwtClaims& c, const JwtKey& key) {
  json::object header{{"alg", "HS256"}, {"typ", "JWT"}, {"kid", key.kid}};
  json::object payload{{"iss", c.iss},   {"aud", c.aud}, {"sub", c.sub}, {"jti", c.jti},
                       {"role", c.role}, {"iat", c.iat}, {"exp", c.exp}};
  std::string signing_input =
      crypto::Base64UrlEncode(json::serialize(header)) + "." + crypto::Base64UrlEncode(json::serialize(payload));
  return signing_input + "." + crypto::Base64UrlEncode(crypto::HmacSha256(key.secret, signing_input));
}

Result<JwtClaims> VerifyJwt(std::string_view token, std::span<const JwtKey> keys, std::string_view issuer,
                            std::string_view audience, int64_t now_s, int64_t leeway_s) {
  if (token.size() > 8192) return Bad("malformed_token", "the token is too long");
  auto d1 = token.find('.');
  auto d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos) {
    return Bad("malformed_token", "a JWT has three dot-separated parts");
  }
  auto header_text = crypto::Base64UrlDecode(token.substr(0, d1));
  auto payload_text = crypto::Base64UrlDecode(token.substr(d1 + 1, d2 - d1 - 1));
  auto signature = crypto::Base64UrlDecode(token.substr(d2 + 1));
  if (!header_text || !payload_text || !signature) return Bad("malformed_token", "the token is not base64url");
  boost::system::error_code ec;
  auto header = json::parse(*header_text, ec);
  if (ec || !header.is_object()) return Bad("malformed_token", "the token header is not a JSON object");
  std::string alg, kid;
  if (!Str(header.as_object(), "alg", alg) || alg != "HS256") {
    return Bad("unsupported_algorithm", "only HS256 tokens are accepted");
  }
  Str(header.as_object(), "kid", kid);
  const JwtKey* key = nullptr;
  for (const auto& k : keys) {
    if (k.kid == kid) key = &k;
  }
  if (!key) return Bad("unknown_key", "the token was signed with a key that is not (or no longer) accepted");
  std::string expected = crypto::HmacSha256(key->secret, token.substr(0, d2));
  if (!crypto::ConstantTimeEquals(expected, *signature)) return Bad("bad_signature", "the token signature is invalid");

  auto payload = json::parse(*payload_text, ec);
  if (ec || !payload.is_object()) return Bad("malformed_token", "the token payload is not a JSON object");
  const auto& o = payload.as_object();
  JwtClaims c;
  auto num = [&](std::string_view k, int64_t& out) {
    auto it = o.find(k);
    if (it == o.end() || !it->value().is_int64()) return false;
    out = it->value().as_int64();
    return true;
  };
  if (!Str(o, "iss", c.iss) || !Str(o, "aud", c.aud) || !Str(o, "sub", c.sub) || !Str(o, "jti", c.jti) ||
      !Str(o, "role", c.role) || !num("iat", c.iat) || !num("exp", c.exp)) {
    return Bad("malformed_token", "the token lacks a required claim");
  }
  if (c.iss != issuer) return Bad("wrong_issuer", "the token was issued by someone else");
  if (c.aud != audience) return Bad("wrong_audience", "the token is meant for another audience");
  if (now_s > c.exp + leeway_s) return Bad("expired_token", "the token has expired");
  if (c.iat > now_s + leeway_s) return Bad("malformed_token", "the token was issued in the future");
  return c;
}

}  // namespace smart::auth
