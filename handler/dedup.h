// The dedup_pointers setting, compiled: which JSON values identify an event.
// Compiled once when settings are parsed (start and SIGHUP) and kept in the
// settings snapshot, so a request never parses the setting again.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace ipayout {

// Alternatives tried in order, each a list of JSON pointers that must all
// resolve to a string or a number.
struct DedupRule {
  std::string text;                   // "/data/id+/event", used as the key's prefix
  std::vector<std::string> pointers;  // {"/data/id", "/event"}
};
using DedupRules = std::vector<DedupRule>;

Result<DedupRules> parse_dedup_rules(std::string_view setting);

}  // namespace ipayout
