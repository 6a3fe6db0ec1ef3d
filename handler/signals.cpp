#include "signals.h"

#include "common/sigaction.h"

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

}  // namespace

void install() {
  term_count = 0;
  child_exited = 0;
  hangup = 0;
  set_signal_handler(SIGTERM, on_term);
  set_signal_handler(SIGINT, on_term);
  set_signal_handler(SIGCHLD, on_child);
  set_signal_handler(SIGHUP, on_hup);
  set_signal_handler(SIGPIPE, SIG_IGN);
}

}  // namespace ipayout::signals
