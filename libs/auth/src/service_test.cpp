// AuthService against a real database: SQLite by default, the fixture's
// PostgreSQL when run as auth_pgtest.
#include "smart/auth/service.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

#include "smart/auth/usage.hpp"
#include "smart/testing/postgres.hpp"
#include "smart/testing/process.hpp"

namespace smart::auth {
namespace {

using namespace std::chrono_literals;

class AuthService : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string url =
        std::getenv("SMART_TEST_PG_URL_FILE") ? testing::FreshPostgresDatabase() : "sqlite:" + dir_.path() + "/auth.db";
    ASSERT_FALSE(url.empty());
    auto db = store::Open(url);
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(db).value();
    auto ms = auth::AuthService::Migrations();
    ASSERT_TRUE(store::Migrate(*db_, ms).ok());
    AuthConfig cfg;
    cfg.keys = {{"k1", std::string(32, 'x')}};
    cfg.active_kid = "k1";
    cfg.password = {.t_cost = 1, .m_cost_kib = 1024, .parallelism = 1};  // fast for tests
    svc_ = std::make_unique<auth::AuthService>(*db_, cfg, clock_);
  }

  int64_t CountAudit(const std::string& action) {
    int64_t n = -1;
    (void)db_->Transact(store::TxMode::kRead, [&](store::Tx& tx) -> Result<void> {
      auto row = tx.QueryOne("SELECT COUNT(*) FROM audit_log WHERE action = $1", {store::Value{action}});
      if (row && *row) n = (*row)->Int(0);
      return Ok();
    });
    return n;
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<auth::AuthService> svc_;
};

TEST_F(AuthService, RegisterNormalizesAndRefusesDuplicates) {
  auto u = svc_->Register("  Alice@Example.COM ", "correct horse battery", "Alice");
  ASSERT_TRUE(u.ok()) << u.error().message;
  EXPECT_EQ(u->email, "alice@example.com");
  EXPECT_EQ(u->id.substr(0, 4), "usr_");
  EXPECT_EQ(u->role, "user");
  auto dup = svc_->Register("alice@example.com", "another password", "Alice 2");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, "email_taken");
  EXPECT_EQ(dup.error().kind, ErrorKind::kConflict);
}

TEST_F(AuthService, RegisterValidatesEveryField) {
  struct Case {
    std::string email, password, name, code;
  };
  std::vector<Case> cases = {
      {"not-an-email", "long enough pw", "A", "invalid_email"},
      {"a@b", "long enough pw", "A", "invalid_email"},
      {"a@@b.com", "long enough pw", "A", "invalid_email"},
      {"a b@c.com", "long enough pw", "A", "invalid_email"},
      {"' OR 1=1 --@x.com", "long enough pw", "A", "invalid_email"},
      {std::string(300, 'a') + "@x.com", "long enough pw", "A", "invalid_email"},
      {"ok@x.com", "short", "A", "weak_password"},
      {"ok@x.com", std::string(2000, 'p'), "A", "invalid_password"},
      {"ok@x.com", "long enough pw", "", "invalid_name"},
      {"ok@x.com", "long enough pw", std::string(101, 'n'), "invalid_name"},
      {"ok@x.com", "long enough pw", "bad\xff utf8", "invalid_name"},
      {"ok@x.com", "long enough pw", "new\nline", "invalid_name"},
  };
  for (const auto& c : cases) {
    auto r = svc_->Register(c.email, c.password, c.name);
    ASSERT_FALSE(r.ok()) << c.email << " / " << c.name;
    EXPECT_EQ(r.error().code, c.code) << c.email << " / " << c.name;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalid);
  }
  // Odd but valid input is stored exactly, and SQL in text is just text.
  std::string name = "Robert'); DROP TABLE users;-- 😀 ñ 中文";
  auto u = svc_->Register("bobby@tables.example", "long enough pw", name);
  ASSERT_TRUE(u.ok()) << u.error().message;
  EXPECT_EQ(svc_->GetUser(u->id)->name, name);
  EXPECT_TRUE(
      svc_->Register("x" + std::string(3, 'y') + "@tables.example", "long enough pw", std::string(100, 'n')).ok());
}

TEST_F(AuthService, LoginDoesNotRevealWhichPartIsWrong) {
  ASSERT_TRUE(svc_->Register("carol@example.com", "correct horse battery", "Carol").ok());
  auto wrong_pw = svc_->Login("carol@example.com", "wrong password!", "127.0.0.1");
  auto unknown = svc_->Login("nobody@example.com", "wrong password!", "127.0.0.1");
  ASSERT_FALSE(wrong_pw.ok());
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(wrong_pw.error().code, "invalid_credentials");
  EXPECT_EQ(unknown.error().code, wrong_pw.error().code);
  EXPECT_EQ(unknown.error().message, wrong_pw.error().message);
  EXPECT_EQ(CountAudit("login_failed"), 2);

  auto ok = svc_->Login("CAROL@example.com", "correct horse battery", "127.0.0.1");
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->expires_in, 900);
  EXPECT_EQ(CountAudit("login_succeeded"), 1);
  auto p = svc_->Authenticate(ok->access_token);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->role, "user");
}

TEST_F(AuthService, AccessTokensExpire) {
  ASSERT_TRUE(svc_->Register("dave@example.com", "correct horse battery", "Dave").ok());
  auto t = svc_->Login("dave@example.com", "correct horse battery", "");
  ASSERT_TRUE(t.ok());
  clock_.Advance(16min);
  auto p = svc_->Authenticate(t->access_token);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, "expired_token");
}

TEST_F(AuthService, RefreshRotatesAndReuseRevokesTheFamily) {
  ASSERT_TRUE(svc_->Register("erin@example.com", "correct horse battery", "Erin").ok());
  auto first = svc_->Login("erin@example.com", "correct horse battery", "");
  ASSERT_TRUE(first.ok());
  auto second = svc_->Refresh(first->refresh_token, "");
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_NE(second->refresh_token, first->refresh_token);
  auto third = svc_->Refresh(second->refresh_token, "");
  ASSERT_TRUE(third.ok());

  // A thief replays the first token: the whole family dies, the newest token too.
  auto replay = svc_->Refresh(first->refresh_token, "");
  ASSERT_FALSE(replay.ok());
  EXPECT_EQ(replay.error().code, "refresh_token_reused");
  EXPECT_EQ(CountAudit("refresh_token_reused"), 1);
  auto after = svc_->Refresh(third->refresh_token, "");
  ASSERT_FALSE(after.ok());

  // Another login (another family) is unaffected.
  auto other = svc_->Login("erin@example.com", "correct horse battery", "");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(svc_->Refresh(other->refresh_token, "").ok());
}

TEST_F(AuthService, RefreshTokensExpireAndLogoutRevokes) {
  ASSERT_TRUE(svc_->Register("fay@example.com", "correct horse battery", "Fay").ok());
  auto t = svc_->Login("fay@example.com", "correct horse battery", "");
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(svc_->Logout(t->refresh_token).ok());
  EXPECT_FALSE(svc_->Refresh(t->refresh_token, "").ok());

  auto u = svc_->Login("fay@example.com", "correct horse battery", "");
  clock_.Advance(std::chrono::hours(24 * 31));
  auto r = svc_->Refresh(u->refresh_token, "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "refresh_token_expired");
  EXPECT_EQ(svc_->Refresh("rt_garbage", "").error().code, "invalid_refresh_token");
  EXPECT_EQ(svc_->Refresh("' OR '1'='1", "").error().code, "invalid_refresh_token");
}

TEST_F(AuthService, DisabledUsersStopAtOnce) {
  auto u = svc_->Register("gus@example.com", "correct horse battery", "Gus");
  ASSERT_TRUE(u.ok());
  auto t = svc_->Login("gus@example.com", "correct horse battery", "");
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(svc_->Authenticate(t->access_token).ok());  // now cached
  auto admin = svc_->Register("root@example.com", "correct horse battery", "Root", "admin");
  ASSERT_TRUE(admin.ok());
  Principal root{admin->id, "admin", RoleScopes("admin"), "", "default", 0};
  ASSERT_TRUE(svc_->AdminUpdateUser(root, u->id, "disabled", std::nullopt, std::nullopt, "").ok());
  auto p = svc_->Authenticate(t->access_token);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, "account_disabled");
  EXPECT_FALSE(svc_->Refresh(t->refresh_token, "").ok());
  EXPECT_EQ(svc_->Login("gus@example.com", "correct horse battery", "").error().code, "invalid_credentials");
}

TEST_F(AuthService, ChangesAndTheirAuditRecordsCommitTogether) {
  auto u = svc_->Register("jan@example.com", "correct horse battery", "Jan");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(CountAudit("user_registered"), 1);
  EXPECT_FALSE(svc_->Register("jan@example.com", "correct horse battery", "Jan").ok());
  EXPECT_EQ(CountAudit("user_registered"), 1) << "a refused change leaves no record";
  Principal jan{u->id, "user", RoleScopes("user"), "", "default", 0};
  auto key = svc_->CreateApiKey(jan, "k", {"tasks:read"}, std::nullopt);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(CountAudit("api_key_created"), 1);
  EXPECT_EQ(svc_->RevokeApiKey(u->id, "key_missing").error().code, "api_key_not_found");
  EXPECT_EQ(CountAudit("api_key_revoked"), 0);
  ASSERT_TRUE(svc_->RevokeApiKey(u->id, key->key.id).ok());
  EXPECT_EQ(CountAudit("api_key_revoked"), 1);
  EXPECT_EQ(svc_->RevokeApiKey(u->id, key->key.id).error().code, "api_key_not_found");
  EXPECT_EQ(CountAudit("api_key_revoked"), 1);
}

TEST_F(AuthService, CachedCredentialsStillExpire) {
  ASSERT_TRUE(svc_->Register("ida@example.com", "correct horse battery", "Ida").ok());
  auto t = svc_->Login("ida@example.com", "correct horse battery", "");
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(svc_->Authenticate(t->access_token).ok());
  clock_.Advance(5s);
  ASSERT_TRUE(svc_->Authenticate(t->access_token).ok());
  clock_.Advance(16min);
  auto p = svc_->Authenticate(t->access_token);
  ASSERT_FALSE(p.ok()) << "the cache never outlives the token";
  EXPECT_EQ(p.error().code, "expired_token");
}

TEST_F(AuthService, ProfileUpdate) {
  auto u = svc_->Register("hal@example.com", "correct horse battery", "Hal");
  ASSERT_TRUE(u.ok());
  auto updated = svc_->UpdateProfile(u->id, "Hal 9000");
  ASSERT_TRUE(updated.ok());
  EXPECT_EQ(updated->name, "Hal 9000");
  EXPECT_EQ(svc_->UpdateProfile(u->id, "").error().code, "invalid_name");
  EXPECT_EQ(svc_->UpdateProfile("usr_missing", "X").error().code, "user_not_found");
}

}  // namespace
}  // namespace smart::auth

namespace smart::auth {
namespace {

TEST_F(AuthService, UsageIsCountedPerDayAndKeyAndFlushedOnce) {
  std::vector<store::Migration> ms = UsageRecorder::Migrations();
  std::vector<store::Migration> all = auth::AuthService::Migrations();
  all.insert(all.end(), ms.begin(), ms.end());
  ASSERT_TRUE(store::Migrate(*db_, all).ok());
  UsageRecorder usage(*db_, clock_);
  usage.Count("usr_a", "");
  usage.Count("usr_a", "");
  usage.Count("usr_a", "key_1");
  usage.Count("usr_b", "");
  ASSERT_TRUE(usage.Flush().ok());
  ASSERT_TRUE(usage.Flush().ok()) << "an empty flush is fine and adds nothing";
  usage.Count("usr_a", "");
  ASSERT_TRUE(usage.Flush().ok());
  clock_.Advance(std::chrono::hours(24));
  usage.Count("usr_a", "key_1");
  ASSERT_TRUE(usage.Flush().ok());

  auto rows = usage.ForUser("usr_a", 30);
  ASSERT_TRUE(rows.ok()) << rows.error().message;
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].day, "2026-11-23");
  EXPECT_EQ((*rows)[0].key_id, "key_1");
  EXPECT_EQ((*rows)[0].requests, 1);
  EXPECT_EQ((*rows)[1].day, "2026-11-22");
  EXPECT_EQ((*rows)[1].key_id, "");
  EXPECT_EQ((*rows)[1].requests, 3);
  EXPECT_EQ((*rows)[2].requests, 1);
  EXPECT_EQ(usage.ForUser("usr_b", 30)->size(), 1u);
}

}  // namespace
}  // namespace smart::auth
