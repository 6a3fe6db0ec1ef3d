// One worker process: T request threads accepting on the shared FastCGI socket,
// one writer, one endpoint loader, one database session. Returns the process exit code after a
// drain.
#pragma once

#include <string>
#include <vector>

#include "settings.h"

namespace ipayout {

// `args` are the command line the settings came from: SIGHUP hands them to
// reload_settings (settings.h), which parses them again and applies what is
// reloadable.
int run_worker(SettingsStore& settings, int listen_fd, const std::vector<std::string>& args);

}  // namespace ipayout
