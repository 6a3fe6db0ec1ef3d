#include "log.h"

#include <spdlog/async.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <string>

namespace ipayout {
namespace {

// logfmt: ts=... level=... pid=... then the message's own key=value pairs.
// The pid is written into the pattern when the logger is made (after fork, in
// a worker): spdlog's %P would ask the kernel for it on every line.
std::string pattern() {
  return "ts=%Y-%m-%dT%H:%M:%S.%e%z level=%l pid=" + std::to_string(getpid()) + " %v";
}
// Lines, not bytes: a burst of ~8k requests in flight before any is dropped.
constexpr size_t kAsyncQueueLines = 8192;

std::shared_ptr<spdlog::details::thread_pool> g_pool;

}  // namespace

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("ipayout");
  logger->set_pattern(pattern());
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

void use_async_logging() {
  auto old = spdlog::default_logger();
  g_pool = std::make_shared<spdlog::details::thread_pool>(kAsyncQueueLines, 1);
  // The sink's own mutex may be held by a thread that did not survive fork:
  // a fresh sink, not the master's.
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::async_logger>(
      "ipayout-async", sink, g_pool, spdlog::async_overflow_policy::overrun_oldest);
  logger->set_pattern(pattern());
  logger->set_level(old->level());
  // No flush_on: stderr is unbuffered, so each line is written when the
  // thread takes it; a flush per line would take a second queue slot.
  spdlog::set_default_logger(logger);
}

size_t dropped_log_lines() {
  return g_pool ? g_pool->overrun_counter() : 0;
}

void finish_logging() {
  if (!g_pool) {
    spdlog::default_logger()->flush();
    return;
  }
  // Back to a synchronous logger; the pool's destructor then writes every
  // queued line and joins its thread.
  auto level = spdlog::default_logger()->level();
  auto logger = std::make_shared<spdlog::logger>("ipayout-exit",
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern(pattern());
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  g_pool.reset();
}

}  // namespace ipayout
