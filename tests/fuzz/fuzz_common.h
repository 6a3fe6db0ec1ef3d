// Shared by the libFuzzer harnesses: the worked example's endpoint, the text
// input format the request harnesses share, and invariant checks that abort
// (libFuzzer saves the input as a crash).
//
// Request input format (fuzz_request, fuzz_fcgi; readable so that seeds can be
// written by hand and a finding can be read):
//
//   <options line>
//   NAME=VALUE        FastCGI params, one per line, as nginx would send them
//   ...
//   <empty line>
//   <body: every remaining byte>
//
// Two values are computed rather than taken literally, so that the fuzzer gets
// past the checks it cannot satisfy by mutation:
//   HTTP_X_SIGNATURE=!   the correct signature over x-timestamp, URL and body
//   CONTENT_LENGTH=!     the body's length
// An input that starts with '{' is a bare body (a fixture) sent as a correctly
// signed POST with the default head, so tests/fixtures seed every harness.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "endpoints.h"
#include "event.h"
#include "settings.h"
#include "signature.h"

namespace ipayout::fuzz {

// The worked example of docs/ipayout.md.
constexpr std::string_view kToken = "Zq3vK8mN2pR5tW7yB1cD4fG6hJ9kL0xA";
constexpr std::string_view kKey = "pk_test_3f9a1c";
constexpr std::string_view kUrl =
    "https://hooks.example.com/ipayout/webhooks/Zq3vK8mN2pR5tW7yB1cD4fG6hJ9kL0xA";
constexpr std::string_view kTimestamp = "1764151530";
constexpr int64_t kNow = 1764151530;

#define FUZZ_REQUIRE(cond, ...)                                                           \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n  ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                  \
      std::fprintf(stderr, "\n");                                                         \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

// Next '\n'-terminated line of `in` (without the '\n'); false at the end. A last
// line without '\n' counts.
inline bool next_line(std::string_view& in, std::string_view& line) {
  if (in.empty()) return false;
  size_t nl = in.find('\n');
  if (nl == std::string_view::npos) {
    line = in;
    in = {};
  } else {
    line = in.substr(0, nl);
    in.remove_prefix(nl + 1);
  }
  return true;
}

// A copy with the capacity simdjson needs past the end (EventParser::parse's
// precondition, as read_body leaves it).
inline std::string padded(std::string_view s) {
  std::string out;
  out.reserve(EventParser::padded_capacity(s.size()));
  out.assign(s.data(), s.size());
  return out;
}

inline const Settings& default_settings() {
  static const Settings s = [] {
    Settings out;
    for (const auto& def : setting_defs()) {
      if (std::string_view(def.name) == "dedup_pointers") out.dedup_pointers = def.default_value;
    }
    return out;
  }();
  return s;
}

inline std::vector<DedupRule> default_rules() {
  auto rules = parse_dedup_rules(default_settings().dedup_pointers);
  FUZZ_REQUIRE(rules.ok(), "default dedup_pointers do not parse");
  return rules.value();
}

inline SignaturePolicy policy_from_options(std::string_view options) {
  for (char c : options) {
    if (c == 'q') return SignaturePolicy::kRequired;
    if (c == 'r') return SignaturePolicy::kRecord;
    if (c == 'o') return SignaturePolicy::kOff;
  }
  return SignaturePolicy::kRequired;
}

// One endpoint (id 1, the worked example's token, key and URL) per policy.
inline const EndpointCache& endpoint_cache(SignaturePolicy policy) {
  static const auto make = [](SignaturePolicy p) {
    auto map = std::make_shared<EndpointMap>();
    Endpoint ep;
    ep.id = 1;
    ep.name = "fuzz";
    ep.key = std::string(kKey);
    ep.notification_url = std::string(kUrl);
    ep.policy = p;
    map->put(token_hash(kToken), std::make_shared<const Endpoint>(ep));
    auto cache = std::make_unique<EndpointCache>();
    cache->replace(map);
    return cache;
  };
  static const auto required = make(SignaturePolicy::kRequired);
  static const auto record = make(SignaturePolicy::kRecord);
  static const auto off = make(SignaturePolicy::kOff);
  switch (policy) {
    case SignaturePolicy::kRecord:
      return *record;
    case SignaturePolicy::kOff:
      return *off;
    case SignaturePolicy::kRequired:
      break;
  }
  return *required;
}

struct TextRequest {
  std::string options;
  std::vector<std::string> params;  // "NAME=VALUE", computed values filled in
  std::string body;
};

inline TextRequest parse_text_request(const uint8_t* data, size_t size) {
  TextRequest r;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (!in.empty() && in.front() == '{') {
    r.body = std::string(in);
    r.params = {"REQUEST_METHOD=POST",
                "DOCUMENT_URI=/ipayout/webhooks/" + std::string(kToken),
                "CONTENT_TYPE=application/json",
                "CONTENT_LENGTH=!",
                "HTTP_X_TIMESTAMP=" + std::string(kTimestamp),
                "HTTP_X_SIGNATURE=!",
                "REMOTE_ADDR=127.0.0.1"};
  } else {
    std::string_view line;
    if (next_line(in, line)) r.options = std::string(line);
    while (next_line(in, line) && !line.empty()) r.params.emplace_back(line);
    r.body = std::string(in);
  }
  std::string timestamp;
  for (const auto& p : r.params) {
    if (p.rfind("HTTP_X_TIMESTAMP=", 0) == 0) {
      timestamp = p.substr(17);
      break;
    }
  }
  for (auto& p : r.params) {
    if (p == "HTTP_X_SIGNATURE=!") {
      p = "HTTP_X_SIGNATURE=" + compute_signature(kKey, timestamp, kUrl, r.body);
    } else if (p == "CONTENT_LENGTH=!") {
      p = "CONTENT_LENGTH=" + std::to_string(r.body.size());
    }
  }
  return r;
}

// `json` parses as JSON (simdjson's DOM parser validates the whole document).
inline bool is_valid_json(std::string_view json) {
  static simdjson::dom::parser parser;
  simdjson::dom::element doc;
  return parser.parse(json.data(), json.size(), true).get(doc) == simdjson::SUCCESS;
}

// An error body: exactly {"error":"<code>","message":"<text>"}.
inline bool is_error_body(std::string_view json, std::string_view code) {
  static simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (parser.parse(json.data(), json.size(), true).get_object().get(obj)) return false;
  std::string_view got_code, message;
  return obj.size() == 2 && !obj["error"].get_string().get(got_code) && got_code == code &&
         !obj["message"].get_string().get(message) && !message.empty();
}

}  // namespace ipayout::fuzz
