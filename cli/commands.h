// The one-shot commands: consumers, replay, subscribe, unsubscribe, purge. Each
// returns the process exit code; SQL errors are reported, not thrown.
#pragma once

#include "options.h"

namespace ipayout::events {

int run_consumers(const Options& o);
int run_replay(const Options& o);
int run_subscribe(const Options& o);
int run_unsubscribe(const Options& o);
int run_purge(const Options& o);

}  // namespace ipayout::events
