// ipayout-webhookd: launcher for all the rest. Parses settings, then hands off to
// the pool (serve), the migration runner or the endpoint commands.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "admin.h"
#include "log.h"
#include "pool.h"
#include "settings.h"

namespace {

const char* kUsage =
    "usage: ipayout-webhookd [serve] [--config=FILE] [--SETTING=VALUE ...]\n"
    "       ipayout-webhookd migrate [--database=CONNINFO]\n"
    "       ipayout-webhookd endpoint add|list|disable|enable|set-key|set-policy|rotate-token ...\n"
    "       ipayout-webhookd show-config | --help | --version\n\n"
    "serve       run the FastCGI worker pool (the default)\n"
    "migrate     apply the SQL migrations (idempotent; needs a role that can create roles)\n"
    "endpoint    manage webhook endpoints (see below)\n"
    "show-config print the effective settings, secrets masked\n\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << kUsage << ipayout::settings_help() << "\n" << ipayout::endpoint_usage();
      return 0;
    }
    if (a == "--version") {
      std::cout << "ipayout-webhookd " << IPAYOUT_VERSION << "\n";
      return 0;
    }
  }
  std::string command = (!args.empty() && args[0].rfind("--", 0) != 0) ? args[0] : "serve";
  // `endpoint` has options of its own (its parser refuses those it does not
  // know); every other command takes settings only.
  auto parsed = ipayout::parse_settings(args, command == "endpoint");
  if (!parsed) {
    std::cerr << "ipayout-webhookd: " << parsed.error().message << "\n";
    return 2;
  }
  const ipayout::Settings& settings = parsed->settings;
  std::vector<std::string>& rest = parsed->rest;
  if (!rest.empty() && rest[0] == command) rest.erase(rest.begin());

  if (command == "endpoint") {
    rest.insert(rest.begin(), command);
    return ipayout::run_endpoint_command(settings, rest);
  }
  const bool known = command == "serve" || command == "migrate" || command == "show-config";
  if (known && !rest.empty()) {
    std::cerr << "ipayout-webhookd: " << command << ": unexpected argument '" << rest[0] << "'\n";
    return 2;
  }
  if (command == "show-config") {
    std::cout << ipayout::show_config(settings);
    return 0;
  }
  if (command == "migrate") return ipayout::run_migrate(settings);
  if (command == "serve") {
    ipayout::setup_logging(settings.log_level);
    return ipayout::run_pool(settings, args);
  }
  std::cerr << "ipayout-webhookd: unknown command '" << command << "'\n\n" << kUsage;
  return 2;
}
