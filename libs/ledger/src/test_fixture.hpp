// A migrated database (SQLite in a temp dir, or the fixture's PostgreSQL when
// SMART_TEST_PG_URL_FILE is set) and a ledger on a fake clock.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>

#include "smart/ledger/ledger.hpp"
#include "smart/testing/postgres.hpp"
#include "smart/testing/process.hpp"

namespace smart::ledger {

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string url =
        std::getenv("SMART_TEST_PG_URL_FILE") ? testing::FreshPostgresDatabase() : "sqlite:" + dir_.path() + "/l.db";
    ASSERT_FALSE(url.empty());
    pg_url_ = url;
    auto db = store::Open(url);
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(db).value();
    ASSERT_TRUE(store::Migrate(*db_, Ledger::Migrations()).ok());
    config_.assets = {{"USDC", 6}, {"SMART", 18}, {"EUR", 2}};
    config_.sweep_interval_ms = 0;  // tests expire holds themselves
    ledger_ = std::make_unique<Ledger>(*db_, config_, clock_);
  }

  static AccountRef Ref(std::string owner, std::string_view kind = kind::kAvailable, std::string asset = "USDC") {
    return {std::move(owner), std::string(kind), std::move(asset)};
  }
  static TransferRequest Single(std::string key, AccountRef debit, AccountRef credit, Amount amount,
                                std::string code = "transfer") {
    TransferRequest r;
    r.key = std::move(key);
    r.debit = std::move(debit);
    r.credit = std::move(credit);
    r.amount = amount;
    r.code = std::move(code);
    return r;
  }
  // Issues `amount` to owner's available account.
  void Mint(const std::string& owner, Amount amount, const std::string& asset = "USDC") {
    auto r = ledger_->Execute(
        {Single("mint/" + owner + "/" + std::to_string(++mints_), Ref("platform", kind::kIssuer, asset),
                Ref(owner, kind::kAvailable, asset), amount, "mint")});
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  std::string Balance(const std::string& owner, const std::string& asset = "USDC") {
    auto a = ledger_->GetAccount(Ref(owner, kind::kAvailable, asset));
    EXPECT_TRUE(a.ok());
    return a.ok() ? a->Balance() : "?";
  }
  void ExpectVerifies() {
    auto v = Verify(*db_);
    ASSERT_TRUE(v.ok()) << v.error().message;
    EXPECT_TRUE(v->ok) << v->divergence;
  }

  testing::TempDir dir_;
  std::string pg_url_;  // the database's URL (PostgreSQL runs)
  FakeClock clock_;
  std::unique_ptr<store::Database> db_;
  LedgerConfig config_;
  std::unique_ptr<Ledger> ledger_;
  int mints_ = 0;
};

}  // namespace smart::ledger
