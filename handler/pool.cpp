#include "pool.h"

#include <fcgiapp.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <map>
#include <thread>

#include "log.h"
#include "metrics.h"
#include "readiness.h"
#include "signals.h"
#include "worker.h"

namespace ipayout {
namespace {

using Clock = std::chrono::steady_clock;

bool is_listening_socket(int fd) {
  int accepting = 0;
  socklen_t len = sizeof accepting;
  return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0 && accepting;
}

pid_t spawn_worker(const SettingsStore& store, int listen_fd, int slot,
                   const std::vector<std::string>& args) {
  pid_t pid = fork();
  if (pid != 0) return pid;  // parent (or -1)
  // Child: die with the master, whatever kills it.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signals::install();
  if (getppid() == 1) _exit(0);  // the master is already gone
  metrics::set_worker_slot(slot);
  metrics::set_db_connected(false);
  SettingsStore own(*store.get());  // the master's latest reload, then our own
  signals::block();                 // every thread run_worker starts; its main loop unblocks
  use_async_logging();
  int rc = run_worker(own, listen_fd, args);
  finish_logging();
  _exit(rc);
}

}  // namespace

int obtain_listen_socket(const Settings& settings) {
  int n = sd_listen_fds(1);
  if (n > 1) {
    spdlog::critical("msg=\"systemd passed {} sockets, expected 1\"", n);
    return -1;
  }
  if (n == 1) {
    spdlog::info("msg=\"listening on the socket from systemd\"");
    return SD_LISTEN_FDS_START;
  }
  if (is_listening_socket(0)) {
    spdlog::info("msg=\"listening on the inherited socket on fd 0 (spawn-fcgi)\"");
    return 0;
  }
  if (settings.listen.empty()) {
    spdlog::critical("msg=\"no socket inherited and listen is empty\"");
    return -1;
  }
  const bool is_path = settings.listen.find('/') != std::string::npos ||
                       settings.listen.find(':') == std::string::npos;
  if (is_path) unlink(settings.listen.c_str());  // a stale socket from a previous run
  int fd = FCGX_OpenSocket(settings.listen.c_str(), 1024);
  if (fd < 0) {
    spdlog::critical("msg=\"cannot listen\" listen={}", settings.listen);
    return -1;
  }
  if (is_path) chmod(settings.listen.c_str(), static_cast<mode_t>(settings.listen_mode));
  spdlog::info("msg=\"listening\" listen={}", settings.listen);
  return fd;
}

int run_pool(const Settings& initial, const std::vector<std::string>& args) {
  signals::install();
  int listen_fd = obtain_listen_socket(initial);
  if (listen_fd < 0) return 1;
  metrics::init();    // before fork: the workers share the counters
  readiness::init();  // before fork: workers report the database answered
  bool ready = false;
  SettingsStore store(initial);
  const Settings& settings = *store.get();  // workers/threads are not reloadable

  struct Worker {
    Clock::time_point started;
    int slot;
  };
  std::map<pid_t, Worker> workers;
  std::vector<int> free_slots;  // metrics slots of dead workers, reused
  for (int i = std::min(settings.workers, metrics::kMaxWorkers) - 1; i >= 0; --i) {
    free_slots.push_back(i);
  }
  int pending_spawns = settings.workers;
  Clock::time_point next_spawn = Clock::now();
  bool draining = false;
  spdlog::info("msg=\"pool starting\" workers={} threads={}", settings.workers, settings.threads);

  for (;;) {
    if (signals::term_count >= 2) {
      spdlog::warn("msg=\"second SIGTERM: killing workers\"");
      for (auto& [pid, _] : workers) kill(pid, SIGKILL);
      return 1;
    }
    if (signals::term_count == 1 && !draining) {
      draining = true;
      sd_notify(0, "STOPPING=1");
      spdlog::info("msg=\"pool draining\" workers={}", workers.size());
      for (auto& [pid, _] : workers) kill(pid, SIGTERM);
    }
    // Reap every exited worker; replace it unless we are stopping.
    signals::child_exited = 0;
    for (;;) {
      int status = 0;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      auto it = workers.find(pid);
      if (it == workers.end()) continue;
      auto lived = Clock::now() - it->second.started;
      free_slots.push_back(it->second.slot);
      workers.erase(it);
      if (draining) continue;
      if (WIFSIGNALED(status)) {
        spdlog::error("msg=\"worker killed, replacing it\" pid={} signal={}", pid,
                      WTERMSIG(status));
      } else {
        spdlog::error("msg=\"worker exited, replacing it\" pid={} code={}", pid,
                      WEXITSTATUS(status));
      }
      ++pending_spawns;
      metrics::count_worker_restart();
      // A worker that dies right after starting would otherwise be a fork loop.
      if (lived < std::chrono::seconds(1)) next_spawn = Clock::now() + std::chrono::seconds(1);
    }
    if (!ready && readiness::poll_ready()) {
      ready = true;
      sd_notify(0, "READY=1\nSTATUS=database connected");
      spdlog::info("msg=\"pool ready\"");
    }
    if (signals::hangup && !draining) {
      signals::hangup = 0;
      // Check the new settings here first: a broken file is reported once, and
      // workers forked later start from what the master accepted.
      if (reload_settings(store, args)) {
        for (auto& [pid, _] : workers) kill(pid, SIGHUP);
      }
    }
    if (draining && workers.empty()) {
      spdlog::info("msg=\"pool stopped\"");
      return 0;
    }
    while (!draining && pending_spawns > 0 && Clock::now() >= next_spawn) {
      int slot = free_slots.empty() ? 0 : free_slots.back();
      pid_t pid = spawn_worker(store, listen_fd, slot, args);
      if (pid < 0) {
        spdlog::error("msg=\"fork failed\"");
        next_spawn = Clock::now() + std::chrono::seconds(1);
        break;
      }
      if (!free_slots.empty()) free_slots.pop_back();
      workers.emplace(pid, Worker{Clock::now(), slot});
      --pending_spawns;
    }
    // Signals interrupt the sleep, so a dead worker is replaced at once.
    if (!signals::child_exited && !signals::hangup) usleep(draining ? 20 * 1000 : 200 * 1000);
  }
}

}  // namespace ipayout
