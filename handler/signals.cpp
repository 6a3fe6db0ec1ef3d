#include "signals.h"

#include <pthread.h>

#include <initializer_list>

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

namespace {

sigset_t flag_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGCHLD, SIGHUP}) sigaddset(&set, sig);
  return set;
}

}  // namespace

void block() {
  sigset_t set = flag_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void unblock() {
  sigset_t set = flag_signals();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

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
