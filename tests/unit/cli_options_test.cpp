// ipayout-events' command line (cli/options.cpp): unknown options, and options
// the command does not take, are usage errors (main prints them with the usage
// and exits 2).
#include "options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ipayout::events {
namespace {

Result<Options> parse(std::vector<std::string> words) {
  words.insert(words.begin(), "ipayout-events");
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

std::string refusal(const std::vector<std::string>& words) {
  auto r = parse(words);
  return r.ok() ? "" : r.error().message;
}

TEST(CliOptions, UnknownOptionRefused) {
  EXPECT_EQ(refusal({"tail", "--frobnicate"}), "unknown option '--frobnicate'");
  EXPECT_EQ(refusal({"consumers", "-x"}), "unknown option '-x'");
}

TEST(CliOptions, EachCommandRefusesOptionsItDoesNotTake) {
  EXPECT_EQ(refusal({"consumers", "--follow"}), "consumers does not take --follow");
  EXPECT_EQ(refusal({"consumers", "-f"}), "consumers does not take -f");
  EXPECT_EQ(refusal({"unsubscribe", "x", "--force"}), "unsubscribe does not take --force");
  EXPECT_EQ(refusal({"subscribe", "x", "--consumer", "y"}), "subscribe does not take --consumer");
  EXPECT_EQ(refusal({"replay", "--consumer", "c", "--max=3"}), "replay does not take --max");
  EXPECT_EQ(refusal({"purge", "--older-than", "1 day", "--since", "end"}),
            "purge does not take --since");
  EXPECT_EQ(refusal({"tail", "--older-than=1 day"}), "tail does not take --older-than");
  // Options may come before the command; the check is the same.
  EXPECT_EQ(refusal({"--follow", "consumers"}), "consumers does not take --follow");
}

TEST(CliOptions, EachCommandAcceptsItsOwnOptions) {
  EXPECT_EQ(refusal({"tail", "-f", "--consumer", "c", "--event", "P.%", "--since", "end", "--max",
                     "3", "--poll-interval", "0.5"}),
            "");
  EXPECT_EQ(refusal({"consumers"}), "");
  EXPECT_EQ(refusal({"replay", "--consumer", "c", "--from-id", "4"}), "");
  EXPECT_EQ(refusal({"replay", "--consumer", "c", "--since", "beginning"}), "");
  EXPECT_EQ(refusal({"subscribe", "n", "--since", "beginning", "--event", "P.%"}), "");
  EXPECT_EQ(refusal({"unsubscribe", "n"}), "");
  EXPECT_EQ(refusal({"purge", "--older-than", "30 days", "--force"}), "");
}

TEST(CliOptions, DatabaseHelpAndVersionGoWithEveryCommand) {
  for (const char* c : {"tail", "consumers", "replay", "subscribe", "unsubscribe", "purge"}) {
    EXPECT_EQ(refusal({c, "--database", "dbname=x", "--help"}), "") << c;
    EXPECT_EQ(refusal({c, "--version"}), "") << c;
  }
}

TEST(CliOptions, ValuesParsed) {
  auto r = parse({"tail", "--max=5", "--poll-interval", "0.25", "--consumer", "c"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->command, "tail");
  EXPECT_EQ(r->max_events, 5);
  EXPECT_EQ(r->poll_interval_ms, 250);
  EXPECT_EQ(r->consumer, "c");
  EXPECT_NE(refusal({"tail", "--max", "-1"}), "");
  EXPECT_EQ(refusal({"tail", "--follow=yes"}), "--follow takes no value");
  EXPECT_EQ(refusal({"tail", "--consumer"}), "--consumer needs a value");
}

TEST(CliOptions, SinceTakesADurationAsThatLongAgo) {
  for (const char* cmd : {"tail", "subscribe"}) {
    std::vector<std::string> words = {cmd, "--since", "15m"};
    if (std::string(cmd) == "subscribe") words.insert(words.begin() + 1, "n");
    auto r = parse(words);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_TRUE(r->since.has_value());
    // 2026-12-01T22:25:00Z: a UTC timestamp, 15 minutes before now.
    ASSERT_EQ(r->since->size(), 20u) << *r->since;
    EXPECT_EQ((*r->since)[10], 'T');
    EXPECT_EQ(r->since->back(), 'Z');
  }
  auto r = parse({"replay", "--consumer", "c", "--since", "0"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->since->back(), 'Z');
  // Absolute timestamps and the two words are left as they are.
  for (const char* t : {"2026-11-26 10:00:00+00", "2026-11-26T10:00:00Z", "beginning", "end"}) {
    auto a = parse({"tail", "--since", t});
    ASSERT_TRUE(a.ok()) << t;
    EXPECT_EQ(*a->since, t);
  }
}

TEST(CliOptions, SinceRefusesRelativeWords) {
  const std::string msg = refusal({"tail", "--since", "1 minute ago"});
  EXPECT_EQ(msg,
            "--since needs 'beginning', 'end', a duration (90s, 15m, 24h, 7d, 2w: that long ago) "
            "or a timestamp ('2026-11-26 10:00:00+00'), not '1 minute ago'");
  EXPECT_NE(refusal({"replay", "--consumer", "c", "--since", "yesterday"}), "");
  EXPECT_NE(refusal({"tail", "--since", "15"}), "");
}

TEST(CliOptions, OlderThanTakesDurationIntervalOrTimestamp) {
  auto d = parse({"purge", "--older-than", "7d"});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->older_than_sql, "604800 seconds");
  EXPECT_FALSE(d->older_than_is_time);
  EXPECT_EQ(*d->older_than, "7d");
  auto i = parse({"purge", "--older-than", "30 days"});
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->older_than_sql, "30 days");
  auto t = parse({"purge", "--older-than", "2026-11-26 00:00:00+00"});
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->older_than_is_time);
  EXPECT_EQ(t->older_than_sql, "2026-11-26 00:00:00+00");
  EXPECT_NE(refusal({"purge", "--older-than", "1 day ago"}), "");
}

}  // namespace
}  // namespace ipayout::events
