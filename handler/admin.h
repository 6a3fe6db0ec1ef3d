// Operator commands that talk to the database as an administrator:
// `migrate` and `endpoint ...`. Each returns a process exit code.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "result.h"
#include "settings.h"

namespace ipayout {

// `endpoint VERB ...` after the settings were taken out: the words checked
// against what VERB takes. An unknown verb or option, an option without its
// value and a wrong number of arguments are errors (exit status 2).
struct EndpointArgs {
  std::string verb;
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;  // by option name, without "--"
};
// `args` starts with "endpoint".
Result<EndpointArgs> parse_endpoint_args(const std::vector<std::string>& args);

int run_migrate(const Settings& settings);
int run_endpoint_command(const Settings& settings, const std::vector<std::string>& args);
std::string endpoint_usage();

}  // namespace ipayout
