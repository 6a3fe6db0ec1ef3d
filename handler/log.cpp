#include "log.h"

#include <spdlog/async.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <string>
#include <string_view>

namespace ipayout {
namespace {

// %* : the message with its control characters escaped (see line_formatter).
class OneLineMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u != 0x7f) {
        dest.push_back(c);
        continue;
      }
      const char* esc = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : nullptr;
      if (esc != nullptr) {
        dest.append(esc, esc + 2);
      } else {
        const char hex[4] = {'\\', 'x', kHex[u >> 4], kHex[u & 15]};
        dest.append(hex, hex + 4);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<OneLineMessage>();
  }
};

// logfmt: ts=... level=... pid=... then the message's own key=value pairs.
// The pid is written into the pattern when the logger is made (after fork, in
// a worker): spdlog's %P would ask the kernel for it on every line.
std::string pattern() {
  return "ts=%Y-%m-%dT%H:%M:%S.%e%z level=%l pid=" + std::to_string(getpid()) + " %*";
}
// Lines, not bytes: a burst of ~8k requests in flight before any is dropped.
constexpr size_t kAsyncQueueLines = 8192;

std::shared_ptr<spdlog::details::thread_pool> g_pool;

// Every logger this process makes: the same pattern; `flush_each` for the
// synchronous ones (the async one writes each line as its thread takes it).
void install(std::shared_ptr<spdlog::logger> logger, spdlog::level::level_enum level,
             bool flush_each) {
  logger->set_formatter(line_formatter());
  logger->set_level(level);
  if (flush_each) logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

// Synchronous, on stderr (journald keeps it under systemd).
std::shared_ptr<spdlog::logger> stderr_logger(const char* name) {
  return std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::stderr_sink_mt>());
}

}  // namespace

std::unique_ptr<spdlog::formatter> line_formatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<OneLineMessage>('*').set_pattern(pattern());
  return f;
}

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
