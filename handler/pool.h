// The pool master: gets the FastCGI listening socket (systemd, spawn-fcgi or our
// own), forks N workers, replaces any that die, and drains them on SIGTERM.
#pragma once

#include "settings.h"

namespace ipayout {

// Inherited from systemd socket activation (LISTEN_FDS), else spawn-fcgi's fd 0,
// else opened from settings.listen. Returns -1 and logs on failure.
int obtain_listen_socket(const Settings& settings);

#include <string>
#include <vector>

// `args`: the command line, parsed again on SIGHUP.
int run_pool(const Settings& settings, const std::vector<std::string>& args);

}  // namespace ipayout
