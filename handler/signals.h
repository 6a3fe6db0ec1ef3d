// Signal handlers only set flags; the loops that own the work act on them.
#pragma once

#include <csignal>

namespace ipayout::signals {

// Number of SIGTERM/SIGINT received: 1 = drain, 2 = exit at once.
extern volatile sig_atomic_t term_count;
extern volatile sig_atomic_t child_exited;
extern volatile sig_atomic_t hangup;

// SIGTERM/SIGINT/SIGCHLD/SIGHUP set the flags above; SIGPIPE is ignored (a
// client that went away is a failed write, not a dead process). No
// SA_RESTART, on purpose: the master's sleep ends when a signal arrives.
void install();

// Threads started while the flag signals are blocked inherit the block, so
// only the thread that unblocks them (a process's main loop) ever runs a
// handler: no other thread's read or write is cut short with EINTR.
void block();
void unblock();

}  // namespace ipayout::signals
