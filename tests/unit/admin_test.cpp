// `ipayout-webhookd endpoint VERB ...`: every verb refuses options it does not
// take, options without their value and a wrong number of arguments (main
// turns the error into exit status 2 before anything connects).
#include "admin.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ipayout {
namespace {

// The error message, or "" when the words were accepted.
std::string refusal(const std::vector<std::string>& args) {
  auto r = parse_endpoint_args(args);
  return r.ok() ? "" : r.error().message;
}

TEST(EndpointArgs, UnknownOptionRefusedByEveryVerb) {
  const std::vector<std::vector<std::string>> calls = {
      {"endpoint", "add", "shop", "--notification-url=https://h", "--frobnicate"},
      {"endpoint", "list", "--frobnicate"},
      {"endpoint", "disable", "shop", "--frobnicate"},
      {"endpoint", "enable", "shop", "--frobnicate"},
      {"endpoint", "set-key", "shop", "--frobnicate"},
      {"endpoint", "set-policy", "shop", "record", "--frobnicate"},
      {"endpoint", "rotate-token", "shop", "--notification-url=https://h", "--frobnicate"},
      {"endpoint", "set-response", "shop", "--status=202", "--frobnicate"},
      {"endpoint", "set-required-header", "shop", "X-A: b", "--frobnicate"},
      {"endpoint", "clear-required-header", "shop", "--frobnicate"},
  };
  for (const auto& args : calls) {
    EXPECT_EQ(refusal(args), "endpoint " + args[1] + ": unknown option '--frobnicate'") << args[1];
  }
}

TEST(EndpointArgs, TheIssuesExamplesAreRefused) {
  EXPECT_EQ(refusal({"endpoint", "list", "--frobnicate"}),
            "endpoint list: unknown option '--frobnicate'");
  EXPECT_EQ(refusal({"endpoint", "set-key", "NAME", "--bogus=1"}),
            "endpoint set-key: unknown option '--bogus'");
}

TEST(EndpointArgs, AnotherVerbsOptionIsRefused) {
  // --key belongs to add and set-key; on rotate-token it would do nothing.
  EXPECT_EQ(refusal({"endpoint", "rotate-token", "shop", "--notification-url=u", "--key=k"}),
            "endpoint rotate-token: unknown option '--key'");
  EXPECT_EQ(refusal({"endpoint", "set-key", "shop", "--policy=off"}),
            "endpoint set-key: unknown option '--policy'");
  EXPECT_EQ(refusal({"endpoint", "list", "-x"}), "endpoint list: unknown option '-x'");
}

TEST(EndpointArgs, KnownOptionsInBothForms) {
  auto r = parse_endpoint_args({"endpoint", "add", "shop", "--notification-url", "https://h",
                                "--key-file=/k", "--policy=record", "--success-status", "202",
                                "--success-body={}"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->verb, "add");
  EXPECT_EQ(r->positional, std::vector<std::string>{"shop"});
  EXPECT_EQ(r->values.at("notification-url"), "https://h");
  EXPECT_EQ(r->values.at("key-file"), "/k");
  EXPECT_EQ(r->values.at("policy"), "record");
  EXPECT_EQ(r->values.at("success-status"), "202");
  EXPECT_EQ(r->values.at("success-body"), "{}");

  auto k = parse_endpoint_args({"endpoint", "set-key", "shop", "--key", "secret"});
  ASSERT_TRUE(k.ok()) << k.error().message;
  EXPECT_EQ(k->values.at("key"), "secret");
  EXPECT_EQ(k->positional, std::vector<std::string>{"shop"});
}

TEST(EndpointArgs, OptionWithoutValueRefused) {
  EXPECT_EQ(refusal({"endpoint", "set-key", "shop", "--key"}),
            "endpoint set-key: --key needs a value");
}

TEST(EndpointArgs, ArgumentCountsChecked) {
  EXPECT_EQ(refusal({"endpoint", "list", "extra"}), "endpoint list: unexpected argument 'extra'");
  EXPECT_EQ(refusal({"endpoint", "add"}), "endpoint add: expects NAME");
  EXPECT_EQ(refusal({"endpoint", "set-policy", "shop"}),
            "endpoint set-policy: expects NAME POLICY");
  EXPECT_EQ(refusal({"endpoint", "disable", "a", "b"}),
            "endpoint disable: unexpected argument 'b'");
  EXPECT_EQ(refusal({"endpoint", "set-policy", "shop", "off"}), "");
  EXPECT_EQ(refusal({"endpoint", "enable", "shop"}), "");
  EXPECT_EQ(refusal({"endpoint", "list"}), "");
}

TEST(EndpointArgs, UnknownOrMissingVerbRefused) {
  EXPECT_EQ(refusal({"endpoint", "nope"}), "endpoint: unknown command 'nope'");
  EXPECT_EQ(refusal({"endpoint"}), "endpoint: which command?");
}

TEST(EndpointArgs, SuccessStatusMustBeANumber) {
  EXPECT_NE(refusal({"endpoint", "add", "s", "--notification-url=u", "--success-status=abc"}), "");
  EXPECT_NE(refusal({"endpoint", "add", "s", "--notification-url=u", "--success-status=2000"}), "");
}

TEST(EndpointArgs, KeepPreviousTakesADuration) {
  for (const char* d : {"90s", "15m", "24h", "7d", "2w", "0"}) {
    auto k = parse_endpoint_args({"endpoint", "set-key", "shop", "--key=k", "--keep-previous", d});
    ASSERT_TRUE(k.ok()) << d << ": " << k.error().message;
    EXPECT_EQ(k->values.at("keep-previous"), d);
    EXPECT_EQ(refusal({"endpoint", "rotate-token", "shop", "--notification-url=u",
                       std::string("--keep-previous=") + d}),
              "");
  }
  EXPECT_EQ(refusal({"endpoint", "set-key", "shop", "--key=k", "--keep-previous=1 day"}),
            "endpoint set-key: --keep-previous needs a duration (90s, 15m, 24h, 7d, 2w or 0), "
            "not '1 day'");
  EXPECT_NE(refusal({"endpoint", "rotate-token", "shop", "--keep-previous=24"}), "");
  EXPECT_NE(refusal({"endpoint", "set-key", "shop", "--keep-previous=-1h"}), "");
}

TEST(EndpointArgs, SetResponseAndRequiredHeader) {
  EXPECT_EQ(refusal({"endpoint", "set-response", "shop", "--status", "202", "--body", "OK"}), "");
  EXPECT_EQ(refusal({"endpoint", "set-response", "shop", "--body="}), "");
  EXPECT_EQ(refusal({"endpoint", "set-response", "shop"}),
            "endpoint set-response: expects --status N and/or --body T");
  EXPECT_EQ(refusal({"endpoint", "set-response", "shop", "--status=abc"}),
            "endpoint set-response: --status needs an HTTP status, not 'abc'");
  EXPECT_EQ(refusal({"endpoint", "set-required-header", "shop", "X-A: b"}), "");
  EXPECT_EQ(refusal({"endpoint", "set-required-header", "shop"}),
            "endpoint set-required-header: expects NAME 'X-NAME: VALUE'");
  EXPECT_EQ(refusal({"endpoint", "clear-required-header", "shop"}), "");
}

TEST(EndpointArgs, DoubleDashEndsOptions) {
  auto r = parse_endpoint_args({"endpoint", "disable", "--", "--odd-name"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->positional, std::vector<std::string>{"--odd-name"});
}

}  // namespace
}  // namespace ipayout
