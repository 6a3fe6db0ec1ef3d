#include "event.h"

#include <cstring>

#include "crypto.h"

namespace ipayout {
namespace {

using simdjson::error_code;
namespace od = simdjson::ondemand;

constexpr size_t kMaxDedupKeyBytes = 256;

// RFC 8259 number grammar. simdjson rejects integers beyond 64 bits and doubles
// beyond ~1e308 as errors, but they are valid JSON and jsonb stores them as
// numeric, so the grammar is checked here instead of converting the value.
bool valid_json_number(std::string_view s) {
  size_t i = 0, n = s.size();
  if (i < n && s[i] == '-') ++i;
  if (i >= n) return false;
  if (s[i] == '0') {
    ++i;
  } else if (s[i] >= '1' && s[i] <= '9') {
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
  } else {
    return false;
  }
  if (i < n && s[i] == '.') {
    ++i;
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start) return false;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start) return false;
  }
  return i == n;
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// Deeper bodies are refused: PostgreSQL's parser would hit its own stack limit
// on them, and each level costs a frame of walk(). simdjson 3.0's On Demand
// enforces max_depth only in development builds, so the walk counts itself.
constexpr int kMaxDepth = 1024;

struct WalkState {
  bool jsonb_compatible = true;
};

// Visits every value so that the whole document is validated (On Demand only
// checks what it is asked for). `depth` is the nesting level of `v`.
error_code walk(od::value v, WalkState& st, int depth) {
  if (depth > kMaxDepth) return simdjson::DEPTH_ERROR;
  od::json_type type;
  if (auto e = v.type().get(type)) return e;
  switch (type) {
    case od::json_type::object: {
      od::object obj;
      if (auto e = v.get_object().get(obj)) return e;
      for (auto field : obj) {
        std::string_view key;
        if (auto e = field.unescaped_key().get(key)) return e;
        if (std::memchr(key.data(), '\0', key.size())) st.jsonb_compatible = false;
        if (auto e = walk(field.value(), st, depth + 1)) return e;
      }
      return simdjson::SUCCESS;
    }
    case od::json_type::array: {
      od::array arr;
      if (auto e = v.get_array().get(arr)) return e;
      for (auto element : arr) {
        od::value child;
        if (auto e = element.get(child)) return e;
        if (auto e = walk(child, st, depth + 1)) return e;
      }
      return simdjson::SUCCESS;
    }
    case od::json_type::string: {
      std::string_view s;
      if (auto e = v.get_string().get(s)) return e;
      if (std::memchr(s.data(), '\0', s.size())) st.jsonb_compatible = false;
      return simdjson::SUCCESS;
    }
    case od::json_type::number: {
      std::string_view raw = v.raw_json_token();
      return valid_json_number(trim_right(raw)) ? simdjson::SUCCESS : simdjson::NUMBER_ERROR;
    }
    case od::json_type::boolean: {
      bool b;
      return v.get_bool().get(b);
    }
    case od::json_type::null: {
      bool is_null = false;
      if (auto e = v.is_null().get(is_null)) return e;
      return is_null ? simdjson::SUCCESS : simdjson::N_ATOM_ERROR;
    }
  }
  return simdjson::INCORRECT_TYPE;
}

Error bad_json(error_code e) {
  switch (e) {
    case simdjson::UTF8_ERROR:
      return {"bad_json", "body is not valid UTF-8"};
    case simdjson::DEPTH_ERROR:
      return {"bad_json", "body nests deeper than 1024 levels"};
    case simdjson::EMPTY:
      return {"bad_json", "body is empty"};
    case simdjson::UNESCAPED_CHARS:
      return {"bad_json", "body has an unescaped control character in a string"};
    default:
      return {"bad_json",
              std::string("body is not valid JSON (") + simdjson::error_message(e) + ")"};
  }
}

// The value at `pointer` as dedup material: strings unescaped, numbers as written.
bool scalar_at(od::document& doc, const std::string& pointer, std::string& out) {
  od::value v;
  if (doc.at_pointer(pointer).get(v)) return false;
  od::json_type type;
  if (v.type().get(type)) return false;
  if (type == od::json_type::string) {
    std::string_view s;
    if (v.get_string().get(s) || s.empty()) return false;
    out.assign(s);
    return true;
  }
  if (type == od::json_type::number) {
    out.assign(trim_right(v.raw_json_token()));
    return true;
  }
  return false;
}

bool safe_key_text(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

EventParser::EventParser(DedupRules rules, size_t max_body)
    : max_body_(max_body),
      parser_(max_body),
      rules_(std::make_shared<const DedupRules>(std::move(rules))) {}

Result<ParsedEvent> EventParser::parse(const std::string& body) {
  if (body.find('\0') != std::string::npos) {
    // A raw NUL byte is never valid JSON, and it would truncate a libpq parameter.
    return Error{"bad_json", "body contains a NUL byte"};
  }
  od::document doc;
  if (auto e = parser_.iterate(body.data(), body.size(), body.capacity()).get(doc)) {
    return bad_json(e);
  }
  od::object root;
  if (auto e = doc.get_object().get(root)) {
    if (e == simdjson::INCORRECT_TYPE) return Error{"bad_json", "body is not a JSON object"};
    return bad_json(e);
  }

  ParsedEvent out;
  WalkState st;
  int event_fields = 0;
  bool event_is_string = false;
  for (auto field : root) {
    std::string_view key;
    if (auto e = field.unescaped_key().get(key)) return bad_json(e);
    if (std::memchr(key.data(), '\0', key.size())) st.jsonb_compatible = false;
    if (key == "event") {
      ++event_fields;
      od::value v;
      if (auto e = field.value().get(v)) return bad_json(e);
      od::json_type type;
      if (auto e = v.type().get(type)) return bad_json(e);
      if (type == od::json_type::string) {
        std::string_view name;
        if (auto e = v.get_string().get(name)) return bad_json(e);
        out.event.assign(name);
        event_is_string = true;
      } else if (auto e = walk(v, st, 2)) {
        return bad_json(e);
      }
      continue;
    }
    if (auto e = walk(field.value(), st, 2)) return bad_json(e);
  }
  // OUT_OF_BOUNDS means the iterator is past the last token: nothing follows.
  if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS) {
    return Error{"bad_json", "body has content after the JSON object"};
  }

  if (event_fields == 0) return Error{"bad_event", "body has no \"event\" field"};
  // jsonb keeps the last of duplicate keys, a reader of the raw body may take the
  // first: refuse rather than store an event whose name depends on who reads it.
  if (event_fields > 1) return Error{"bad_event", "body has more than one \"event\" field"};
  if (!event_is_string) return Error{"bad_event", "\"event\" is not a string"};
  if (out.event.empty()) return Error{"bad_event", "\"event\" is empty"};
  if (out.event.size() > kMaxEventNameBytes) {
    return Error{"bad_event", "\"event\" is longer than 255 bytes"};
  }
  if (!safe_key_text(out.event)) {
    return Error{"bad_event", "\"event\" contains control characters"};
  }
  out.jsonb_compatible = st.jsonb_compatible;

  // De-duplication key: the first rule whose pointers all resolve wins. The rule
  // text prefixes the key so values found under different rules never collide.
  static const DedupRules kNone;
  for (const auto& rule : rules_ ? *rules_ : kNone) {
    std::string material, value;
    bool complete = true;
    for (size_t i = 0; i < rule.pointers.size() && complete; ++i) {
      complete = scalar_at(doc, rule.pointers[i], value);
      if (rule.pointers.size() == 1) {
        material = value;
      } else {  // length-prefixed, so ("a+b","c") and ("a","b+c") differ
        material += std::to_string(value.size()) + ":" + value;
      }
    }
    if (!complete) continue;
    if (rule.pointers.size() == 1 && material.size() <= kMaxDedupKeyBytes &&
        safe_key_text(material)) {
      out.dedup_key = rule.text + "=" + material;
    } else {
      // '#' instead of '=': a hashed key can never equal a literal value's key.
      out.dedup_key = rule.text + "#sha256:" + crypto::hex(crypto::sha256(material));
    }
    return out;
  }
  out.dedup_key = "sha256:" + crypto::hex(crypto::sha256(body));
  return out;
}

}  // namespace ipayout
