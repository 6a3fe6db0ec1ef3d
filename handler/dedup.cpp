#include "dedup.h"

namespace ipayout {

Result<DedupRules> parse_dedup_rules(std::string_view setting) {
  DedupRules rules;
  size_t pos = 0;
  while (pos <= setting.size()) {
    size_t comma = setting.find(',', pos);
    std::string_view alt =
        setting.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    pos = comma == std::string_view::npos ? setting.size() + 1 : comma + 1;
    while (!alt.empty() && alt.front() == ' ') alt.remove_prefix(1);
    while (!alt.empty() && alt.back() == ' ') alt.remove_suffix(1);
    if (alt.empty()) continue;
    DedupRule rule;
    rule.text = std::string(alt);
    size_t p = 0;
    while (p <= alt.size()) {
      size_t plus = alt.find('+', p);
      std::string_view ptr =
          alt.substr(p, plus == std::string_view::npos ? std::string_view::npos : plus - p);
      p = plus == std::string_view::npos ? alt.size() + 1 : plus + 1;
      while (!ptr.empty() && ptr.front() == ' ') ptr.remove_prefix(1);
      while (!ptr.empty() && ptr.back() == ' ') ptr.remove_suffix(1);
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
