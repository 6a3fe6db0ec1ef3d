// The command line: one command word, its positional arguments and --flags.
// Parsing returns an Error (shown with the usage) instead of throwing.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "result.h"

namespace ipayout::events {

struct Options {
  std::string command;                  // tail, consumers, replay, subscribe, ...
  std::vector<std::string> positional;  // after the command: subscribe NAME, ...
  std::optional<std::string> database;  // --database; else IPAYOUT_DATABASE, else libpq's PG*
  bool follow = false;
  bool force = false;
  bool help = false;
  bool version = false;
  std::optional<std::string> consumer;
  std::optional<std::string> event_pattern;  // LIKE pattern on the event name
  // 'beginning', 'end' or a timestamp; a DURATION (15m) is turned into the
  // timestamp that long ago (UTC) when the options are parsed.
  std::optional<std::string> since;
  std::optional<long long> max_events;
  long long poll_interval_ms = 2000;  // --poll-interval SECONDS: read even without a NOTIFY
  std::optional<long long> from_id;
  // As written: a DURATION (7d), a PostgreSQL interval ('30 days') or a timestamp.
  std::optional<std::string> older_than;
  // What purge passes on: an interval (a DURATION becomes 'N seconds'), or a
  // timestamp when older_than_is_time.
  std::string older_than_sql;
  bool older_than_is_time = false;
};

Result<Options> parse_options(int argc, char** argv);

extern const char* const kUsage;

}  // namespace ipayout::events
