// The one settings table. Parsing (file, environment, command line), --help and
// `show-config` are all generated from kSettingDefs in settings.cpp; adding a
// setting means adding one row there and one field here.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "dedup.h"
#include "result.h"

namespace ipayout {

// Every default lives in the settings table (kSettingDefs), not here: a
// default-constructed Settings holds the table's defaults.
struct Settings {
  Settings();

  std::string config_file;     // where file values came from ("" = none)
  std::string listen;          // socket path or host:port, when not inherited
  int listen_mode;             // permissions of a unix socket we create
  int workers;                 // processes in the pool
  int threads;                 // request threads per process
  std::string database;        // libpq conninfo or URI; "" = libpq's PG* variables
  size_t body_limit;           // bytes; nginx/ipayout-webhook.conf must agree
  int replay_window;           // seconds either side of a parsable x-timestamp
  std::string dedup_pointers;  // alternatives separated by ',', parts joined by '+'
  int batch_max;               // events per group commit
  int batch_wait_us;           // wait for more events before a commit below batch_max
  int queue_max;               // events waiting per process before we answer 503
  int commit_timeout_ms;       // statement_timeout of the writer's connection
  int request_timeout_ms;      // longest a request waits for its commit
  int retry_after;             // seconds, sent with every 503
  int endpoint_refresh_ms;     // how often endpoint changes are picked up
  int reconnect_ms;            // pause between database connection attempts
  std::string log_level;

  // dedup_pointers compiled (never null): set wherever dedup_pointers is, so
  // requests use the rules of their own snapshot without parsing anything.
  std::shared_ptr<const DedupRules> dedup_rules;
};

enum class SettingType { kString, kInt, kSize, kMode, kLogLevel };

// Where a setting lives in Settings; the type decides how the text is parsed.
using SettingField = std::variant<std::string Settings::*, int Settings::*, size_t Settings::*>;

struct SettingDef {
  const char* name;
  SettingType type;
  SettingField field;
  long long min, max;  // bounds for numbers
  const char* default_value;
  bool secret;      // masked in show-config (only secrets inside values are masked)
  bool reloadable;  // picked up on SIGHUP without a restart
  const char* description;
};

const std::vector<SettingDef>& setting_defs();

// Environment variable for a setting: IPAYOUT_ + upper-case name.
std::string env_name(const char* setting);

// Applies, in increasing priority: defaults, the config file (--config=FILE or
// IPAYOUT_CONFIG), IPAYOUT_* environment variables, then `args` of the form
// --name=value or --name value. Arguments that are not settings are returned in
// `rest` in their original order (subcommands and their own flags).
struct ParsedArgs {
  Settings settings;
  std::vector<std::string> rest;
};
Result<ParsedArgs> parse_settings(const std::vector<std::string>& args, bool allow_unknown_flags);

// One line per setting, secrets inside the database conninfo masked.
std::string show_config(const Settings& s);
std::string settings_help();

// The settings a running process uses, swapped whole on SIGHUP. Readers take a
// snapshot (one atomic load) and use it for a whole request or batch, so a
// reload never mixes old and new values inside one unit of work.
class SettingsStore {
 public:
  explicit SettingsStore(Settings s) : current_(std::make_shared<const Settings>(std::move(s))) {}
  std::shared_ptr<const Settings> get() const { return std::atomic_load(&current_); }
  // Takes the reloadable settings from `fresh`; the others keep their values
  // (a restart applies them). Returns the names of those that changed but were
  // not applied. Values are compared as they are, not as show-config prints
  // them: a new database password alone is a change.
  std::vector<std::string> reload(const Settings& fresh);

 private:
  std::mutex reload_mu_;
  std::shared_ptr<const Settings> current_;
};

// The whole reload (SIGHUP, in the pool master and in each worker): parses
// `args` again with the config file and environment, applies what is
// reloadable, logs what needs a restart, and sets the log level. Returns false,
// keeping the running settings, if the new ones are invalid.
bool reload_settings(SettingsStore& settings, const std::vector<std::string>& args);

// conninfo with any password replaced by "****" (URI or key=value form).
std::string mask_conninfo(const std::string& conninfo);

}  // namespace ipayout
