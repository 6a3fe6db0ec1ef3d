// From raw body bytes to what the store needs: the whole body validated as JSON
// (so PostgreSQL never sees a body that fails the batch), the `event` name and
// the de-duplication key. One EventParser per thread: it owns simdjson buffers.
#pragma once

#include <simdjson.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dedup.h"
#include "result.h"

namespace ipayout {

struct ParsedEvent {
  std::string event;  // the `event` field, unescaped
  // "<rule>=<value>", "<rule>#sha256:<hex>" (combined or unprintable values),
  // or "sha256:<hex of the raw body>" when no rule matched.
  std::string dedup_key;
  // False when the body is valid JSON that jsonb cannot hold (a \u0000 escape in a
  // string or key). Such an event is stored with payload NULL and its raw body.
  bool jsonb_compatible = true;
};

constexpr size_t kMaxEventNameBytes = 255;

class EventParser {
 public:
  explicit EventParser(DedupRules rules, size_t max_body);

  // `body` must have at least simdjson::SIMDJSON_PADDING bytes of capacity past
  // its size (see padded_capacity). Errors have code "bad_json" or "bad_event".
  Result<ParsedEvent> parse(const std::string& body);

  static size_t padded_capacity(size_t n) { return n + simdjson::SIMDJSON_PADDING; }

  // The rules of a settings snapshot: shared, not copied (they change only on SIGHUP).
  void set_rules(std::shared_ptr<const DedupRules> rules) { rules_ = std::move(rules); }
  const std::shared_ptr<const DedupRules>& rules() const { return rules_; }

  // Frees the parser's buffers if one large body grew them past `keep` bytes:
  // a thread that once parsed 1 MiB must not hold ~10 MiB for its lifetime.
  void shrink_to(size_t keep) {
    if (parser_.capacity() > keep) parser_ = simdjson::ondemand::parser(max_body_);
  }

 private:
  size_t max_body_;
  simdjson::ondemand::parser parser_;
  std::shared_ptr<const DedupRules> rules_;
};

}  // namespace ipayout
