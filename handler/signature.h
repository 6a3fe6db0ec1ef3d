// i-payout's webhook signature (docs/ipayout.md, "The signature"):
//   x-signature = base64(HMAC-SHA256(key, SHA-256("<x-timestamp>#<notification URL>#<raw body>")))
// and the replay window on x-timestamp when it parses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "crypto.h"

namespace ipayout {

enum class SignaturePolicy { kRequired, kRecord, kOff };

// What we learned about one request's signature; stored with the event.
enum class SignatureVerdict {
  kValid,                   // signature matches, timestamp inside the window
  kValidUnparsedTimestamp,  // signature matches, x-timestamp in no format we know
  // The same two, when the endpoint's previous key matched, during its grace
  // period after `endpoint set-key --keep-previous` (the stored verdict says
  // which key verified).
  kValidPreviousKey,
  kValidUnparsedTimestampPreviousKey,
  kExpired,     // signature matches, timestamp outside the window
  kInvalid,     // signature present and wrong (or not base64 of 32 bytes)
  kMissing,     // x-signature or x-timestamp absent
  kNotChecked,  // policy off
};

const char* to_string(SignatureVerdict v);
const char* to_string(SignaturePolicy p);
std::optional<SignaturePolicy> parse_policy(std::string_view s);

// Would the endpoint's policy let this verdict through?
bool accepted_by(SignaturePolicy p, SignatureVerdict v);

// Did one of the endpoint's keys sign this body (whatever the timestamp says)?
// Such a body is i-payout's, so it is taken as JSON whatever its Content-Type.
bool signature_matched(SignatureVerdict v);

std::string compute_signature(const crypto::HmacKey& key, std::string_view timestamp,
                              std::string_view notification_url, std::string_view body);
std::string compute_signature(std::string_view key, std::string_view timestamp,
                              std::string_view notification_url, std::string_view body);

// Unix seconds from x-timestamp: unix seconds (<= 11 digits), unix milliseconds
// (12..14 digits) or RFC 3339 (`2026-11-26T10:15:30Z`, fractions, +hh:mm offsets).
std::optional<int64_t> parse_timestamp(std::string_view ts);

struct SignatureInput {
  std::string_view key;
  std::string_view notification_url;
  std::optional<std::string_view> timestamp;  // x-timestamp, absent = nullopt
  std::optional<std::string_view> signature;  // x-signature, absent = nullopt
  std::string_view body;
  int64_t now;     // unix seconds
  int64_t window;  // seconds
  // `key` prepared once (the endpoint's); nullptr: prepared here, per call.
  const crypto::HmacKey* prepared_key = nullptr;
};

SignatureVerdict verify_signature(const SignatureInput& in);

// The endpoint's previous key during a rotation's grace period.
struct PreviousKey {
  std::string_view key;  // "" = none
  // `key` prepared, only when the current key did not match; nullptr: per call.
  const crypto::LazyHmacKey* prepared = nullptr;
  int64_t until = 0;  // unix seconds; it verifies while now < until
};

// `in` with its key, then, only when that key does not match, with the
// previous key while its grace runs: a match there is kValidPreviousKey or
// kValidUnparsedTimestampPreviousKey (or kExpired). The time is checked here,
// per request, so a grace ends on time whenever the endpoints were loaded.
SignatureVerdict verify_signature(const SignatureInput& in, const PreviousKey& previous);

}  // namespace ipayout
