// One worker process: T request threads accepting on the shared FastCGI socket,
// one writer. Returns the process exit code after a drain.
#pragma once

#include "settings.h"

namespace ipayout {

int run_worker(const Settings& settings, int listen_fd);

}  // namespace ipayout
