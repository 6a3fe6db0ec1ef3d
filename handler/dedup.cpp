#include "dedup.h"

#include <vector>

namespace ipayout {
namespace {

// The parts of `s` between `sep`s, each without surrounding spaces; empty
// parts are kept (the caller decides what an empty one means).
std::vector<std::string_view> split_trimmed(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(sep, pos);
    if (end == std::string_view::npos) end = s.size();
    std::string_view part = s.substr(pos, end - pos);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
    parts.push_back(part);
    pos = end + 1;
  }
  return parts;
}

}  // namespace

Result<DedupRules> parse_dedup_rules(std::string_view setting) {
  DedupRules rules;
  for (std::string_view alt : split_trimmed(setting, ',')) {
    if (alt.empty()) continue;  // "a,,b" and a trailing comma are harmless
    DedupRule rule;
    rule.text = std::string(alt);
    for (std::string_view ptr : split_trimmed(alt, '+')) {
      if (ptr.empty() || ptr.front() != '/') {
        return Error{"invalid_setting",
                     "dedup_pointers: '" + std::string(ptr) + "' is not a JSON pointer"};
      }
      rule.pointers.emplace_back(ptr);
    }
    rules.push_back(std::move(rule));
  }
  return rules;
}

}  // namespace ipayout
