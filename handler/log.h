// spdlog set up once: logfmt lines on stderr (journald keeps them), one level.
#pragma once

#include <string>

namespace ipayout {

void setup_logging(const std::string& level);

}  // namespace ipayout
