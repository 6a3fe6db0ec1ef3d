// Durations as every command takes them: a whole number and one unit, `90s`,
// `15m`, `24h`, `7d`, `2w`; `0` alone means none. One parser for the daemon's
// `--keep-previous` and the CLI's `--since`, `replay --since` and
// `purge --older-than`, so the same text means the same span everywhere.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace ipayout {

// Seconds, or nullopt when `text` is not a duration (callers then try an
// absolute timestamp, or refuse it). Bounded to 100 years: no overflow, and
// nothing longer is meant.
inline std::optional<int64_t> parse_duration_seconds(std::string_view text) {
  if (text == "0") return 0;
  if (text.size() < 2) return std::nullopt;
  int64_t unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    case 'w':
      unit = 7 * 86400;
      break;
    default:
      return std::nullopt;
  }
  constexpr int64_t kMaxSeconds = int64_t{100} * 366 * 86400;
  int64_t n = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
    if (n * unit > kMaxSeconds) return std::nullopt;
  }
  return n * unit;
}

}  // namespace ipayout
