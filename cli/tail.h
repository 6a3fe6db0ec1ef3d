// `ipayout-events tail`: print events as JSON lines, optionally following the
// feed (LISTEN to wake, the cursor to catch up) across lost connections.
#pragma once

#include "options.h"

namespace ipayout::events {

// Returns the process exit code.
int run_tail(const Options& o);

}  // namespace ipayout::events
