// SIGINT/SIGTERM only set a flag; the tail loop checks it between steps and
// leaves after acking what it printed.
#pragma once

#include <chrono>

namespace ipayout::events {

// SIGINT/SIGTERM set the stop flag. No SA_RESTART: a wait for a notification
// returns at once instead of sitting out its timeout. SIGPIPE is ignored, so a
// closed stdout is a failed write the loop sees (and does not ack).
void install_stop_handlers();
bool stop_requested();

// Sleeps up to `d`, in short steps so a stop request ends it early. Returns
// false if it was cut short by a stop request.
bool sleep_unless_stopped(std::chrono::milliseconds d);

}  // namespace ipayout::events
