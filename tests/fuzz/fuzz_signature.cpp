// libFuzzer harness: i-payout's signature (compute_signature, verify_signature,
// accepted_by) and x-timestamp parsing (parse_timestamp).
//
// Input: lines  key / notification URL / x-timestamp / x-signature / body (the
// rest). "~" as x-timestamp or x-signature means the header is absent. As
// x-signature, "!" is the correct signature and "!!" the correct one wrapped in
// blanks. An input starting with '{' is a body signed correctly with the worked
// example's key, URL and timestamp.
//
// Invariants:
// - parse_timestamp agrees with an independent reading: digits as unix seconds
//   (<= 11) or milliseconds (12..14), RFC 3339 through glibc's timegm;
// - a correct signature is never kInvalid or kMissing, and its verdict follows
//   the timestamp (unparsable -> kValidUnparsedTimestamp, else the window);
// - any other signature is kInvalid (kMissing when empty or a header absent);
// - accepted_by: only `required` refuses, and only what is not valid;
// - the same key as the previous key of a rotation: the same verdict, naming
//   the previous key, while the grace runs, and never valid after it.
#include <cstdint>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "signature.h"

namespace {

using namespace ipayout;
using namespace ipayout::fuzz;

constexpr int64_t kWindow = 300;

std::string_view trim_blanks(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

int num(std::string_view s, size_t pos, size_t n) {
  return std::stoi(std::string(s.substr(pos, n)));
}

// What parse_timestamp must return, computed another way (glibc's timegm
// normalises out-of-range days and leap seconds as days_from_civil does).
void check_timestamp(std::string_view raw) {
  std::optional<int64_t> got = parse_timestamp(raw);
  std::string_view ts = trim_blanks(raw);
  if (all_digits(ts)) {
    if (ts.size() <= 11) {
      FUZZ_REQUIRE(got && *got == std::stoll(std::string(ts)), "unix seconds misread");
    } else if (ts.size() <= 14) {
      FUZZ_REQUIRE(got && *got == std::stoll(std::string(ts)) / 1000, "unix ms misread");
    } else {
      FUZZ_REQUIRE(!got, "more than 14 digits accepted");
    }
    return;
  }
  if (!got) return;
  // Accepted as RFC 3339: the fixed-position fields must be there.
  FUZZ_REQUIRE(ts.size() >= 20 && ts[4] == '-' && ts[7] == '-' && ts[13] == ':' && ts[16] == ':',
               "accepted a timestamp that is not RFC 3339");
  struct tm tm {};
  tm.tm_year = num(ts, 0, 4) - 1900;
  tm.tm_mon = num(ts, 5, 2) - 1;
  tm.tm_mday = num(ts, 8, 2);
  tm.tm_hour = num(ts, 11, 2);
  tm.tm_min = num(ts, 14, 2);
  tm.tm_sec = num(ts, 17, 2);
  FUZZ_REQUIRE(tm.tm_mon >= 0 && tm.tm_mon <= 11 && tm.tm_mday >= 1 && tm.tm_mday <= 31 &&
                   tm.tm_hour <= 23 && tm.tm_min <= 59 && tm.tm_sec <= 60,
               "accepted an out-of-range field");
  int64_t offset = 0;
  char last = ts.back();
  if (last != 'Z' && last != 'z') {
    std::string_view zone = ts.substr(ts.size() - 6);
    FUZZ_REQUIRE((zone[0] == '+' || zone[0] == '-') && zone[3] == ':', "bad zone accepted");
    offset = (num(zone, 1, 2) * 3600 + num(zone, 4, 2) * 60) * (zone[0] == '-' ? -1 : 1);
  }
  int64_t want = static_cast<int64_t>(timegm(&tm)) - offset;
  FUZZ_REQUIRE(*got == want, "RFC 3339 %.*s: got %lld, timegm says %lld",
               static_cast<int>(ts.size()), ts.data(), static_cast<long long>(*got),
               static_cast<long long>(want));
}

void check_policies(SignatureVerdict v) {
  FUZZ_REQUIRE(accepted_by(SignaturePolicy::kOff, v), "policy off refused");
  FUZZ_REQUIRE(accepted_by(SignaturePolicy::kRecord, v), "policy record refused");
  bool want = v == SignatureVerdict::kValid || v == SignatureVerdict::kValidUnparsedTimestamp ||
              v == SignatureVerdict::kValidPreviousKey ||
              v == SignatureVerdict::kValidUnparsedTimestampPreviousKey;
  FUZZ_REQUIRE(accepted_by(SignaturePolicy::kRequired, v) == want, "policy required: %s",
               to_string(v));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string key, url, body;
  std::optional<std::string> timestamp, signature;
  bool want_correct = false, wrap = false;
  if (!in.empty() && in.front() == '{') {
    key = kKey;
    url = kUrl;
    timestamp = std::string(kTimestamp);
    want_correct = true;
    body = std::string(in);
  } else {
    std::string_view line;
    if (next_line(in, line)) key = line;
    if (next_line(in, line)) url = line;
    if (next_line(in, line) && line != "~") timestamp = std::string(line);
    if (next_line(in, line) && line != "~") {
      if (line == "!" || line == "!!") {
        want_correct = true;
        wrap = line == "!!";
      } else {
        signature = std::string(line);
      }
    }
    body = std::string(in);
  }

  if (timestamp) check_timestamp(*timestamp);

  const std::string correct = compute_signature(key, timestamp.value_or(""), url, body);
  FUZZ_REQUIRE(correct.size() == 44 && correct.back() == '=',
               "signature is not base64 of 32 bytes");
  if (want_correct && timestamp) signature = wrap ? " \t" + correct + "\t " : correct;

  std::optional<std::string_view> ts_view, sig_view;
  if (timestamp) ts_view = *timestamp;
  if (signature) sig_view = *signature;
  const SignatureVerdict v = verify_signature({key, url, ts_view, sig_view, body, kNow, kWindow});
  check_policies(v);

  if (!timestamp || !signature || signature->empty()) {
    FUZZ_REQUIRE(v == SignatureVerdict::kMissing, "absent header gave %s", to_string(v));
  } else if (trim_blanks(*signature) != correct) {
    FUZZ_REQUIRE(v == SignatureVerdict::kInvalid, "wrong signature gave %s", to_string(v));
  } else {
    std::optional<int64_t> ts = parse_timestamp(*timestamp);
    SignatureVerdict want = SignatureVerdict::kValidUnparsedTimestamp;
    if (ts) {
      int64_t skew = *ts > kNow ? *ts - kNow : kNow - *ts;
      want = skew <= kWindow ? SignatureVerdict::kValid : SignatureVerdict::kExpired;
    }
    FUZZ_REQUIRE(v == want, "correct signature gave %s, want %s", to_string(v), to_string(want));
  }

  // The same key as an endpoint's previous one, behind another current key
  // (a rotation): while its grace runs the verdict is v naming the previous
  // key; from its end on, only a missing header is told apart from a wrong one.
  if (!key.empty()) {
    const std::string current = std::string(key) + "-rotated";
    const SignatureInput rotated{current, url, ts_view, sig_view, body, kNow, kWindow};
    SignatureVerdict want = v;
    if (v == SignatureVerdict::kValid) want = SignatureVerdict::kValidPreviousKey;
    if (v == SignatureVerdict::kValidUnparsedTimestamp) {
      want = SignatureVerdict::kValidUnparsedTimestampPreviousKey;
    }
    const SignatureVerdict in_grace = verify_signature(rotated, {key, nullptr, kNow + 1});
    FUZZ_REQUIRE(in_grace == want, "previous key gave %s, want %s", to_string(in_grace),
                 to_string(want));
    check_policies(in_grace);
    const SignatureVerdict after = verify_signature(rotated, {key, nullptr, kNow});
    const SignatureVerdict want_after =
        v == SignatureVerdict::kMissing ? SignatureVerdict::kMissing : SignatureVerdict::kInvalid;
    FUZZ_REQUIRE(after == want_after, "previous key after its grace gave %s", to_string(after));
  }
  return 0;
}
