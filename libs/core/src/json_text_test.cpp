#include "smart/core/json_text.hpp"

#include <gtest/gtest.h>

#include <set>

#include "smart/core/ids.hpp"

namespace smart {
namespace {

std::string Quote(std::string_view s) {
  std::string out;
  AppendJsonString(out, s);
  return out;
}

TEST(JsonText, Escapes) {
  EXPECT_EQ(Quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
  EXPECT_EQ(Quote(std::string_view("\x01", 1)), "\"\\u0001\"");
  EXPECT_EQ(Quote("héllo ✓"), "\"héllo ✓\"");
}

TEST(JsonText, InvalidUtf8BecomesReplacement) {
  EXPECT_EQ(Quote("\xff"), "\"\\ufffd\"");
  EXPECT_EQ(Quote("a\xc3"), "\"a\\ufffd\"");                      // truncated sequence
  EXPECT_EQ(Quote("\xc0\xaf"), "\"\\ufffd\\ufffd\"");             // overlong '/'
  EXPECT_EQ(Quote("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");  // surrogate
  EXPECT_TRUE(IsValidUtf8("héllo ✓ 😀"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
}

TEST(JsonText, ParseTimestamp) {
  EXPECT_EQ(ParseTimestamp("2026-11-22T10:30:00Z"), 1795343400);
  EXPECT_EQ(ParseTimestamp("2026-11-22T10:30:00.123Z"), 1795343400);
  EXPECT_EQ(ParseTimestamp("2026-11-22T11:30:00+01:00"), 1795343400);
  for (const char* bad : {"", "2026-11-22", "2026-11-22 10:30:00Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                          "2026-11-22T10:30:00", "2026-11-22T10:30:00Zjunk", "yesterday"}) {
    EXPECT_FALSE(ParseTimestamp(bad)) << bad;
  }
}

TEST(JsonText, Timestamps) {
  EXPECT_EQ(FormatTimestamp(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatTimestampMs(1795343400123), "2026-11-22T10:30:00.123Z");
}

TEST(Ids, UlidsSortByTimeAndAreUnique) {
  std::string a = NewUlid();
  EXPECT_EQ(a.size(), 26u);
  std::string id = MakeId("task");
  EXPECT_EQ(id.substr(0, 5), "task_");
  EXPECT_EQ(id.size(), 31u);
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(seen.insert(NewUlid()).second);
}

}  // namespace
}  // namespace smart
