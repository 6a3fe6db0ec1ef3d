// libFuzzer harness: the request path before the writer, without a socket.
// FastCGI params from the input (format: fuzz_common.h) go into a hand-built
// envp, as libfcgi would hand them over; then read_head, headers_json,
// check_head (one endpoint, policy from the options line: q required, r record,
// o off), the body as read_body would leave it, check_body, store_response;
// plus token_from_path, is_json_content_type and append_json_string on every
// param and the body.
//
// Invariants:
// - every answer is a status the contract names, with a JSON error body
//   {"error","message"} (405 with Allow: POST, 503 with Retry-After);
// - an accepted head is a POST to exactly /ipayout/webhooks/<the token> with a
//   Content-Length within the limit;
// - an accepted body has a signature verdict the policy allows, an event and a
//   dedup key, and a JSON content type unless the endpoint's key signed it;
// - token_from_path returns exactly the path after the prefix, 32..128 URL-safe
//   characters;
// - append_json_string always yields one valid JSON string, equal to its input
//   when the input is valid UTF-8; headers_json always yields a JSON object.
#include <fcgiapp.h>

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fcgi_io.h"
#include "fuzz_common.h"
#include "http.h"
#include "request.h"
#include "writer.h"

namespace {

using namespace ipayout;
using namespace ipayout::fuzz;

void check_json_string(std::string_view s) {
  static simdjson::dom::parser parser;
  std::string out = "x";  // appends: must not touch what is there
  append_json_string(out, s);
  FUZZ_REQUIRE(out[0] == 'x', "append_json_string changed the prefix");
  std::string_view json = std::string_view(out).substr(1);
  std::string_view value;
  auto err = parser.parse(json.data(), json.size(), true).get_string().get(value);
  FUZZ_REQUIRE(err == simdjson::SUCCESS, "append_json_string made invalid JSON: %s",
               simdjson::error_message(err));
  if (simdjson::validate_utf8(s.data(), s.size())) {
    FUZZ_REQUIRE(value == s, "append_json_string does not round-trip valid UTF-8");
  } else {
    FUZZ_REQUIRE(value.size() >= s.size(), "invalid UTF-8 lost bytes instead of U+FFFD");
  }
}

void check_token(std::string_view path) {
  auto token = token_from_path(path);
  if (!token) return;
  FUZZ_REQUIRE(token->size() >= kMinTokenChars && token->size() <= kMaxTokenChars,
               "token of %zu characters", token->size());
  FUZZ_REQUIRE(std::string(kWebhookPathPrefix) + std::string(*token) == path,
               "token is not the rest of the path");
  for (char c : *token) {
    FUZZ_REQUIRE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_',
                 "token with a character outside base64url");
  }
}

void check_content_type(std::string_view ct) {
  if (!is_json_content_type(ct)) return;
  std::string media(ct.substr(0, ct.find(';')));
  for (auto& c : media) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  FUZZ_REQUIRE(
      media.find("application/") != std::string::npos && media.find("json") != std::string::npos,
      "%s taken for JSON", media.c_str());
}

void check_error(const HttpResponse& r) {
  FUZZ_REQUIRE(is_error_body(r.body, r.error_code), "status %d: bad error body %s", r.status,
               r.body.c_str());
  FUZZ_REQUIRE(r.content_type == "application/json", "error with content type %s",
               r.content_type.c_str());
  FUZZ_REQUIRE(r.allow_post == (r.status == 405), "Allow: POST on %d", r.status);
  FUZZ_REQUIRE((r.retry_after > 0) == (r.status == 503), "Retry-After on %d", r.status);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static EventParser parser(default_rules(), default_settings().body_limit);
  const Settings& settings = default_settings();

  TextRequest tr = parse_text_request(data, size);
  const SignaturePolicy policy = policy_from_options(tr.options);
  const EndpointCache& cache = endpoint_cache(policy);

  std::vector<char*> envp;
  for (auto& p : tr.params) envp.push_back(p.data());  // NUL-terminated by std::string
  envp.push_back(nullptr);
  FCGX_Request req{};
  req.envp = envp.data();

  for (const auto& p : tr.params) check_json_string(p);
  check_json_string(tr.body);
  // A configured success body is a template: never crashes, substitutes.
  std::string rendered = render_success_body(tr.options, "accepted", 42);
  FUZZ_REQUIRE(
      tr.options.find("{id}") == std::string::npos || rendered.find("42") != std::string::npos,
      "{id} not substituted");

  const RequestHead head = read_head(req);
  check_token(head.path);
  check_content_type(head.content_type);
  FUZZ_REQUIRE(!(head.content_length && head.bad_content_length), "length both good and bad");
  const std::string headers = headers_json(req);
  FUZZ_REQUIRE(headers.front() == '{' && is_valid_json(headers), "headers_json: %s",
               headers.c_str());
  FUZZ_REQUIRE(headers.size() <= 16384, "headers_json of %zu bytes", headers.size());

  HeadCheck hc = check_head(head, cache, settings, kNow);
  if (hc.response) {
    const int s = hc.response->status;
    FUZZ_REQUIRE(s == 400 || s == 404 || s == 405 || s == 413, "head status %d", s);
    check_error(*hc.response);
    return 0;
  }
  FUZZ_REQUIRE(hc.endpoint && hc.endpoint->id == 1, "no endpoint without an answer");
  FUZZ_REQUIRE(head.method == "POST", "accepted method %.*s", static_cast<int>(head.method.size()),
               head.method.data());
  FUZZ_REQUIRE(head.path == std::string(kWebhookPathPrefix) + std::string(kToken),
               "accepted another path");
  FUZZ_REQUIRE(!head.bad_content_length, "accepted a bad Content-Length");
  FUZZ_REQUIRE(!head.content_length || *head.content_length <= settings.body_limit,
               "accepted a length over the limit");

  // The body as read_body leaves it: exactly Content-Length bytes, or all.
  std::string_view raw = tr.body;
  if (head.content_length) {
    if (*head.content_length > raw.size()) return 0;  // kIncomplete: 400 before parsing
    raw = raw.substr(0, *head.content_length);
  }
  const std::string body = padded(raw);
  EventRecord record;
  auto r = check_body(head, *hc.endpoint, settings, kNow, parser, body, record);
  if (r) {
    FUZZ_REQUIRE(r->status == 400 || r->status == 401 || r->status == 415, "body status %d",
                 r->status);
    check_error(*r);
    if (r->status == 401) FUZZ_REQUIRE(policy == SignaturePolicy::kRequired, "401 without policy");
    return 0;
  }
  FUZZ_REQUIRE(record.endpoint_id == 1 && !record.event.empty() && !record.dedup_key.empty(),
               "accepted body without event or key");
  // Only a signed body may say it is something other than JSON.
  FUZZ_REQUIRE(is_json_content_type(head.content_type) || signature_matched(record.signature),
               "accepted an unsigned body with a non-JSON content type");
  FUZZ_REQUIRE(policy == SignaturePolicy::kOff || record.signature != SignatureVerdict::kNotChecked,
               "no signature verdict");
  if (policy == SignaturePolicy::kRequired) {
    FUZZ_REQUIRE(record.signature == SignatureVerdict::kValid ||
                     record.signature == SignatureVerdict::kValidUnparsedTimestamp,
                 "required policy let %s through", to_string(record.signature));
  }
  if (policy == SignaturePolicy::kOff) {
    FUZZ_REQUIRE(record.signature == SignatureVerdict::kNotChecked, "policy off checked");
  }
  check_json_string(record.event);
  check_json_string(record.dedup_key);

  for (auto outcome : {StoreOutcome::kAccepted, StoreOutcome::kDuplicate,
                       StoreOutcome::kUnavailable, StoreOutcome::kRejected}) {
    StoreResult sr;
    sr.outcome = outcome;
    sr.id = 42;
    HttpResponse resp = store_response(sr, *hc.endpoint, settings);
    if (outcome == StoreOutcome::kAccepted || outcome == StoreOutcome::kDuplicate) {
      FUZZ_REQUIRE(resp.status == 200 && is_valid_json(resp.body), "success body %s",
                   resp.body.c_str());
    } else {
      check_error(resp);
    }
  }
  return 0;
}
