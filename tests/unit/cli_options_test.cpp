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

}  // namespace
}  // namespace ipayout::events
