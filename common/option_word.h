// One command-line word that starts with '-', taken apart the same way by the
// daemon's subcommands (handler/admin.cpp) and the events CLI (cli/options.cpp):
// `--name=value` gives name and value, `--name` (or `-n`) the name alone.
#pragma once

#include <optional>
#include <string>

namespace ipayout {

struct OptionWord {
  std::string name;                  // without the dashes
  std::optional<std::string> value;  // after '=', when there is one
};

inline OptionWord split_option_word(const std::string& word) {
  OptionWord w{word.substr(word.size() > 1 && word[1] == '-' ? 2 : 1), std::nullopt};
  if (auto eq = w.name.find('='); eq != std::string::npos) {
    w.value = w.name.substr(eq + 1);
    w.name.erase(eq);
  }
  return w;
}

}  // namespace ipayout
