// libFuzzer harness: EventParser::parse (simdjson On Demand, the full-document
// walk, `event` and the dedup key) on the raw input as a body, with the default
// dedup_pointers.
//
// Invariants:
// - parsing is deterministic: the same parser twice, and a second parser (its
//   buffers freed by shrink_to after every parse), give the same result;
// - on success: `event` is 1..255 bytes without control characters, the dedup
//   key is non-empty, shorter than 300 bytes, without control characters, and
//   of one of the documented forms;
// - differential against simdjson's DOM parser (a separate, validating parser):
//   what parse accepts, DOM accepts too (except numbers DOM cannot convert:
//   beyond 64-bit integers or double range, which are valid JSON and accepted on
//   purpose); what DOM accepts as an object with one string `event` that is
//   storable, parse accepts; both agree on `event`, on jsonb compatibility (a
//   NUL in a string or key) and on the first dedup rule (/eventId).
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "crypto.h"
#include "event.h"
#include "fuzz_common.h"

namespace {

using namespace ipayout;
using namespace ipayout::fuzz;

bool has_control(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool same(const Result<ParsedEvent>& a, const Result<ParsedEvent>& b) {
  if (a.ok() != b.ok()) return false;
  if (!a.ok()) return a.error().code == b.error().code && a.error().message == b.error().message;
  return a->event == b->event && a->dedup_key == b->dedup_key &&
         a->jsonb_compatible == b->jsonb_compatible;
}

// A NUL anywhere in a string or a key of `e`.
bool dom_has_nul(simdjson::dom::element e) {
  switch (e.type()) {
    case simdjson::dom::element_type::OBJECT:
      for (auto field : simdjson::dom::object(e)) {
        if (field.key.find('\0') != std::string_view::npos) return true;
        if (dom_has_nul(field.value)) return true;
      }
      return false;
    case simdjson::dom::element_type::ARRAY:
      for (auto child : simdjson::dom::array(e)) {
        if (dom_has_nul(child)) return true;
      }
      return false;
    case simdjson::dom::element_type::STRING:
      return std::string_view(e).find('\0') != std::string_view::npos;
    default:
      return false;
  }
}

void check_key_form(const std::string& key) {
  FUZZ_REQUIRE(!key.empty() && key.size() < 300, "dedup key of %zu bytes", key.size());
  FUZZ_REQUIRE(!has_control(key), "dedup key with a control character");
  FUZZ_REQUIRE(simdjson::validate_utf8(key.data(), key.size()), "dedup key is not UTF-8");
  if (key.rfind("sha256:", 0) == 0) {
    FUZZ_REQUIRE(key.size() == 7 + 64, "bad body-hash key");
    return;
  }
  FUZZ_REQUIRE(key.front() == '/', "dedup key of no known form");
  size_t hash = key.find("#sha256:");
  size_t eq = key.find('=');
  FUZZ_REQUIRE(hash != std::string::npos || eq != std::string::npos, "dedup key without value");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static EventParser parser(default_rules(), default_settings().body_limit);
  static EventParser other(default_rules(), default_settings().body_limit);
  static simdjson::dom::parser dom;

  const std::string body = padded(std::string_view(reinterpret_cast<const char*>(data), size));
  const Result<ParsedEvent> got = parser.parse(body);
  FUZZ_REQUIRE(same(got, parser.parse(body)), "same parser, different result");
  FUZZ_REQUIRE(same(got, other.parse(body)), "other parser, different result");
  other.shrink_to(0);  // a fresh simdjson parser next time, as after a large body

  if (got.ok()) {
    FUZZ_REQUIRE(!got->event.empty() && got->event.size() <= kMaxEventNameBytes,
                 "event of %zu bytes", got->event.size());
    FUZZ_REQUIRE(!has_control(got->event), "event with a control character");
    check_key_form(got->dedup_key);
    if (got->dedup_key.rfind("sha256:", 0) == 0) {
      FUZZ_REQUIRE(got->dedup_key == "sha256:" + crypto::hex(crypto::sha256(body)),
                   "body-hash key is not the body's hash");
    }
  } else {
    FUZZ_REQUIRE(got.error().code == "bad_json" || got.error().code == "bad_event", "error code %s",
                 got.error().code.c_str());
    FUZZ_REQUIRE(!got.error().message.empty(), "error without a message");
  }

  // Differential against the DOM parser.
  simdjson::dom::element doc;
  const auto dom_error = dom.parse(body.data(), body.size(), true).get(doc);
  if (got.ok()) {
    FUZZ_REQUIRE(dom_error == simdjson::SUCCESS || dom_error == simdjson::NUMBER_OUT_OF_RANGE ||
                     dom_error == simdjson::NUMBER_ERROR,
                 "accepted what the DOM parser refuses: %s", simdjson::error_message(dom_error));
  }
  if (dom_error != simdjson::SUCCESS) return 0;
  simdjson::dom::object root;
  if (doc.get_object().get(root)) {
    FUZZ_REQUIRE(!got.ok(), "accepted a body that is not an object");
    return 0;
  }
  int events = 0;
  std::string_view event;
  bool event_is_string = false;
  for (auto field : root) {
    if (field.key == "event") {
      ++events;
      event_is_string = field.value.get_string().get(event) == simdjson::SUCCESS;
    }
  }
  const bool storable = events == 1 && event_is_string && !event.empty() &&
                        event.size() <= kMaxEventNameBytes && !has_control(event);
  if (!storable) {
    FUZZ_REQUIRE(!got.ok(), "accepted an event the DOM parser finds unstorable");
    return 0;
  }
  FUZZ_REQUIRE(got.ok(), "refused a storable event: %s: %s", got.error().code.c_str(),
               got.error().message.c_str());
  FUZZ_REQUIRE(got->event == event, "event differs from the DOM parser's");
  FUZZ_REQUIRE(got->jsonb_compatible == !dom_has_nul(doc), "jsonb compatibility differs");
  std::string_view event_id;
  if (root["eventId"].get_string().get(event_id) == simdjson::SUCCESS && !event_id.empty() &&
      event_id.size() <= 256 && !has_control(event_id)) {
    FUZZ_REQUIRE(got->dedup_key == "/eventId=" + std::string(event_id),
                 "dedup key does not follow /eventId");
  }
  return 0;
}
