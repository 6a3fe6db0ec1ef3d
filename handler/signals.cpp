#include "signals.h"

#include <cstring>

namespace ipayout::signals {

volatile sig_atomic_t term_count = 0;
volatile sig_atomic_t child_exited = 0;
volatile sig_atomic_t hangup = 0;

namespace {

void on_term(int) {
  term_count = term_count + 1;
}
void on_child(int) {
  child_exited = 1;
}
void on_hup(int) {
  hangup = 1;
}
void on_wake(int) {}

void set(int sig, void (*fn)(int)) {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(sig, &sa, nullptr);
}

}  // namespace

void install() {
  term_count = 0;
  child_exited = 0;
  hangup = 0;
  set(SIGTERM, on_term);
  set(SIGINT, on_term);
  set(SIGCHLD, on_child);
  set(SIGHUP, on_hup);
  set(kWakeSignal, on_wake);
  set(SIGPIPE, SIG_IGN);
}

}  // namespace ipayout::signals
