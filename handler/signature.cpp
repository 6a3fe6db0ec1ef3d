#include "signature.h"

#include <ctime>
#include <string>

#include "crypto.h"

namespace ipayout {

const char* to_string(SignatureVerdict v) {
  switch (v) {
    case SignatureVerdict::kValid:
      return "valid";
    case SignatureVerdict::kValidUnparsedTimestamp:
      return "valid_unparsed_timestamp";
    case SignatureVerdict::kValidPreviousKey:
      return "valid_previous_key";
    case SignatureVerdict::kValidUnparsedTimestampPreviousKey:
      return "valid_unparsed_timestamp_previous_key";
    case SignatureVerdict::kExpired:
      return "expired";
    case SignatureVerdict::kInvalid:
      return "invalid";
    case SignatureVerdict::kMissing:
      return "missing";
    case SignatureVerdict::kNotChecked:
      return "not_checked";
  }
  return "unknown";
}

const char* to_string(SignaturePolicy p) {
  switch (p) {
    case SignaturePolicy::kRequired:
      return "required";
    case SignaturePolicy::kRecord:
      return "record";
    case SignaturePolicy::kOff:
      return "off";
  }
  return "unknown";
}

std::optional<SignaturePolicy> parse_policy(std::string_view s) {
  if (s == "required") return SignaturePolicy::kRequired;
  if (s == "record") return SignaturePolicy::kRecord;
  if (s == "off") return SignaturePolicy::kOff;
  return std::nullopt;
}

bool accepted_by(SignaturePolicy p, SignatureVerdict v) {
  if (p != SignaturePolicy::kRequired) return true;
  // The timestamp format is undocumented: a correct signature over an unparsable
  // timestamp is accepted and recorded as such rather than rejected (docs/ipayout.md).
  return v == SignatureVerdict::kValid || v == SignatureVerdict::kValidUnparsedTimestamp ||
         v == SignatureVerdict::kValidPreviousKey ||
         v == SignatureVerdict::kValidUnparsedTimestampPreviousKey;
}

bool signature_matched(SignatureVerdict v) {
  // kExpired too: the key matched; only the timestamp is outside the window.
  return accepted_by(SignaturePolicy::kRequired, v) || v == SignatureVerdict::kExpired;
}

std::string compute_signature(const crypto::HmacKey& key, std::string_view timestamp,
                              std::string_view notification_url, std::string_view body) {
  crypto::Digest digest = crypto::sha256({timestamp, "#", notification_url, "#", body});
  crypto::Digest mac = key.mac(digest);
  return crypto::base64(mac.data(), mac.size());
}

std::string compute_signature(std::string_view key, std::string_view timestamp,
                              std::string_view notification_url, std::string_view body) {
  return compute_signature(crypto::HmacKey(key), timestamp, notification_url, body);
}

namespace {

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

int digits(std::string_view s, size_t pos, size_t n) {
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) v = v * 10 + (s[i] - '0');
  return v;
}

bool digits_at(std::string_view s, size_t pos, size_t n) {
  return pos + n <= s.size() && all_digits(s.substr(pos, n));
}

// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::optional<int64_t> parse_rfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)
  if (!digits_at(s, 0, 4) || s.size() < 20 || s[4] != '-' || !digits_at(s, 5, 2) || s[7] != '-' ||
      !digits_at(s, 8, 2) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !digits_at(s, 11, 2) || s[13] != ':' || !digits_at(s, 14, 2) || s[16] != ':' ||
      !digits_at(s, 17, 2)) {
    return std::nullopt;
  }
  int year = digits(s, 0, 4), month = digits(s, 5, 2), day = digits(s, 8, 2);
  int hour = digits(s, 11, 2), minute = digits(s, 14, 2), second = digits(s, 17, 2);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return std::nullopt;
  }
  size_t pos = 19;
  if (pos < s.size() && s[pos] == '.') {
    size_t start = ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
    if (pos == start || pos - start > 9) return std::nullopt;
  }
  int64_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    if (!digits_at(s, pos + 1, 2) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !digits_at(s, pos + 4, 2)) {
      return std::nullopt;
    }
    int oh = digits(s, pos + 1, 2), om = digits(s, pos + 4, 2);
    if (oh > 23 || om > 59) return std::nullopt;
    offset = (oh * 3600 + om * 60) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;  // a time without a zone is ambiguous
  }
  if (pos != s.size()) return std::nullopt;
  int64_t days = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  return days * 86400 + hour * 3600 + minute * 60 + second - offset;
}

}  // namespace

std::optional<int64_t> parse_timestamp(std::string_view ts) {
  while (!ts.empty() && (ts.front() == ' ' || ts.front() == '\t')) ts.remove_prefix(1);
  while (!ts.empty() && (ts.back() == ' ' || ts.back() == '\t')) ts.remove_suffix(1);
  if (all_digits(ts)) {
    if (ts.size() <= 11) return std::stoll(std::string(ts));
    if (ts.size() <= 14) return std::stoll(std::string(ts)) / 1000;
    return std::nullopt;
  }
  return parse_rfc3339(ts);
}

SignatureVerdict verify_signature(const SignatureInput& in) {
  if (!in.signature || !in.timestamp || in.signature->empty()) return SignatureVerdict::kMissing;
  // A base64 HMAC-SHA256 is 44 characters; anything else is wrong without hashing.
  std::string_view got = *in.signature;
  while (!got.empty() && (got.back() == ' ' || got.back() == '\t')) got.remove_suffix(1);
  while (!got.empty() && (got.front() == ' ' || got.front() == '\t')) got.remove_prefix(1);
  if (got.size() != 44) return SignatureVerdict::kInvalid;
  std::string want =
      in.prepared_key
          ? compute_signature(*in.prepared_key, *in.timestamp, in.notification_url, in.body)
          : compute_signature(in.key, *in.timestamp, in.notification_url, in.body);
  if (!crypto::equal_constant_time(want, got)) return SignatureVerdict::kInvalid;
  std::optional<int64_t> ts = parse_timestamp(*in.timestamp);
  if (!ts) return SignatureVerdict::kValidUnparsedTimestamp;
  int64_t skew = *ts > in.now ? *ts - in.now : in.now - *ts;
  return skew <= in.window ? SignatureVerdict::kValid : SignatureVerdict::kExpired;
}

SignatureVerdict verify_signature(const SignatureInput& in, const PreviousKey& previous) {
  SignatureVerdict v = verify_signature(in);
  if (v != SignatureVerdict::kInvalid || previous.key.empty() || in.now >= previous.until) {
    return v;
  }
  SignatureInput old = in;
  old.key = previous.key;
  old.prepared_key = previous.prepared ? &previous.prepared->get() : nullptr;
  switch (verify_signature(old)) {
    case SignatureVerdict::kValid:
      return SignatureVerdict::kValidPreviousKey;
    case SignatureVerdict::kValidUnparsedTimestamp:
      return SignatureVerdict::kValidUnparsedTimestampPreviousKey;
    case SignatureVerdict::kExpired:
      return SignatureVerdict::kExpired;
    default:
      return v;
  }
}

}  // namespace ipayout
