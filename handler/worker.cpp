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
#include <optional>
#include <thread>
#include <vector>

#include "access_log.h"
#include "connections.h"
#include "db_session.h"
#include "endpoint_loader.h"
#include "endpoints.h"
#include "log.h"
#include "metrics.h"
#include "operator_routes.h"
#include "request.h"
#include "signals.h"
#include "writer.h"

namespace ipayout {
namespace {

// How long idle kept-alive connections may still bring a request once a drain
// starts: nginx may have picked one from its cache just before we close it.
constexpr std::chrono::milliseconds kIdleGrace{250};

// The services one worker process shares between its request threads.
struct Services {
  SettingsStore& store;
  EndpointCache& endpoints;
  DbSession& session;
  Writer& writer;
};

void serve(Connections& connections, const Services& sv) {
  ThreadState ts(*sv.store.get());
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
    const auto started = std::chrono::steady_clock::now();
    // One settings snapshot per request: a SIGHUP never mixes old and new values.
    std::shared_ptr<const Settings> settings = sv.store.get();
    std::optional<Delivery> delivery;
    try {
      const RequestHead head = read_head(req);
      if (auto op = operator_response(head, sv.session, sv.endpoints)) {
        write_response(req, *op);
      } else {
        delivery = handle_delivery(req, head, *settings, sv.endpoints, sv.writer, ts, started);
      }
    } catch (const std::exception& e) {
      // One catch per request: an unexpected failure is a 503 (retry), not a crash.
      spdlog::error("msg=\"request failed\" error=\"{}\"", e.what());
      write_response(req,
                     unavailable_response(settings->retry_after, "internal error, retry later"));
    }
    // Kept only if nginx asked to keep it and the request was read to its end:
    // a body left unread would be taken for the next request.
    if (!finish_input(req)) req.keepConnection = 0;
    FCGX_Finish_r(&req);  // the answer goes out to nginx here
    if (req.ipcFd >= 0) {
      connections.give_back(req.ipcFd);
      req.ipcFd = -1;
    }
    // The bookkeeping after the answer: it never delays one.
    if (delivery) account(*delivery);
    ts.trim();
  }
}

}  // namespace

int run_worker(SettingsStore& store, int listen_fd, const std::vector<std::string>& args) {
  const Settings& settings = *store.get();  // the non-reloadable values stay these
  if (FCGX_Init() != 0) {
    spdlog::critical("msg=\"FCGX_Init failed\"");
    return 1;
  }
  EndpointCache endpoints;
  DbSession session(store);
  EndpointLoader loader(store, session, endpoints);
  // Every new connection loads the endpoints before it serves anything else.
  session.on_connect([&loader](pqxx::connection& conn) { loader.load(conn, true); });
  Writer writer(store, session);
  writer.start();
  loader.start();
  Connections connections(listen_fd);
  if (!connections.start()) {
    spdlog::critical("msg=\"cannot watch the FastCGI socket\" error=\"{}\"", std::strerror(errno));
    return 1;
  }

  const Services services{store, endpoints, session, writer};
  std::vector<std::thread> threads;
  std::atomic<int> threads_done{0};
  for (int i = 0; i < settings.threads; ++i) {
    threads.emplace_back([&connections, &services, &threads_done] {
      serve(connections, services);
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
      loader.refresh_soon();  // endpoints too, without waiting for the next poll
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
  writer.stop();  // commits what is queued
  loader.stop();
  session.close("shutting down");
  spdlog::info("msg=\"worker stopped\"");
  return 0;
}

}  // namespace ipayout
