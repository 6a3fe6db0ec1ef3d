#include "settings.h"

#include <libpq-fe.h>
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace ipayout {
namespace {

// Settings() reads this table: no Settings may be built while this file's
// statics are initialised (none is: every Settings is made at run time).
const std::vector<SettingDef> kSettingDefs = {
    {"listen", SettingType::kString, &Settings::listen, 0, 0, "/run/ipayout-webhook/fcgi.sock",
     false, false,
     "FastCGI socket to open (unix path, or host:port) when none is inherited from systemd "
     "(LISTEN_FDS) or spawn-fcgi (fd 0)"},
    {"listen_mode", SettingType::kMode, &Settings::listen_mode, 0, 0777, "0660", false, false,
     "permissions of a unix socket the worker creates itself"},
    {"workers", SettingType::kInt, &Settings::workers, 1, 256, "1", false, false,
     "worker processes in the pool (each has its own writer: one process makes the biggest "
     "group commits; bench/RESULTS-tuning.md)"},
    {"threads", SettingType::kInt, &Settings::threads, 1, 1024, "64", false, false,
     "request threads per worker process (a batch holds at most this many events)"},
    {"database", SettingType::kString, &Settings::database, 0, 0, "", true, false,
     "libpq conninfo or URI of the database; empty = libpq's PG* environment variables"},
    {"body_limit", SettingType::kSize, &Settings::body_limit, 64, 1073741824, "1048576", false,
     false, "largest accepted body in bytes; keep client_max_body_size in the nginx snippet equal"},
    {"replay_window", SettingType::kInt, &Settings::replay_window, 1, 86400000, "300", false, true,
     "seconds a parsable x-timestamp may differ from now"},
    {"dedup_pointers", SettingType::kString, &Settings::dedup_pointers, 0, 0,
     "/eventId,/id,/data/id+/event", false, true,
     "JSON pointers whose values identify an event, tried in order ('+' combines pointers); "
     "fallback: SHA-256 of the raw body"},
    {"batch_max", SettingType::kInt, &Settings::batch_max, 1, 100000, "256", false, true,
     "most events in one group commit"},
    {"batch_wait_us", SettingType::kInt, &Settings::batch_wait_us, 0, 1000000, "0", false, true,
     "microseconds the writer waits, from the oldest queued event, for more events before it "
     "commits fewer than batch_max (0: commit what is queued at once)"},
    {"queue_max", SettingType::kInt, &Settings::queue_max, 1, 10000000, "4096", false, true,
     "events waiting for a commit per process before new ones get 503"},
    {"commit_timeout_ms", SettingType::kInt, &Settings::commit_timeout_ms, 1, 3600000, "5000",
     false, true, "statement_timeout of the writer's database session"},
    {"request_timeout_ms", SettingType::kInt, &Settings::request_timeout_ms, 1, 3600000, "10000",
     false, true, "longest a request waits for its commit before it answers 503"},
    {"retry_after", SettingType::kInt, &Settings::retry_after, 1, 86400, "5", false, true,
     "seconds sent in Retry-After with 503"},
    {"endpoint_refresh_ms", SettingType::kInt, &Settings::endpoint_refresh_ms, 10, 3600000, "1000",
     false, true, "how often endpoint changes in the database are picked up"},
    {"reconnect_ms", SettingType::kInt, &Settings::reconnect_ms, 10, 3600000, "250", false, true,
     "pause between database connection attempts while it is unavailable"},
    {"log_level", SettingType::kLogLevel, &Settings::log_level, 0, 0, "info", false, true,
     "trace, debug, info, warn, error or critical"},
};

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

Result<long long> parse_integer(const std::string& v, int base) {
  if (v.empty()) return Error{"invalid_setting", "empty number"};
  errno = 0;
  char* end = nullptr;
  long long n = std::strtoll(v.c_str(), &end, base);
  if (errno != 0 || *end != '\0') return Error{"invalid_setting", "not a number: " + v};
  return n;
}

// Returns an error message, or "" when `value` was stored into `s`.
std::string assign(Settings& s, const SettingDef& def, const std::string& value) {
  const std::string name = def.name;
  switch (def.type) {
    case SettingType::kString:
      s.*std::get<std::string Settings::*>(def.field) = value;
      return "";
    case SettingType::kLogLevel:
      for (const char* l : {"trace", "debug", "info", "warn", "error", "critical"}) {
        if (value == l) {
          s.*std::get<std::string Settings::*>(def.field) = value;
          return "";
        }
      }
      return name + ": must be one of trace, debug, info, warn, error, critical";
    case SettingType::kInt:
    case SettingType::kMode:
    case SettingType::kSize: {
      auto n = parse_integer(value, def.type == SettingType::kMode ? 8 : 10);
      if (!n) return name + ": " + n.error().message;
      if (*n < def.min || *n > def.max) {
        return def.type == SettingType::kMode
                   ? name + ": must be an octal mode like 0660"
                   : fmt::format("{}: must be between {} and {}", name, def.min, def.max);
      }
      if (def.type == SettingType::kSize) {
        s.*std::get<size_t Settings::*>(def.field) = static_cast<size_t>(*n);
      } else {
        s.*std::get<int Settings::*>(def.field) = static_cast<int>(*n);
      }
      return "";
    }
  }
  return name + ": unknown type";
}

const SettingDef* find_def(const std::string& name) {
  for (const auto& d : kSettingDefs) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

// The value as text, exactly: what reload compares.
std::string raw_value(const Settings& s, const SettingDef& def) {
  switch (def.type) {
    case SettingType::kString:
    case SettingType::kLogLevel:
      return s.*std::get<std::string Settings::*>(def.field);
    case SettingType::kMode:
      return fmt::format("0{:o}", s.*std::get<int Settings::*>(def.field));
    case SettingType::kInt:
      return std::to_string(s.*std::get<int Settings::*>(def.field));
    case SettingType::kSize:
      return std::to_string(s.*std::get<size_t Settings::*>(def.field));
  }
  return "?";
}

// The value as show-config prints it: secrets inside it masked.
std::string shown_value(const Settings& s, const SettingDef& def) {
  std::string v = raw_value(s, def);
  return def.secret ? mask_conninfo(v) : v;
}

Result<bool> apply_file(Settings& s, const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error{"config_file", "cannot read config file " + path};
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::string t = trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    auto eq = t.find('=');
    if (eq == std::string::npos) {
      return Error{"config_file", fmt::format("{}:{}: expected name = value", path, lineno)};
    }
    std::string name = trim(t.substr(0, eq));
    std::string value = trim(t.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    const SettingDef* def = find_def(name);
    if (!def) {
      return Error{"config_file", fmt::format("{}:{}: unknown setting '{}'", path, lineno, name)};
    }
    std::string err = assign(s, *def, value);
    if (!err.empty()) return Error{"config_file", fmt::format("{}:{}: {}", path, lineno, err)};
  }
  return true;
}

}  // namespace

const std::vector<SettingDef>& setting_defs() {
  return kSettingDefs;
}

Settings::Settings() {
  for (const auto& def : kSettingDefs) {
    // The table's defaults are valid (SettingsTest.Defaults): no error to report.
    [[maybe_unused]] std::string err = assign(*this, def, def.default_value);
  }
  auto rules = parse_dedup_rules(dedup_pointers);
  dedup_rules = std::make_shared<const DedupRules>(rules ? std::move(rules.value()) : DedupRules{});
}

std::string env_name(const char* setting) {
  std::string out = "IPAYOUT_";
  for (const char* p = setting; *p; ++p) out.push_back(static_cast<char>(std::toupper(*p)));
  return out;
}

Result<ParsedArgs> parse_settings(const std::vector<std::string>& args, bool allow_unknown_flags) {
  ParsedArgs out;  // out.settings starts with the table's defaults
  Settings& s = out.settings;

  // Split the command line first: --config must be known before the file is read,
  // and the command line must win over the file and the environment.
  std::vector<std::pair<const SettingDef*, std::string>> cli;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      out.rest.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    std::replace(name.begin(), name.end(), '-', '_');
    const SettingDef* def = find_def(name);
    if (name == "config" || def) {
      if (!has_value) {
        if (i + 1 >= args.size()) return Error{"invalid_setting", "--" + name + " needs a value"};
        value = args[++i];
      }
      if (name == "config")
        s.config_file = value;
      else
        cli.emplace_back(def, value);
      continue;
    }
    if (!allow_unknown_flags) return Error{"invalid_setting", "unknown option " + a};
    out.rest.push_back(a);
  }

  if (s.config_file.empty()) {
    if (const char* c = std::getenv("IPAYOUT_CONFIG"); c && *c) s.config_file = c;
  }
  if (!s.config_file.empty()) {
    auto r = apply_file(s, s.config_file);
    if (!r) return r.error();
  }
  for (const auto& def : kSettingDefs) {
    const char* v = std::getenv(env_name(def.name).c_str());
    if (!v) continue;
    std::string err = assign(s, def, v);
    if (!err.empty()) return Error{"invalid_setting", env_name(def.name) + ": " + err};
  }
  for (const auto& [def, value] : cli) {
    std::string err = assign(s, *def, value);
    if (!err.empty()) return Error{"invalid_setting", "--" + err};
  }
  // Compiled here, once per parse: a bad value fails the start or the reload,
  // and requests only ever see compiled rules.
  auto rules = parse_dedup_rules(s.dedup_pointers);
  if (!rules) return rules.error();
  s.dedup_rules = std::make_shared<const DedupRules>(std::move(rules.value()));
  return out;
}

std::vector<std::string> SettingsStore::reload(const Settings& fresh) {
  std::lock_guard<std::mutex> lk(reload_mu_);
  auto next = std::make_shared<Settings>(*get());
  std::vector<std::string> ignored;
  for (const auto& def : kSettingDefs) {
    if (raw_value(*next, def) == raw_value(fresh, def)) continue;
    if (!def.reloadable) {
      ignored.emplace_back(def.name);
      continue;
    }
    std::visit([&](auto member) { (*next).*member = fresh.*member; }, def.field);
  }
  next->dedup_rules = fresh.dedup_rules;  // dedup_pointers is reloadable: always fresh's
  next->config_file = fresh.config_file;
  std::atomic_store(&current_, std::shared_ptr<const Settings>(std::move(next)));
  return ignored;
}

bool reload_settings(SettingsStore& settings, const std::vector<std::string>& args) {
  auto parsed = parse_settings(args, false);
  if (!parsed) {
    spdlog::error("msg=\"reload refused, keeping the running settings\" error=\"{}\"",
                  parsed.error().message);
    return false;
  }
  for (const std::string& name : settings.reload(parsed->settings)) {
    spdlog::warn("msg=\"setting changed but needs a restart\" setting={}", name);
  }
  spdlog::set_level(spdlog::level::from_str(settings.get()->log_level));
  spdlog::info("msg=\"settings reloaded\"");
  return true;
}

std::string show_config(const Settings& s) {
  std::ostringstream out;
  out << "# config file: " << (s.config_file.empty() ? "(none)" : s.config_file) << "\n";
  for (const auto& def : kSettingDefs) {
    out << def.name << " = " << shown_value(s, def) << "\n";
  }
  return out.str();
}

std::string settings_help() {
  std::ostringstream out;
  out << "Settings (config file `name = value`, environment IPAYOUT_NAME, or --name=value;\n"
         "later sources win):\n";
  for (const auto& def : kSettingDefs) {
    out << fmt::format("  --{:<21} {} (default: {})\n", def.name, def.description,
                       *def.default_value ? def.default_value : "\"\"");
  }
  return out.str();
}

std::string mask_conninfo(const std::string& c) {
  if (c.empty()) return c;
  // libpq parses its own syntax (URI or key=value, quoting, escapes), so no
  // password survives a corner case of a hand-written scanner.
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(c.c_str(), &err);
  if (!opts) {
    if (err) PQfreemem(err);
    return "(unparsable conninfo, not shown)";
  }
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (!o->val) continue;
    if (!out.empty()) out.push_back(' ');
    out += o->keyword;
    out += '=';
    if (std::string_view(o->keyword) == "password") {
      out += "****";
      continue;
    }
    std::string v = o->val;
    bool quote = v.empty() || v.find_first_of(" '\\") != std::string::npos;
    if (!quote) {
      out += v;
      continue;
    }
    out.push_back('\'');
    for (char ch : v) {
      if (ch == '\'' || ch == '\\') out.push_back('\\');
      out.push_back(ch);
    }
    out.push_back('\'');
  }
  PQconninfoFree(opts);
  return out;
}

}  // namespace ipayout
