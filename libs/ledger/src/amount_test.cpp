#include "smart/ledger/amount.hpp"

#include <gtest/gtest.h>

#include "smart/ledger/ledger.hpp"

namespace smart::ledger {
namespace {

TEST(Amount, ParsesOnlyCanonicalDigits) {
  EXPECT_EQ(ParseAmount("0"), Amount{0});
  EXPECT_EQ(ParseAmount("250000"), Amount{250000});
  EXPECT_EQ(ParseAmount("340282366920938463463374607431768211455"), kMaxAmount);
  for (const char* bad :
       {"", "-1", "+1", "01", "1.5", "1e6", " 1", "1 ", "0x10", "340282366920938463463374607431768211456",
        "99999999999999999999999999999999999999999", "１"}) {
    EXPECT_FALSE(ParseAmount(bad).has_value()) << bad;
  }
}

TEST(Amount, FormatsRoundTrip) {
  for (Amount a : {Amount{0}, Amount{1}, Amount{10}, Amount{18446744073709551615ULL} * 1000 + 7, kMaxAmount}) {
    EXPECT_EQ(ParseAmount(FormatAmount(a)), a);
  }
  EXPECT_EQ(FormatDifference(5, 7), "-2");
  EXPECT_EQ(FormatDifference(7, 5), "2");
  EXPECT_EQ(FormatDifference(0, 0), "0");
}

TEST(Amount, DisplaysForPeople) {
  EXPECT_EQ(DisplayAmount(250000, 6, "USDC"), "0.25 USDC");
  EXPECT_EQ(DisplayAmount(1, 6, "USDC"), "0.000001 USDC");
  EXPECT_EQ(DisplayAmount(12000000, 6, "USDC"), "12 USDC");
  EXPECT_EQ(DisplayAmount(5, 0, "PTS"), "5 PTS");
  EXPECT_EQ(DisplayAmount(*ParseAmount("1500000000000000000"), 18, "SMART", true), "-1.5 SMART");
}

TEST(Amount, CheckedAddCatchesOverflow) {
  EXPECT_EQ(CheckedAdd(1, 2), Amount{3});
  EXPECT_FALSE(CheckedAdd(kMaxAmount, 1).has_value());
  EXPECT_EQ(CheckedAdd(kMaxAmount, 0), kMaxAmount);
}

TEST(Amount, AssetsFromConfiguration) {
  auto ok = ParseAssets({"USDC:6", "SMART:18"});
  ASSERT_TRUE(ok.ok());
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[1].code, "SMART");
  EXPECT_EQ((*ok)[1].decimals, 18);
  for (auto bad : {std::vector<std::string>{"usdc:6"},
                   {"USDC"},
                   {"USDC:"},
                   {"USDC:37"},
                   {"U:6"},
                   {"USDC:6", "USDC:2"},
                   {"US DC:6"},
                   {"USDC:-1"}}) {
    EXPECT_FALSE(ParseAssets(bad).ok()) << bad[0];
  }
}

}  // namespace
}  // namespace smart::ledger
