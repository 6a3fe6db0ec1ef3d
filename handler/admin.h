// Operator commands that talk to the database as an administrator:
// `migrate` and `endpoint ...`. Each returns a process exit code.
#pragma once

#include <string>
#include <vector>

#include "settings.h"

namespace ipayout {

int run_migrate(const Settings& settings);
int run_endpoint_command(const Settings& settings, const std::vector<std::string>& args);
std::string endpoint_usage();

}  // namespace ipayout
