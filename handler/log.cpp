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

// Every logger this process makes: the same pattern; `flush_each` for the
// synchronous ones (the async one writes each line as its thread takes it).
void install(std::shared_ptr<spdlog::logger> logger, spdlog::level::level_enum level,
             bool flush_each) {
  logger->set_pattern(pattern());
  logger->set_level(level);
  if (flush_each) logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

// Synchronous, on stderr (journald keeps it under systemd).
std::shared_ptr<spdlog::logger> stderr_logger(const char* name) {
  return std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::stderr_sink_mt>());
}

}  // namespace

void setup_logging(const std::string& level) {
  install(stderr_logger("ipayout"), spdlog::level::from_str(level), true);
}

void use_async_logging() {
  g_pool = std::make_shared<spdlog::details::thread_pool>(kAsyncQueueLines, 1);
  install(std::make_shared<spdlog::async_logger>(
              "ipayout-async", std::make_shared<spdlog::sinks::stderr_sink_mt>(), g_pool,
              spdlog::async_overflow_policy::overrun_oldest),
          spdlog::default_logger()->level(), false);
}

size_t dropped_log_lines() {
  return g_pool ? g_pool->overrun_counter() : 0;
}

void finish_logging() {
  // Back to a synchronous logger; the pool's destructor then writes every
  // queued line and joins its thread.
  install(stderr_logger("ipayout-exit"), spdlog::default_logger()->level(), true);
  g_pool.reset();
}

}  // namespace ipayout
