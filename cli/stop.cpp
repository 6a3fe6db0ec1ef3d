#include "stop.h"

#include <csignal>
#include <thread>

#include "common/sigaction.h"

namespace ipayout::events {
namespace {

volatile sig_atomic_t g_stop = 0;

void on_stop(int) {
  g_stop = 1;
}

}  // namespace

void install_stop_handlers() {
  set_signal_handler(SIGINT, on_stop);
  set_signal_handler(SIGTERM, on_stop);
  set_signal_handler(SIGPIPE, SIG_IGN);
}

bool stop_requested() {
  return g_stop != 0;
}

bool sleep_unless_stopped(std::chrono::milliseconds d) {
  constexpr std::chrono::milliseconds kStep{50};
  auto until = std::chrono::steady_clock::now() + d;
  while (!stop_requested()) {
    auto left = until - std::chrono::steady_clock::now();
    if (left <= std::chrono::milliseconds::zero()) return true;
    std::this_thread::sleep_for(left < kStep ? left : kStep);
  }
  return false;
}

}  // namespace ipayout::events
