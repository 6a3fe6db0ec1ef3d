// ipayout-events: launcher for the reading commands. Parses the command line and
// hands off; the work is in tail.cpp (the feed loop) and commands.cpp.
#include <iostream>
#include <map>

#include "commands.h"
#include "options.h"
#include "tail.h"

int main(int argc, char** argv) {
  namespace ev = ipayout::events;
  auto parsed = ev::parse_options(argc, argv);
  if (!parsed) {
    std::cerr << "ipayout-events: " << parsed.error().message << "\n\n" << ev::kUsage;
    return 2;
  }
  const ev::Options& o = *parsed;
  if (o.help) {
    std::cout << ev::kUsage;
    return 0;
  }
  if (o.version) {
    std::cout << "ipayout-events " << IPAYOUT_VERSION << "\n";
    return 0;
  }
  const std::map<std::string, int (*)(const ev::Options&)> commands = {
      {"tail", ev::run_tail},
      {"consumers", ev::run_consumers},
      {"replay", ev::run_replay},
      {"subscribe", ev::run_subscribe},
      {"unsubscribe", ev::run_unsubscribe},
      {"purge", ev::run_purge},
  };
  auto c = commands.find(o.command);
  if (c == commands.end()) {
    std::cerr << (o.command.empty() ? "ipayout-events: no command given"
                                    : "ipayout-events: unknown command '" + o.command + "'")
              << "\n\n"
              << ev::kUsage;
    return 2;
  }
  if (o.command != "subscribe" && o.command != "unsubscribe" && !o.positional.empty()) {
    std::cerr << "ipayout-events: unexpected argument '" << o.positional[0] << "'\n";
    return 2;
  }
  return c->second(o);
}
