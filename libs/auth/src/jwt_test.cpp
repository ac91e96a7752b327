#include "smart/auth/jwt.hpp"

#include <gtest/gtest.h>

#include "smart/core/crypto.hpp"

namespace smart::auth {
namespace {

const JwtKey kOld{"k1", std::string(32, 'a')};
const JwtKey kNew{"k2", std::string(32, 'b')};
constexpr int64_t kNow = 1795343400;

JwtClaims Claims() { return {"smart", "smart-api", "usr_1", "jti1", "user", kNow, kNow + 900}; }

Result<JwtClaims> Verify(const std::string& token, std::vector<JwtKey> keys = {kOld, kNew}, int64_t now = kNow) {
  return VerifyJwt(token, keys, "smart", "smart-api", now);
}

std::string Forge(const std::string& header, const std::string& payload, const std::string& secret) {
  std::string input = crypto::Base64UrlEncode(header) + "." + crypto::Base64UrlEncode(payload);
  return input + "." + crypto::Base64UrlEncode(crypto::HmacSha256(secret, input));
}

const char* kPayload =
    "{\"iss\":\"smart\",\"aud\":\"smart-api\",\"sub\":\"usr_1\",\"jti\":\"j\",\"role\":\"admin\","
    "\"iat\":1795343400,\"exp\":1795344300}";

TEST(Jwt, SignAndVerify) {
  auto token = SignJwt(Claims(), kNew);
  auto c = Verify(token);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->sub, "usr_1");
  EXPECT_EQ(c->role, "user");
  EXPECT_EQ(c->exp, kNow + 900);
}

TEST(Jwt, RefusesAlgNoneAndOtherAlgorithms) {
  std::string input =
      crypto::Base64UrlEncode("{\"alg\":\"none\",\"kid\":\"k2\"}") + "." + crypto::Base64UrlEncode(kPayload);
  EXPECT_EQ(Verify(input + ".").error().code, "unsupported_algorithm");
  // HS256-signed with a "public key" while claiming RS256: algorithm confusion.
  EXPECT_EQ(Verify(Forge("{\"alg\":\"RS256\",\"kid\":\"k2\"}", kPayload, kNew.secret)).error().code,
            "unsupported_algorithm");
  EXPECT_EQ(Verify(Forge("{\"alg\":\"hs256\",\"kid\":\"k2\"}", kPayload, kNew.secret)).error().code,
            "unsupported_algorithm");
  EXPECT_EQ(Verify(Forge("{\"kid\":\"k2\"}", kPayload, kNew.secret)).error().code, "unsupported_algorithm");
}

TEST(Jwt, RefusesBadSignaturesAndTampering) {
  auto token = SignJwt(Claims(), kNew);
  std::string tampered = token;
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(Verify(tampered).error().code, "bad_signature");
  // Swap in a payload that says admin, keeping the signature.
  auto d1 = token.find('.'), d2 = token.rfind('.');
  std::string swapped = token.substr(0, d1 + 1) + crypto::Base64UrlEncode(kPayload) + token.substr(d2);
  EXPECT_EQ(Verify(swapped).error().code, "bad_signature");
  EXPECT_EQ(Verify(Forge("{\"alg\":\"HS256\",\"kid\":\"k2\"}", kPayload, "guessed-secret")).error().code,
            "bad_signature");
}

TEST(Jwt, KeyRotation) {
  auto old_token = SignJwt(Claims(), kOld);
  EXPECT_TRUE(Verify(old_token).ok()) << "tokens of a key still listed are accepted";
  auto r = Verify(old_token, {kNew});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "unknown_key") << "a rotated-out key is refused";
  EXPECT_EQ(r.error().kind, ErrorKind::kUnauthenticated);
}

TEST(Jwt, ExpiryIssuerAudience) {
  auto token = SignJwt(Claims(), kNew);
  EXPECT_TRUE(Verify(token, {kNew}, kNow + 900 + 29).ok()) << "30 s of clock skew are tolerated";
  EXPECT_EQ(Verify(token, {kNew}, kNow + 900 + 31).error().code, "expired_token");
  auto c = Claims();
  c.aud = "other-api";
  EXPECT_EQ(Verify(SignJwt(c, kNew)).error().code, "wrong_audience");
  c = Claims();
  c.iss = "evil";
  EXPECT_EQ(Verify(SignJwt(c, kNew)).error().code, "wrong_issuer");
}

TEST(Jwt, MalformedTokens) {
  for (const std::string& bad :
       std::vector<std::string>{"", "abc", "a.b", "a.b.c.d", "!!!.???.###", std::string(10000, 'a')}) {
    auto r = Verify(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, "malformed_token") << bad;
  }
  EXPECT_EQ(Verify(Forge("[1,2]", kPayload, kNew.secret)).error().code, "malformed_token");
  EXPECT_EQ(Verify(Forge("{\"alg\":\"HS256\",\"kid\":\"k2\"}", "{\"sub\":\"x\"}", kNew.secret)).error().code,
            "malformed_token");
  EXPECT_EQ(Verify(Forge("{\"alg\":\"HS256\",\"kid\":\"k2\"}", "not json", kNew.secret)).error().code,
            "malformed_token");
}

}  // namespace
}  // namespace smart::auth
