#include "options.h"

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <map>
#include <set>

#include "common/duration.h"
#include "common/option_word.h"

namespace ipayout::events {

const char* const kUsage =
    "usage: ipayout-events COMMAND [OPTIONS]\n"
    "\n"
    "  tail [--follow] [--consumer NAME] [--event PATTERN] [--since T] [--max N]\n"
    "       [--poll-interval SECONDS]\n"
    "        print events as JSON, one object per line. Without --consumer it reads\n"
    "        from the end (or --since) and remembers nothing. With --consumer it\n"
    "        creates that consumer if missing (starting at --since, filtered by\n"
    "        --event), and acks each event once its line is written: a restart goes\n"
    "        on after the last line printed. --follow keeps waiting (LISTEN) and\n"
    "        reconnects after a lost connection; it also reads the feed every\n"
    "        --poll-interval seconds (default 2) without a notification, for events\n"
    "        a long transaction elsewhere held back. --max N: stop after N events.\n"
    "  consumers\n"
    "        every consumer with its pattern, position, pending events and lag\n"
    "  replay --consumer NAME (--from-id ID | --since T)\n"
    "        move a consumer back (or forward): its next event is ID, or the\n"
    "        first received at or after T\n"
    "  subscribe NAME [--since T] [--event PATTERN]\n"
    "        create a consumer (starting at the end unless --since)\n"
    "  unsubscribe NAME\n"
    "        delete a consumer\n"
    "  purge --older-than AGE [--force]\n"
    "        delete events older than AGE (a DURATION such as 30d, an interval\n"
    "        such as '30 days', or a timestamp: received before it) that every\n"
    "        consumer has acked (--force: acked or not); needs the schema owner's\n"
    "        rights\n"
    "\n"
    "  T is 'beginning', 'end', a DURATION meaning that long ago, or a timestamp\n"
    "  ('2026-11-26 10:00:00+00'). DURATION: 90s, 15m, 24h, 7d, 2w.\n"
    "  PATTERN is an SQL LIKE pattern on the event name ('PAYMENT.%').\n"
    "  --database CONNINFO  a URI or key=value string; default $IPAYOUT_DATABASE,\n"
    "                       else libpq's PGHOST, PGDATABASE, PGUSER, ...\n"
    "  --help, --version\n";

namespace {

Error usage_error(const std::string& message) {
  return Error{"usage", message};
}

Result<long long> parse_seconds_ms(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !(v >= 0.01 && v <= 86400)) {
    return usage_error("--poll-interval needs seconds between 0.01 and 86400, not '" + text + "'");
  }
  return static_cast<long long>(v * 1000);
}

Result<long long> parse_count(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < 0) {
    return usage_error("--" + flag + " needs a non-negative integer, not '" + text + "'");
  }
  return v;
}

// An absolute timestamp starts with its date: YYYY-MM-DD. PostgreSQL reads the
// rest; relative words ('1 minute ago', 'yesterday') are refused here, since
// PostgreSQL would take some of them relative to its own day, not to now.
bool looks_like_timestamp(const std::string& v) {
  auto digit = [&v](size_t i) { return i < v.size() && v[i] >= '0' && v[i] <= '9'; };
  return digit(0) && digit(1) && digit(2) && digit(3) && v.size() >= 10 && v[4] == '-' &&
         digit(5) && digit(6) && v[7] == '-' && digit(8) && digit(9);
}

std::string utc_seconds_ago(int64_t seconds) {
  std::time_t t = std::time(nullptr) - static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<Error> normalise_since(std::optional<std::string>& since) {
  if (!since || *since == "beginning" || *since == "end" || looks_like_timestamp(*since)) {
    return std::nullopt;
  }
  if (auto secs = parse_duration_seconds(*since)) {
    since = utc_seconds_ago(*secs);
    return std::nullopt;
  }
  return usage_error(
      "--since needs 'beginning', 'end', a duration (90s, 15m, 24h, 7d, 2w: that "
      "long ago) or a timestamp ('2026-11-26 10:00:00+00'), not '" +
      *since + "'");
}

std::optional<Error> normalise_older_than(Options& o) {
  if (!o.older_than) return std::nullopt;
  const std::string& v = *o.older_than;
  if (auto secs = parse_duration_seconds(v)) {
    o.older_than_sql = std::to_string(*secs) + " seconds";
  } else if (looks_like_timestamp(v)) {
    o.older_than_sql = v;
    o.older_than_is_time = true;
  } else if (!v.empty() && v.find("ago") == std::string::npos) {
    o.older_than_sql = v;  // a PostgreSQL interval, as before ('30 days')
  } else {
    return usage_error(
        "--older-than needs a duration (90s, 15m, 24h, 7d, 2w), an interval ('30 days') or a "
        "timestamp ('2026-11-26 10:00:00+00'), not '" +
        v + "'");
  }
  return std::nullopt;
}

// The options each command takes, beyond --database, --help and --version.
// An option another command takes is refused too: it would do nothing here.
const std::map<std::string, std::set<std::string>> kCommandOptions = {
    {"tail", {"follow", "consumer", "event", "since", "max", "poll-interval"}},
    {"consumers", {}},
    {"replay", {"consumer", "from-id", "since"}},
    {"subscribe", {"since", "event"}},
    {"unsubscribe", {}},
    {"purge", {"older-than", "force"}},
};

}  // namespace

Result<Options> parse_options(int argc, char** argv) {
  Options o;
  using Setter = std::function<std::optional<Error>(const std::string&)>;
  auto text = [](std::optional<std::string>& field) -> Setter {
    return [&field](const std::string& v) -> std::optional<Error> {
      field = v;
      return std::nullopt;
    };
  };
  auto count = [](const std::string& flag, std::optional<long long>& field) -> Setter {
    return [flag, &field](const std::string& v) -> std::optional<Error> {
      auto n = parse_count(flag, v);
      if (!n) return n.error();
      field = *n;
      return std::nullopt;
    };
  };
  // Flags that take a value (--name VALUE or --name=VALUE) ...
  const std::map<std::string, Setter> valued = {
      {"database", text(o.database)},
      {"consumer", text(o.consumer)},
      {"event", text(o.event_pattern)},
      {"since", text(o.since)},
      {"older-than", text(o.older_than)},
      {"max", count("max", o.max_events)},
      {"from-id", count("from-id", o.from_id)},
      {"poll-interval",
       [&o](const std::string& v) -> std::optional<Error> {
         auto ms = parse_seconds_ms(v);
         if (!ms) return ms.error();
         o.poll_interval_ms = *ms;
         return std::nullopt;
       }},
  };
  // ... and switches.
  const std::map<std::string, bool*> switches = {
      {"follow", &o.follow}, {"f", &o.follow}, {"force", &o.force},
      {"help", &o.help},     {"h", &o.help},   {"version", &o.version},
  };
  // Given options by their long name, as written (for the error message).
  std::map<std::string, std::string> given;

  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.size() < 2 || a[0] != '-') {
      if (o.command.empty()) {
        o.command = a;
      } else {
        o.positional.push_back(a);
      }
      continue;
    }
    auto [name, value] = split_option_word(a);
    const std::string written = a.substr(0, a.find('='));
    if (auto s = switches.find(name); s != switches.end()) {
      if (value) return usage_error("--" + name + " takes no value");
      *s->second = true;
      given.emplace(name == "f" ? "follow" : name == "h" ? "help" : name, written);
      continue;
    }
    auto v = valued.find(name);
    if (v == valued.end()) return usage_error("unknown option '" + a + "'");
    if (!value) {
      if (i + 1 >= argc) return usage_error("--" + name + " needs a value");
      value = argv[++i];
    }
    if (auto err = v->second(*value)) return *err;
    given.emplace(name, written);
  }
  // An unknown command is main's to report; --help and --version go with any.
  if (auto c = kCommandOptions.find(o.command); c != kCommandOptions.end()) {
    for (const auto& [name, written] : given) {
      if (name == "database" || name == "help" || name == "version") continue;
      if (!c->second.count(name)) {
        return usage_error(o.command + " does not take " + written);
      }
    }
  }
  if (auto err = normalise_since(o.since)) return *err;
  if (auto err = normalise_older_than(o)) return *err;
  return o;
}

}  // namespace ipayout::events
