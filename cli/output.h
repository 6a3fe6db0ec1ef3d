// Where event lines go: stdout, one JSON object per line, flushed per line so
// a pipe (jq, a log shipper) sees each event as soon as it is printed.
#pragma once

#include <string>

namespace ipayout::events {

enum class WriteStatus {
  kOk,
  kClosed,  // the reader went away (EPIPE): stop quietly, like `yes | head`
  kFailed,  // any other write error (disk full, ...): stop with an error
};

// Writes `line` and a newline to stdout and flushes. Only after kOk has the
// line been handed on, and only then may a consumer ack it.
WriteStatus write_line(const std::string& line);

// Why the last write_line failed (strerror), for the message at exit.
std::string last_write_error();

}  // namespace ipayout::events
