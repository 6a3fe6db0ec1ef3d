// spdlog, set up once: logfmt lines on stderr (journald keeps them), one level.
#pragma once

#include <spdlog/formatter.h>

#include <cstddef>
#include <memory>
#include <string>

namespace ipayout {

// The line format of every logger: logfmt with this process's pid, and the
// message on one line whatever it holds (a newline, as in libpq's error
// texts, would split one record into several journal entries): control
// characters are written as \n, \r, \t or \xNN.
std::unique_ptr<spdlog::formatter> line_formatter();

// Synchronous: the master and the admin subcommands write few lines.
void setup_logging(const std::string& level);

// In a worker, after fork (threads do not survive fork): request threads only
// append their line to a buffer and one logging thread writes what gathered,
// every 10 ms at most, in one write(), so a slow journal or a full pipe never
// holds up an answer and a busy worker pays one write and one wake-up per
// flush, not per line. When the buffer is full (2 MiB: the journal is not
// reading) new lines are dropped, not the request; dropped lines are counted.
void use_async_logging();
size_t dropped_log_lines();

// Writes out what is queued. Call before the process exits.
void finish_logging();

}  // namespace ipayout
