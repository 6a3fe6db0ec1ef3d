#include "common/duration.h"

#include <gtest/gtest.h>

using ipayout::parse_duration_seconds;

TEST(DurationTest, EachUnit) {
  EXPECT_EQ(parse_duration_seconds("90s"), 90);
  EXPECT_EQ(parse_duration_seconds("15m"), 900);
  EXPECT_EQ(parse_duration_seconds("24h"), 86400);
  EXPECT_EQ(parse_duration_seconds("7d"), 604800);
  EXPECT_EQ(parse_duration_seconds("2w"), 1209600);
  EXPECT_EQ(parse_duration_seconds("0"), 0);
  EXPECT_EQ(parse_duration_seconds("0s"), 0);
}

TEST(DurationTest, AnythingElseIsNotADuration) {
  for (const char* bad : {"", "s", "5", "-5m", "5 m", "5M", "1h30m", "1.5h", "m5", "5ms",
                          "2026-11-30", "1 minute ago", "99999999999999999999d", "36600000d"}) {
    EXPECT_EQ(parse_duration_seconds(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(parse_duration_seconds("36500d"), int64_t{36500} * 86400);  // 100 years fit
}
