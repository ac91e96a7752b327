// The ledger through the real smartd: balances, transfers, the dev faucet,
// tokens, bad input, `smartd ledger verify`, and a SIGKILL under load.
#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "harness.hpp"
#include "smart/testing/postgres.hpp"

namespace smart::itest {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> WithFaucet(std::vector<std::string> env = kFastAuth) {
  env.push_back("SMART_LEDGER_DEV_FAUCET=true");
  return env;
}

std::string Idem(const std::string& key) { return "Idempotency-Key: " + key + "\r\n"; }

// Available balance of `asset` in a user/balances answer.
std::string AvailableBalance(const std::string& body, const std::string& asset) {
  std::smatch m;
  std::regex re("\"kind\":\"available\",\"asset\":\"" + asset + "\",\"balance\":\"(-?[0-9]+)\"");
  return std::regex_search(body, m, re) ? std::string(m[1]) : "?";
}

std::pair<int, std::string> Verify(const std::string& data_dir, const std::string& db_url = "") {
  std::vector<std::string> env;
  if (!db_url.empty()) env.push_back("SMART_DATABASE_URL=" + db_url);
  return testing::RunCommand({SMARTD_PATH, "ledger", "verify", "--data-dir", data_dir}, env);
}

// Every transfer id in a user's history, following the cursor.
std::vector<std::string> HistoryIds(uint16_t port, const std::string& token) {
  std::vector<std::string> ids;
  std::string cursor;
  for (int pages = 0; pages < 1000; ++pages) {
    auto r =
        As(port, "GET", "/api/v1/user/transactions?limit=500" + (cursor.empty() ? "" : "&cursor=" + cursor), token);
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    if (!r || r->status != 200) break;
    std::regex re("\"id\":\"(tr_[0-9A-Z]+)\"");
    for (auto it = std::sregex_iterator(r->body.begin(), r->body.end(), re); it != std::sregex_iterator(); ++it) {
      ids.push_back((*it)[1]);
    }
    cursor = JsonField(r->body, "next_cursor");
    if (cursor.empty()) break;
  }
  return ids;
}

void TransferFlow(Smartd& s, const std::string& db_url) {
  Session root = CreateAdmin(s, "root@example.com", db_url.empty() ? "" : "SMART_DATABASE_URL='" + db_url + "'");
  Session amy = RegisterAndLogin(s.port(), "amy@example.com");
  Session ben = RegisterAndLogin(s.port(), "ben@example.com");

  auto r = As(s.port(), "GET", "/api/v1/user/balances", amy.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(AvailableBalance(r->body, "USDC"), "0");
  EXPECT_EQ(AvailableBalance(r->body, "SMART"), "0");

  r = As(s.port(), "POST", "/api/v1/admin/mint", root.access,
         R"({"user":"amy@example.com","asset":"USDC","amount":"10000000","memo":"dev funds"})", Idem("mint-1"));
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(JsonField(r->body, "display"), "10 USDC");
  EXPECT_EQ(JsonField(r->body, "code"), "mint");

  const std::string body = R"({"to":"ben@example.com","asset":"USDC","amount":"2500000","memo":"lunch ☕"})";
  r = As(s.port(), "POST", "/api/v1/transfers", amy.access, body, Idem("pay-ben-1"));
  ASSERT_EQ(r->status, 201) << r->body;
  std::string id = JsonField(r->body, "id");
  EXPECT_EQ(id.substr(0, 3), "tr_");
  EXPECT_EQ(JsonField(r->body, "amount"), "2500000");
  EXPECT_EQ(JsonField(r->body, "display"), "2.5 USDC");
  EXPECT_EQ(r->Header("idempotent-replayed"), "");

  // A retry with the same key and body is the same transfer, once.
  r = As(s.port(), "POST", "/api/v1/transfers", amy.access, body, Idem("pay-ben-1"));
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(JsonField(r->body, "id"), id);
  EXPECT_EQ(r->Header("idempotent-replayed"), "true");
  r = As(s.port(), "POST", "/api/v1/transfers", amy.access,
         R"({"to":"ben@example.com","asset":"USDC","amount":"2500001"})", Idem("pay-ben-1"));
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(JsonField(r->body, "code"), "idempotency_key_reused");
  // Keys are per user: Ben's "pay-ben-1" is another transfer.
  r = As(s.port(), "POST", "/api/v1/transfers", ben.access, R"({"to":"amy@example.com","asset":"USDC","amount":"1"})",
         Idem("pay-ben-1"));
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_NE(JsonField(r->body, "id"), id);

  r = As(s.port(), "GET", "/api/v1/user/balances", amy.access);
  EXPECT_EQ(AvailableBalance(r->body, "USDC"), "7500001");
  r = As(s.port(), "GET", "/api/v1/user/balances", ben.access);
  EXPECT_EQ(AvailableBalance(r->body, "USDC"), "2499999");

  r = As(s.port(), "GET", "/api/v1/user/transactions?asset=USDC", amy.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->body.find("\"direction\":\"debit\""), std::string::npos);
  EXPECT_NE(r->body.find("\"direction\":\"credit\""), std::string::npos);
  EXPECT_NE(r->body.find("lunch ☕"), std::string::npos);
  EXPECT_EQ(HistoryIds(s.port(), amy.access).size(), 3u);
  r = As(s.port(), "GET", "/api/v1/user/transactions?limit=1", amy.access);
  std::string cursor = JsonField(r->body, "next_cursor");
  ASSERT_FALSE(cursor.empty());
  r = As(s.port(), "GET", "/api/v1/user/transactions?limit=1&cursor=" + cursor, ben.access);
  EXPECT_EQ(r->status, 422) << "a cursor is bound to its listing";

  // The platform token: supply and balance of.
  r = As(s.port(), "POST", "/api/v1/admin/mint", root.access,
         R"({"user":"ben@example.com","asset":"SMART","amount":"1500000000000000000000"})", Idem("mint-smart"));
  ASSERT_EQ(r->status, 201) << r->body;
  r = As(s.port(), "GET", "/api/v1/tokens/SMART", amy.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "total_supply"), "1500000000000000000000");
  EXPECT_EQ(JsonField(r->body, "display"), "1500 SMART");
  r = As(s.port(), "GET", "/api/v1/tokens/SMART/balances/ben@example.com", amy.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(JsonField(r->body, "balance"), "1500000000000000000000");
  r = As(s.port(), "GET", "/api/v1/tokens/USDC/balances/ben@example.com", amy.access);
  EXPECT_EQ(r->status, 403) << "other assets' balances are private";
  r = As(s.port(), "GET", "/api/v1/tokens/USDC/balances/amy@example.com", amy.access);
  EXPECT_EQ(r->status, 200);
  r = As(s.port(), "GET", "/api/v1/tokens/DOGE", amy.access);
  EXPECT_EQ(r->status, 404);

  r = As(s.port(), "POST", "/api/v1/admin/burn", root.access,
         R"({"user":"ben@example.com","asset":"SMART","amount":"500000000000000000000"})", Idem("burn-smart"));
  ASSERT_EQ(r->status, 201) << r->body;
  r = As(s.port(), "GET", "/api/v1/tokens/SMART", amy.access);
  EXPECT_EQ(JsonField(r->body, "total_supply"), "1000000000000000000000");

  r = As(s.port(), "GET", "/api/v1/admin/ledger/accounts?owner=platform", root.access);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->body.find("\"kind\":\"issuer\",\"asset\":\"USDC\",\"balance\":\"-10000000\""), std::string::npos)
      << r->body;
  r = As(s.port(), "GET", "/api/v1/admin/ledger/accounts", amy.access);
  EXPECT_EQ(r->status, 403);

  auto [code, out] = Verify(s.dir() + "/data", db_url);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("transfers: 5"), std::string::npos) << out;
  EXPECT_NE(out.find("ok:"), std::string::npos) << out;
}

TEST(SmartdLedger, BalancesTransfersTokensAndVerify) {
  Smartd s(WithFaucet());
  ASSERT_NE(s.port(), 0);
  TransferFlow(s, "");
}

TEST(SmartdPostgres, LedgerOnPostgres) {
  std::string url = testing::FreshPostgresDatabase();
  ASSERT_FALSE(url.empty());
  auto env = WithFaucet();
  env.push_back("SMART_DATABASE_URL=" + url);
  Smartd s(env);
  ASSERT_NE(s.port(), 0);
  TransferFlow(s, url);
}

TEST(SmartdLedger, BadInputIsRefusedClearlyAndMovesNothing) {
  Smartd s(WithFaucet());
  ASSERT_NE(s.port(), 0);
  Session root = CreateAdmin(s, "root@example.com");
  Session cat = RegisterAndLogin(s.port(), "cat@example.com");
  RegisterAndLogin(s.port(), "dan@example.com");
  ASSERT_EQ(As(s.port(), "POST", "/api/v1/admin/mint", root.access,
               R"({"user":"cat@example.com","asset":"USDC","amount":"1000"})", Idem("m"))
                ->status,
            201);
  struct Case {
    std::string body, key;
    int status;
    std::string code;
  };
  std::vector<Case> cases = {
      {R"({"to":"dan@example.com","asset":"USDC","amount":"0"})", "k", 422, "invalid_amount"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"-5"})", "k", 422, "invalid_amount"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"1.5"})", "k", 422, "invalid_amount"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":5})", "k", 422, "invalid_amount"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"1e3"})", "k", 422, "invalid_amount"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"340282366920938463463374607431768211456"})", "k", 422,
       "invalid_amount"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"99999999999999999999999999999999999999999999"})", "k", 422,
       "invalid_amount"},
      {R"({"to":"dan@example.com","asset":"DOGE","amount":"1"})", "k", 422, "unknown_asset"},
      {R"({"to":"dan@example.com","asset":"usdc","amount":"1"})", "k", 422, "unknown_asset"},
      {R"({"to":"cat@example.com","asset":"USDC","amount":"1"})", "k", 422, "same_account"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"1001"})", "k", 409, "insufficient_funds"},
      {R"({"to":"nobody@example.com","asset":"USDC","amount":"1"})", "k", 404, "recipient_not_found"},
      {R"({"to":"' OR 1=1 --","asset":"USDC","amount":"1"})", "k", 404, "recipient_not_found"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"1","memo":")" + std::string(300, 'm') + R"("})", "k", 422,
       "validation_failed"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"1","fee":"0"})", "k", 400, "unknown_field"},
      {R"({"to":"dan@example.com","asset":"USDC"})", "k", 422, "validation_failed"},
      {R"([1,2])", "k", 400, "invalid_json"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"1"})", "", 400, "idempotency_key_required"},
      {R"({"to":"dan@example.com","asset":"USDC","amount":"1"})", std::string(201, 'k'), 400,
       "idempotency_key_required"},
  };
  for (const auto& c : cases) {
    auto r = As(s.port(), "POST", "/api/v1/transfers", cat.access, c.body, c.key.empty() ? "" : Idem(c.key));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, c.status) << c.body << " -> " << r->body;
    EXPECT_EQ(r->Header("content-type"), "application/problem+json") << c.body;
    EXPECT_EQ(JsonField(r->body, "code"), c.code) << c.body << " -> " << r->body;
  }
  auto r = As(s.port(), "GET", "/api/v1/user/balances", cat.access);
  EXPECT_EQ(AvailableBalance(r->body, "USDC"), "1000") << "nothing moved";
  // A refused request does not consume its key.
  r = As(s.port(), "POST", "/api/v1/transfers", cat.access, R"({"to":"dan@example.com","asset":"USDC","amount":"1"})",
         Idem("k"));
  EXPECT_EQ(r->status, 201) << r->body;

  for (const char* q :
       {"?since=yesterday", "?asset=DOGE", "?kind=vault", "?limit=0", "?cursor=AAAA", "?cursor=bm90LWEtY3Vyc29y"}) {
    r = As(s.port(), "GET", std::string("/api/v1/user/transactions") + q, cat.access);
    EXPECT_EQ(r->status, 422) << q << " -> " << r->body;
  }
  // Mint needs an admin; a user gets 403 however it asks.
  r = As(s.port(), "POST", "/api/v1/admin/mint", cat.access,
         R"({"user":"cat@example.com","asset":"USDC","amount":"1"})", Idem("x"));
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(Verify(s.dir() + "/data").first, 0);
}

TEST(SmartdLedger, FaucetIsOffUnlessConfigured) {
  Smartd s(kFastAuth);
  ASSERT_NE(s.port(), 0);
  Session root = CreateAdmin(s, "root@example.com");
  auto r = As(s.port(), "POST", "/api/v1/admin/mint", root.access,
              R"({"user":"root@example.com","asset":"USDC","amount":"1"})", Idem("m"));
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(JsonField(r->body, "code"), "faucet_disabled");
}

// SIGKILL in the middle of transfers: every acknowledged transfer survives
// exactly once, a retry of it is a replay, and the ledger verifies.
TEST(SmartdLedger, KillDuringTransfersLosesNothingAcknowledged) {
  testing::TempDir dir;
  const std::string data = dir.path() + "/data";
  auto env = WithFaucet();
  env.push_back("SMART_RATE_LIMIT_ENABLED=false");
  std::string amy_token;
  std::map<std::string, std::string> acked;  // key -> transfer id
  {
    Smartd s(env, {}, data);
    ASSERT_NE(s.port(), 0);
    std::string cmd = "echo 'admin password 1' | SMART_AUTH_ARGON2_M_COST_KIB=1024 SMART_AUTH_ARGON2_T_COST=1 " +
                      std::string(SMARTD_PATH) + " admin create --email root@example.com --password-stdin --data-dir " +
                      data;
    ASSERT_EQ(testing::RunCommand({"/bin/sh", "-c", cmd}).first, 0);
    Session root = Login(s.port(), "root@example.com", "admin password 1");
    Session amy = RegisterAndLogin(s.port(), "amy@example.com");
    RegisterAndLogin(s.port(), "ben@example.com");
    amy_token = amy.access;
    ASSERT_EQ(As(s.port(), "POST", "/api/v1/admin/mint", root.access,
                 R"({"user":"amy@example.com","asset":"USDC","amount":"1000000000"})", Idem("fund"))
                  ->status,
              201);
    std::mutex mu;
    std::atomic<bool> dead{false};
    std::atomic<int> count{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < 8; ++t) {
      clients.emplace_back([&, t] {
        for (int i = 0; !dead.load(); ++i) {
          std::string key = "crash-" + std::to_string(t) + "-" + std::to_string(i);
          auto r = As(s.port(), "POST", "/api/v1/transfers", amy_token,
                      R"({"to":"ben@example.com","asset":"USDC","amount":"1"})", Idem(key));
          if (!r) break;  // the server is gone
          if (r->status == 201) {
            std::lock_guard lk(mu);
            acked[key] = JsonField(r->body, "id");
            ++count;
          }
        }
      });
    }
    while (count.load() < 200) std::this_thread::sleep_for(10ms);
    s.proc().Signal(SIGKILL);
    dead = true;
    for (auto& c : clients) c.join();
  }
  ASSERT_GE(acked.size(), 200u);

  auto [code, out] = Verify(data);
  EXPECT_EQ(code, 0) << out;

  Smartd again(env, {}, data);
  ASSERT_NE(again.port(), 0);
  Session ben = Login(again.port(), "ben@example.com", "correct horse battery");
  Session amy = Login(again.port(), "amy@example.com", "correct horse battery");
  auto ids = HistoryIds(again.port(), ben.access);
  std::set<std::string> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), ids.size()) << "no transfer listed twice";
  for (const auto& [key, id] : acked) EXPECT_EQ(unique.count(id), 1u) << key << " was acknowledged but is missing";
  auto r = As(again.port(), "GET", "/api/v1/user/balances", ben.access);
  EXPECT_EQ(AvailableBalance(r->body, "USDC"), std::to_string(ids.size()));
  // Retrying acknowledged requests replays them; nothing moves twice.
  int checked = 0;
  for (const auto& [key, id] : acked) {
    if (++checked > 50) break;
    r = As(again.port(), "POST", "/api/v1/transfers", amy.access,
           R"({"to":"ben@example.com","asset":"USDC","amount":"1"})", Idem(key));
    ASSERT_EQ(r->status, 201) << r->body;
    EXPECT_EQ(JsonField(r->body, "id"), id);
    EXPECT_EQ(r->Header("idempotent-replayed"), "true");
  }
  r = As(again.port(), "GET", "/api/v1/user/balances", ben.access);
  EXPECT_EQ(AvailableBalance(r->body, "USDC"), std::to_string(ids.size()));
  EXPECT_EQ(Verify(data).first, 0);
}

}  // namespace
}  // namespace smart::itest
