// One worker process: T request threads accepting on the shared FastCGI socket,
// one writer. Returns the process exit code after a drain.
#pragma once

#include <string>
#include <vector>

#include "settings.h"

namespace ipayout {

// `args` are the command line the settings came from: SIGHUP parses them again
// (with the config file and environment) and applies what is reloadable.
int run_worker(SettingsStore& settings, int listen_fd, const std::vector<std::string>& args);

// Parses `args` again and applies the reloadable settings; logs what changed
// and what needs a restart. Returns false if the new settings are invalid.
bool reload_settings(SettingsStore& settings, const std::vector<std::string>& args);

}  // namespace ipayout
