#include "worker.h"

#include <fcgiapp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "connections.h"
#include "endpoints.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "signals.h"
#include "writer.h"

namespace ipayout {
namespace {

// How long idle kept-alive connections may still bring a request once a drain
// starts: nginx may have picked one from its cache just before we close it.
constexpr std::chrono::milliseconds kIdleGrace{250};

void serve(Connections& connections, SettingsStore& store, const std::vector<DedupRule>& rules,
           EndpointCache& endpoints, Writer& writer) {
  ThreadState ts(*store.get(), rules);
  FCGX_Request req;
  for (int fd; (fd = connections.next()) >= 0;) {
    // libfcgi reads this connection only: no listening socket (-1), so if the
    // connection turns out to be closed it returns an error instead of
    // accepting. keepConnection set: the Finish at the top of FCGX_Accept_r
    // must not close the descriptor we just gave it.
    FCGX_InitRequest(&req, -1, 0);
    req.ipcFd = fd;
    req.keepConnection = 1;
    if (FCGX_Accept_r(&req) < 0) continue;  // nginx closed it; libfcgi closed our end
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
    // Kept only if nginx asked to keep it and the request was read to its end:
    // a body left unread would be taken for the next request.
    if (!finish_input(req)) req.keepConnection = 0;
    FCGX_Finish_r(&req);
    if (req.ipcFd >= 0) {
      connections.give_back(req.ipcFd);
      req.ipcFd = -1;
    }
  }
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
  Connections connections(listen_fd);
  if (!connections.start()) {
    spdlog::critical("msg=\"cannot watch the FastCGI socket\" error=\"{}\"", std::strerror(errno));
    return 1;
  }

  std::vector<std::thread> threads;
  std::atomic<int> threads_done{0};
  for (int i = 0; i < settings.threads; ++i) {
    threads.emplace_back([&connections, &store, &rules, &endpoints, &writer, &threads_done] {
      serve(connections, store, rules.value(), endpoints, writer);
      threads_done.fetch_add(1);
    });
  }
  signals::unblock();  // the other threads keep them blocked: only this loop sees signals
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

  // Drain: stop accepting, answer every request already here, flush the writer.
  spdlog::info("msg=\"worker draining\"");
  connections.drain(kIdleGrace);
  while (threads_done.load() < static_cast<int>(threads.size())) {
    if (signals::term_count >= 2) {
      // Now, not after the drain: events waiting for the writer get no
      // answer, so none was acknowledged, and i-payout delivers them again.
      // Not through spdlog: its thread may be stuck on a stalled stderr, and
      // other threads are still logging.
      char line[96];
      int n = std::snprintf(line, sizeof line,
                            "level=warn pid=%d msg=\"second SIGTERM, exiting at once\"\n",
                            static_cast<int>(getpid()));
      if (n > 0 && write(STDERR_FILENO, line, static_cast<size_t>(n)) < 0) {
        // Exiting anyway.
      }
      _exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& t : threads) t.join();
  writer.stop();
  spdlog::info("msg=\"worker stopped\"");
  return 0;
}

}  // namespace ipayout
