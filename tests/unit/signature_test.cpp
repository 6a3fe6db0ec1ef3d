// The i-payout signature scheme (docs/ipayout.md), the x-timestamp formats and the
// replay window, and how each endpoint policy treats each verdict.
#include "signature.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>

namespace ipayout {
namespace {

// The worked example of docs/ipayout.md, byte for byte.
constexpr std::string_view kKey = "pk_test_3f9a1c";
constexpr std::string_view kTimestamp = "1764151530";
constexpr int64_t kNow = 1764151530;  // 2025-11-26T10:05:30Z
constexpr std::string_view kUrl =
    "https://hooks.example.com/ipayout/webhooks/Zq3vK8mN2pR5tW7yB1cD4fG6hJ9kL0xA";
constexpr std::string_view kBody = R"({"event":"PAYMENT.COMPLETED"})";
constexpr std::string_view kSignature = "3DXEf6hd96h9JRu7po9JPIRrjsFWvcVBk/mVBGTMk9g=";
constexpr int64_t kWindow = 300;

SignatureInput example() {
  return SignatureInput{kKey, kUrl, kTimestamp, kSignature, kBody, kNow, kWindow};
}

// ---------------------------------------------------------------------------
// compute_signature / verify_signature on the worked example

TEST(Signature, WorkedExampleComputesDocumentedSignature) {
  EXPECT_EQ(compute_signature(kKey, kTimestamp, kUrl, kBody), kSignature);
}

TEST(Signature, WorkedExampleVerifies) {
  EXPECT_EQ(verify_signature(example()), SignatureVerdict::kValid);
}

TEST(Signature, PreparedKeyGivesTheSameVerdicts) {
  // The request path verifies with the endpoint's prepared key, not `key`.
  const crypto::HmacKey prepared(kKey);
  SignatureInput in = example();
  in.prepared_key = &prepared;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kValid);
  EXPECT_EQ(compute_signature(prepared, kTimestamp, kUrl, kBody), kSignature);
  const crypto::HmacKey other("pk_test_other");
  in.prepared_key = &other;  // the prepared key decides, whatever `key` says
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);
}

TEST(Signature, OneByteOfBodyChangedIsInvalid) {
  SignatureInput in = example();
  std::string body(kBody);
  body[10] = 'p';  // "PAYMENT" -> "pAYMENT"
  in.body = body;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);

  std::string with_space(kBody);
  with_space.insert(1, " ");  // re-serialised JSON is not the raw body
  in.body = with_space;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);

  std::string with_newline = std::string(kBody) + "\n";
  in.body = with_newline;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);
}

TEST(Signature, DifferentUrlIsInvalid) {
  const std::string base(kUrl);
  for (const std::string& url : {
           base + "/",                                         // trailing slash
           "http" + base.substr(5),                            // http instead of https
           "https://HOOKS.example.com" + base.substr(25),      // host case
           base + "?x=1",                                      // query
           "https://hooks.example.com:443" + base.substr(25),  // explicit port
       }) {
    SignatureInput in = example();
    in.notification_url = url;
    EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid) << url;
  }
}

TEST(Signature, DifferentKeyIsInvalid) {
  for (std::string_view key : {"pk_test_3f9a1d", "PK_TEST_3F9A1C", "pk_test_3f9a1c ", ""}) {
    SignatureInput in = example();
    in.key = key;
    EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid) << "key '" << key << "'";
  }
}

TEST(Signature, DifferentTimestampIsInvalid) {
  // Even one that means the same instant: the raw header text is signed.
  for (std::string_view ts :
       {"1764151531", "1764151530000", " 1764151530", "2025-11-26T10:05:30Z"}) {
    SignatureInput in = example();
    in.timestamp = ts;
    EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid) << "timestamp '" << ts << "'";
  }
}

TEST(Signature, SignatureMissingIsMissing) {
  SignatureInput in = example();
  in.signature = std::nullopt;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kMissing);
}

TEST(Signature, TimestampMissingIsMissing) {
  SignatureInput in = example();
  in.timestamp = std::nullopt;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kMissing);
}

TEST(Signature, BothMissingIsMissing) {
  SignatureInput in = example();
  in.timestamp = std::nullopt;
  in.signature = std::nullopt;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kMissing);
}

TEST(Signature, EmptySignatureCountsAsMissing) {
  // Documented behaviour: an empty x-signature header is treated like an absent one.
  SignatureInput in = example();
  in.signature = std::string_view("");
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kMissing);
}

TEST(Signature, EmptyTimestampIsSignedLikeAnyOther) {
  // An empty (but present) x-timestamp is not "missing": it is signed as "" and,
  // being unparsable, a correct signature over it gives kValidUnparsedTimestamp.
  SignatureInput in = example();
  in.timestamp = std::string_view("");
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);
  std::string sig = compute_signature(kKey, "", kUrl, kBody);
  in.signature = sig;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kValidUnparsedTimestamp);
}

TEST(Signature, NotBase64OrWrongLengthIsInvalid) {
  const std::string good(kSignature);
  for (const std::string& sig : {
           std::string(44, '!'),                                         // right length, not base64
           good.substr(0, 43),                                           // padding dropped
           good.substr(0, 40),                                           // truncated
           good + "=",                                                   // extra padding
           good + good,                                                  // doubled
           std::string("not a signature"),                               // garbage
           std::string("3DXEf6hd96h9JRu7po9JPIRrjsFWvcVBk_mVBGTMk9g="),  // base64url
       }) {
    SignatureInput in = example();
    in.signature = sig;
    EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid) << sig;
  }
}

TEST(Signature, HexOfTheMacIsInvalid) {
  // Some senders hex-encode the MAC: that is not the documented scheme.
  SignatureInput in = example();
  in.signature =
      std::string_view("dc35c47fa85df7a87d251bbba68f493c846b8ec156bdc54193f9950464cc93d8");
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);
}

TEST(Signature, SurroundingWhitespaceIsTolerated) {
  // Documented behaviour: spaces and tabs around x-signature are trimmed before
  // comparing (a header value's optional whitespace), so these still verify.
  const std::string good(kSignature);
  for (const std::string& sig : {" " + good, good + " ", "\t" + good + "\t", "  " + good + " \t"}) {
    SignatureInput in = example();
    in.signature = sig;
    EXPECT_EQ(verify_signature(in), SignatureVerdict::kValid) << "'" << sig << "'";
  }
  // Whitespace inside is not.
  SignatureInput in = example();
  std::string inner = good;
  inner.insert(20, " ");
  in.signature = inner;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);
  // Only blanks is no signature at all after trimming: 0 chars, so invalid.
  std::string blanks = "   ";
  in.signature = blanks;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);
}

TEST(Signature, CaseMatters) {
  // base64 is case-sensitive: a lower- or upper-cased signature is a different value.
  std::string lower(kSignature), upper(kSignature);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  SignatureInput in = example();
  in.signature = lower;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);
  in.signature = upper;
  EXPECT_EQ(verify_signature(in), SignatureVerdict::kInvalid);

  // And the signed text is case-sensitive too: body and URL path.
  EXPECT_NE(compute_signature(kKey, kTimestamp, kUrl, R"({"event":"payment.completed"})"),
            kSignature);
  std::string url(kUrl);
  url.back() = 'a';  // token ...L0xA -> ...L0xa
  EXPECT_NE(compute_signature(kKey, kTimestamp, url, kBody), kSignature);
}

TEST(Signature, SeparatorIsPartOfTheSignedText) {
  // "<ts>#<url>#<body>": moving a byte across a separator changes the signature.
  EXPECT_NE(compute_signature(kKey, "1764151530", kUrl, kBody),
            compute_signature(kKey, "176415153", kUrl, std::string("0") + std::string(kBody)));
}

// ---------------------------------------------------------------------------
// parse_timestamp

TEST(ParseTimestamp, UnixSeconds) {
  EXPECT_EQ(parse_timestamp("1764151530"), 1764151530);
  EXPECT_EQ(parse_timestamp("0"), 0);
  EXPECT_EQ(parse_timestamp("12345678901"), 12345678901);  // 11 digits: still seconds
}

TEST(ParseTimestamp, UnixMilliseconds) {
  EXPECT_EQ(parse_timestamp("1764151530000"), 1764151530);    // 13 digits
  EXPECT_EQ(parse_timestamp("1764151530999"), 1764151530);    // truncated, not rounded
  EXPECT_EQ(parse_timestamp("17641515301234"), 17641515301);  // 14 digits
}

TEST(ParseTimestamp, SurroundingBlanksIgnored) {
  EXPECT_EQ(parse_timestamp(" 1764151530\t"), 1764151530);
}

TEST(ParseTimestamp, Rfc3339Utc) {
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30Z"), 1764151530);
  EXPECT_EQ(parse_timestamp("2026-11-26T10:15:30Z"), 1795688130);
  EXPECT_EQ(parse_timestamp("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_timestamp("2000-02-29T00:00:00Z"), 951782400);  // leap day
  EXPECT_EQ(parse_timestamp("2024-12-31T23:59:59Z"), 1735689599);
  EXPECT_EQ(parse_timestamp("2025-11-26t10:05:30z"), 1764151530);  // RFC 3339 allows lower case
  EXPECT_EQ(parse_timestamp("2025-11-26 10:05:30Z"), 1764151530);  // and a space
}

TEST(ParseTimestamp, Rfc3339WithFraction) {
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30.123Z"), 1764151530);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30.999999999Z"), 1764151530);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30.5+00:00"), 1764151530);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30.Z"), std::nullopt);  // '.' needs digits
}

TEST(ParseTimestamp, Rfc3339WithOffsets) {
  // All of these are the same instant as the worked example.
  EXPECT_EQ(parse_timestamp("2025-11-26T12:05:30+02:00"), 1764151530);
  EXPECT_EQ(parse_timestamp("2025-11-26T04:35:30-05:30"), 1764151530);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30+00:00"), 1764151530);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30-00:00"), 1764151530);
  EXPECT_EQ(parse_timestamp("2025-11-27T01:05:30+15:00"), 1764151530);  // crosses a day
  EXPECT_EQ(parse_timestamp("2025-11-26T12:05:30.250+02:00"), 1764151530);
}

TEST(ParseTimestamp, Garbage) {
  EXPECT_EQ(parse_timestamp(""), std::nullopt);
  EXPECT_EQ(parse_timestamp("   "), std::nullopt);
  EXPECT_EQ(parse_timestamp("abc"), std::nullopt);
  EXPECT_EQ(parse_timestamp("1764151530x"), std::nullopt);
  EXPECT_EQ(parse_timestamp("-1764151530"), std::nullopt);
  EXPECT_EQ(parse_timestamp("+1764151530"), std::nullopt);
  EXPECT_EQ(parse_timestamp("1764151530.5"), std::nullopt);
  EXPECT_EQ(parse_timestamp("Wed, 26 Nov 2025 10:05:30 GMT"), std::nullopt);
}

TEST(ParseTimestamp, FifteenOrMoreDigitsRefused) {
  EXPECT_EQ(parse_timestamp("176415153000000"), std::nullopt);  // 15 digits (microseconds)
  EXPECT_EQ(parse_timestamp("1764151530000000000"), std::nullopt);
  EXPECT_EQ(parse_timestamp("99999999999999999999999999"), std::nullopt);  // no overflow
}

TEST(ParseTimestamp, Rfc3339WithoutZoneRefused) {
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30"), std::nullopt);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30.123"), std::nullopt);
  EXPECT_EQ(parse_timestamp("2025-11-26"), std::nullopt);
}

TEST(ParseTimestamp, Rfc3339MalformedRefused) {
  EXPECT_EQ(parse_timestamp("2025-13-26T10:05:30Z"), std::nullopt);  // month 13
  EXPECT_EQ(parse_timestamp("2025-00-26T10:05:30Z"), std::nullopt);
  EXPECT_EQ(parse_timestamp("2025-11-00T10:05:30Z"), std::nullopt);
  EXPECT_EQ(parse_timestamp("2025-11-26T24:05:30Z"), std::nullopt);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:60:30Z"), std::nullopt);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30+0200"), std::nullopt);  // offset needs ':'
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30+02"), std::nullopt);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30ZZ"), std::nullopt);
  EXPECT_EQ(parse_timestamp("2025-11-26T10:05:30Z "), 1764151530);  // blanks are trimmed
  EXPECT_EQ(parse_timestamp("2025/11/26T10:05:30Z"), std::nullopt);
  EXPECT_EQ(parse_timestamp("25-11-26T10:05:30Z"), std::nullopt);
}

// ---------------------------------------------------------------------------
// The replay window

SignatureVerdict verdict_at(std::string_view ts, int64_t now) {
  std::string sig = compute_signature(kKey, ts, kUrl, kBody);
  return verify_signature({kKey, kUrl, ts, sig, kBody, now, kWindow});
}

TEST(ReplayWindow, ExactlyWindowEitherSideIsValid) {
  EXPECT_EQ(verdict_at(kTimestamp, kNow + 300), SignatureVerdict::kValid);  // 300 s old
  EXPECT_EQ(verdict_at(kTimestamp, kNow - 300), SignatureVerdict::kValid);  // 300 s ahead
}

TEST(ReplayWindow, OneSecondBeyondIsExpired) {
  EXPECT_EQ(verdict_at(kTimestamp, kNow + 301), SignatureVerdict::kExpired);  // past
  EXPECT_EQ(verdict_at(kTimestamp, kNow - 301), SignatureVerdict::kExpired);  // future
  EXPECT_EQ(verdict_at(kTimestamp, 0), SignatureVerdict::kExpired);
}

TEST(ReplayWindow, AppliesToMillisecondsAndRfc3339) {
  EXPECT_EQ(verdict_at("1764151530000", kNow), SignatureVerdict::kValid);
  EXPECT_EQ(verdict_at("1764151530000", kNow + 301), SignatureVerdict::kExpired);
  EXPECT_EQ(verdict_at("2025-11-26T12:05:30+02:00", kNow + 300), SignatureVerdict::kValid);
  EXPECT_EQ(verdict_at("2025-11-26T12:05:30+02:00", kNow - 301), SignatureVerdict::kExpired);
}

TEST(ReplayWindow, WindowIsAParameter) {
  std::string sig = compute_signature(kKey, kTimestamp, kUrl, kBody);
  EXPECT_EQ(verify_signature({kKey, kUrl, kTimestamp, sig, kBody, kNow + 10, 10}),
            SignatureVerdict::kValid);
  EXPECT_EQ(verify_signature({kKey, kUrl, kTimestamp, sig, kBody, kNow + 11, 10}),
            SignatureVerdict::kExpired);
}

TEST(ReplayWindow, UnparsableTimestampWithCorrectSignature) {
  EXPECT_EQ(verdict_at("Wed, 26 Nov 2025 10:05:30 GMT", kNow),
            SignatureVerdict::kValidUnparsedTimestamp);
  // The window cannot apply to what does not parse, whatever "now" is.
  EXPECT_EQ(verdict_at("not-a-time", 0), SignatureVerdict::kValidUnparsedTimestamp);
}

TEST(ReplayWindow, ExpiredNeedsACorrectSignature) {
  // A wrong signature is kInvalid even when the timestamp is also stale.
  std::string sig = compute_signature("other-key", kTimestamp, kUrl, kBody);
  EXPECT_EQ(verify_signature({kKey, kUrl, kTimestamp, sig, kBody, kNow + 10000, kWindow}),
            SignatureVerdict::kInvalid);
}

// ---------------------------------------------------------------------------
// Policies

TEST(Policy, ParsePolicy) {
  EXPECT_EQ(parse_policy("required"), SignaturePolicy::kRequired);
  EXPECT_EQ(parse_policy("record"), SignaturePolicy::kRecord);
  EXPECT_EQ(parse_policy("off"), SignaturePolicy::kOff);
  EXPECT_EQ(parse_policy(""), std::nullopt);
  EXPECT_EQ(parse_policy("Required"), std::nullopt);
  EXPECT_EQ(parse_policy("required "), std::nullopt);
  EXPECT_EQ(parse_policy("on"), std::nullopt);
  EXPECT_EQ(parse_policy("none"), std::nullopt);
}

TEST(Policy, ToStringRoundTrips) {
  for (auto p : {SignaturePolicy::kRequired, SignaturePolicy::kRecord, SignaturePolicy::kOff}) {
    EXPECT_EQ(parse_policy(to_string(p)), p);
  }
}

TEST(Policy, VerdictNames) {
  EXPECT_STREQ(to_string(SignatureVerdict::kValid), "valid");
  EXPECT_STREQ(to_string(SignatureVerdict::kValidUnparsedTimestamp), "valid_unparsed_timestamp");
  EXPECT_STREQ(to_string(SignatureVerdict::kExpired), "expired");
  EXPECT_STREQ(to_string(SignatureVerdict::kInvalid), "invalid");
  EXPECT_STREQ(to_string(SignatureVerdict::kMissing), "missing");
  EXPECT_STREQ(to_string(SignatureVerdict::kNotChecked), "not_checked");
}

struct AcceptCase {
  SignaturePolicy policy;
  SignatureVerdict verdict;
  bool accepted;
};

TEST(Policy, AcceptedByEveryPolicyAndVerdict) {
  using P = SignaturePolicy;
  using V = SignatureVerdict;
  const AcceptCase cases[] = {
      {P::kRequired, V::kValid, true},
      {P::kRequired, V::kValidUnparsedTimestamp, true},
      {P::kRequired, V::kExpired, false},
      {P::kRequired, V::kInvalid, false},
      {P::kRequired, V::kMissing, false},
      {P::kRequired, V::kNotChecked, false},  // "required" never accepts an unchecked event
      {P::kRecord, V::kValid, true},
      {P::kRecord, V::kValidUnparsedTimestamp, true},
      {P::kRecord, V::kExpired, true},
      {P::kRecord, V::kInvalid, true},
      {P::kRecord, V::kMissing, true},
      {P::kRecord, V::kNotChecked, true},
      {P::kOff, V::kValid, true},
      {P::kOff, V::kValidUnparsedTimestamp, true},
      {P::kOff, V::kExpired, true},
      {P::kOff, V::kInvalid, true},
      {P::kOff, V::kMissing, true},
      {P::kOff, V::kNotChecked, true},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(accepted_by(c.policy, c.verdict), c.accepted)
        << to_string(c.policy) << " x " << to_string(c.verdict);
  }
}

}  // namespace
}  // namespace ipayout
