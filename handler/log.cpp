#include "log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace ipayout {

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("ipayout");
  // logfmt: ts=... level=... pid=... then the message's own key=value pairs.
  logger->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%e%z level=%l pid=%P %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace ipayout
