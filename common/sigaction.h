// The one way this project installs a signal handler, shared by the daemon
// (handler/signals.cpp) and the CLI (cli/stop.cpp). Header-only so neither
// target links the other's code.
#pragma once

#include <csignal>
#include <cstring>

namespace ipayout {

// Installs `fn` (a handler that only sets a flag, or SIG_IGN) for `sig`.
// No SA_RESTART, on purpose: a blocking call (accept(), a wait for a
// notification) must return EINTR so the loop that owns the work sees the flag
// at once instead of sitting out its wait. Empty mask: the handlers only store
// to a sig_atomic_t, so nothing needs blocking while one runs.
inline void set_signal_handler(int sig, void (*fn)(int)) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(sig, &sa, nullptr);
}

}  // namespace ipayout
