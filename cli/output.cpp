#include "output.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace ipayout::events {
namespace {
int g_last_errno = 0;
}  // namespace

WriteStatus write_line(const std::string& line) {
  errno = 0;
  bool ok = std::fwrite(line.data(), 1, line.size(), stdout) == line.size() &&
            std::fputc('\n', stdout) != EOF && std::fflush(stdout) == 0;
  if (ok) return WriteStatus::kOk;
  g_last_errno = errno;
  return errno == EPIPE ? WriteStatus::kClosed : WriteStatus::kFailed;
}

std::string last_write_error() {
  return g_last_errno != 0 ? std::strerror(g_last_errno) : "unknown error";
}

}  // namespace ipayout::events
