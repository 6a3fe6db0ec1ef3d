#include "worker.h"

#include <fcgiapp.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "endpoints.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "signals.h"
#include "writer.h"

namespace ipayout {
namespace {

// Where each request thread is, so a drain interrupts only threads blocked in
// accept() and never one that is reading or answering a request.
enum ThreadPhase : int { kStarting, kAccepting, kServing, kDone };

struct RequestThread {
  std::thread thread;
  std::atomic<int> phase{kStarting};
};

std::atomic<bool> g_stopping{false};

void serve(RequestThread& self, int listen_fd, SettingsStore& store,
           const std::vector<DedupRule>& rules, EndpointCache& endpoints, Writer& writer) {
  ThreadState ts(*store.get(), rules);
  FCGX_Request req;
  FCGX_InitRequest(&req, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR);
  while (!g_stopping.load()) {
    self.phase.store(kAccepting);
    if (g_stopping.load()) break;
    int rc = FCGX_Accept_r(&req);
    self.phase.store(kServing);
    if (rc < 0) {
      if (g_stopping.load()) break;
      if (rc == -EINTR) continue;
      spdlog::error("msg=\"accept failed\" rc={}", rc);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    // One settings snapshot per request: a SIGHUP never mixes old and new values.
    std::shared_ptr<const Settings> settings = store.get();
    try {
      handle_request(req, *settings, endpoints, writer, ts);
    } catch (const std::exception& e) {
      // One catch per request: an unexpected failure is a 503 (retry), not a crash.
      spdlog::error("msg=\"request failed\" error=\"{}\"", e.what());
      HttpResponse r = error_response(503, "unavailable", "internal error, retry later");
      r.retry_after = settings->retry_after;
      write_response(req, r);
    }
    FCGX_Finish_r(&req);
  }
  FCGX_Free(&req, 1);
  self.phase.store(kDone);
}

}  // namespace

bool reload_settings(SettingsStore& settings, const std::vector<std::string>& args) {
  auto parsed = parse_settings(args, false);
  if (!parsed) {
    spdlog::error("msg=\"reload refused, keeping the running settings\" error=\"{}\"",
                  parsed.error().message);
    return false;
  }
  if (auto rules = parse_dedup_rules(parsed->settings.dedup_pointers); !rules) {
    spdlog::error("msg=\"reload refused, keeping the running settings\" error=\"{}\"",
                  rules.error().message);
    return false;
  }
  for (const std::string& name : settings.reload(parsed->settings)) {
    spdlog::warn("msg=\"setting changed but needs a restart\" setting={}", name);
  }
  spdlog::set_level(spdlog::level::from_str(settings.get()->log_level));
  spdlog::info("msg=\"settings reloaded\"");
  return true;
}

int run_worker(SettingsStore& store, int listen_fd, const std::vector<std::string>& args) {
  const Settings& settings = *store.get();  // the non-reloadable values stay these
  auto rules = parse_dedup_rules(settings.dedup_pointers);
  if (!rules) {
    spdlog::critical("msg=\"{}\"", rules.error().message);
    return 2;
  }
  if (FCGX_Init() != 0) {
    spdlog::critical("msg=\"FCGX_Init failed\"");
    return 1;
  }
  EndpointCache endpoints;
  Writer writer(store, endpoints);
  writer.start();

  std::vector<std::unique_ptr<RequestThread>> threads;
  for (int i = 0; i < settings.threads; ++i) {
    threads.push_back(std::make_unique<RequestThread>());
    RequestThread& t = *threads.back();
    t.thread = std::thread([&t, listen_fd, &store, &rules, &endpoints, &writer] {
      serve(t, listen_fd, store, rules.value(), endpoints, writer);
    });
  }
  spdlog::info("msg=\"worker started\" threads={}", settings.threads);

  size_t dropped_reported = 0;
  while (signals::term_count == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const size_t dropped = dropped_log_lines();
    metrics::count_log_lines_dropped(dropped - dropped_reported);
    dropped_reported = dropped;
    if (signals::hangup) {
      signals::hangup = 0;
      reload_settings(store, args);
      writer.refresh_soon();  // endpoints too, without waiting for the next poll
    }
  }

  // Drain: stop accepting, let in-flight requests finish, flush the writer.
  spdlog::info("msg=\"worker draining\"");
  g_stopping.store(true);
  FCGX_ShutdownPending();
  // A thread still "accepting" after this long is stuck inside libfcgi: once
  // shutdown is pending, OS_Accept keeps polling and closing the descriptor of
  // a connection whose first record never came, instead of returning. It holds
  // no request, so the process exits without it (and without joining it).
  const auto started = std::chrono::steady_clock::now();
  const auto idle_grace = std::chrono::seconds(1);
  bool abandon_idle = false;
  for (;;) {
    if (signals::term_count >= 2) {
      spdlog::warn("msg=\"second SIGTERM, exiting at once\"");
      finish_logging();
      _exit(1);
    }
    bool all_done = true, serving = false;
    for (auto& t : threads) {
      int phase = t->phase.load();
      if (phase == kDone) continue;
      all_done = false;
      if (phase == kServing) serving = true;
      // accept() may be entered just after a wake-up: repeat until the thread is out.
      if (phase == kAccepting) pthread_kill(t->thread.native_handle(), signals::kWakeSignal);
    }
    if (all_done) break;
    if (!serving && std::chrono::steady_clock::now() - started > idle_grace) {
      abandon_idle = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (abandon_idle) {
    writer.stop();  // every request that was in flight has been answered
    spdlog::warn("msg=\"worker stopped, leaving idle FastCGI connections unanswered\"");
    finish_logging();
    _exit(0);  // the blocked threads cannot be joined
  }
  for (auto& t : threads) t->thread.join();
  writer.stop();
  spdlog::info("msg=\"worker stopped\"");
  return 0;
}

}  // namespace ipayout
