// The settings table: defaults, precedence (default < file < environment <
// command line), validation messages, show-config masking, --help, and the
// "one body limit" contract with the nginx snippet.
#include "settings.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace ipayout {
namespace {

// Every IPAYOUT_* variable the parser reads, cleared for the test and restored
// afterwards, so the developer's environment cannot change results.
class SettingsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    names_.push_back("IPAYOUT_CONFIG");
    for (const auto& def : setting_defs()) names_.push_back(env_name(def.name));
    for (const auto& n : names_) {
      if (const char* v = std::getenv(n.c_str())) saved_[n] = v;
      unsetenv(n.c_str());
    }
  }
  void TearDown() override {
    for (const auto& n : names_) unsetenv(n.c_str());
    for (const auto& [n, v] : saved_) setenv(n.c_str(), v.c_str(), 1);
    for (const auto& f : files_) std::remove(f.c_str());
  }

  std::string write_config(const std::string& text) {
    std::string path = ::testing::TempDir() + "ipayout_settings_test_" +
                       std::to_string(::getpid()) + "_" + std::to_string(files_.size()) + ".conf";
    std::ofstream out(path);
    out << text;
    files_.push_back(path);
    return path;
  }

  static Settings parse_ok(const std::vector<std::string>& args, bool allow_unknown = false) {
    auto r = parse_settings(args, allow_unknown);
    EXPECT_TRUE(r.ok()) << r.error().code << ": " << r.error().message;
    return r.ok() ? r->settings : Settings{};
  }

  // The error message, or "" when the arguments were accepted.
  static std::string parse_error(const std::vector<std::string>& args, bool allow_unknown = false) {
    auto r = parse_settings(args, allow_unknown);
    return r.ok() ? "" : r.error().message;
  }

  std::vector<std::string> names_;
  std::map<std::string, std::string> saved_;
  std::vector<std::string> files_;
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST_F(SettingsTest, Defaults) {
  Settings s = parse_ok({});
  EXPECT_EQ(s.config_file, "");
  EXPECT_EQ(s.listen, "/run/ipayout-webhook/fcgi.sock");
  EXPECT_EQ(s.listen_mode, 0660);
  EXPECT_EQ(s.workers, 1);
  EXPECT_EQ(s.threads, 64);
  EXPECT_EQ(s.database, "");
  EXPECT_EQ(s.body_limit, 1048576u);
  EXPECT_EQ(s.replay_window, 300);
  EXPECT_EQ(s.dedup_pointers, "/eventId,/id,/data/id+/event");
  EXPECT_EQ(s.batch_max, 256);
  EXPECT_EQ(s.queue_max, 4096);
  EXPECT_EQ(s.commit_timeout_ms, 5000);
  EXPECT_EQ(s.request_timeout_ms, 10000);
  EXPECT_EQ(s.retry_after, 5);
  EXPECT_EQ(s.endpoint_refresh_ms, 1000);
  EXPECT_EQ(s.reconnect_ms, 250);
  EXPECT_EQ(s.log_level, "info");
}

TEST_F(SettingsTest, NumericStructDefaultsMatchTable) {
  // Settings{} (used directly by code that skips parsing) must not disagree with
  // the table on numbers.
  Settings table = parse_ok({});
  Settings plain;
  EXPECT_EQ(plain.listen_mode, table.listen_mode);
  EXPECT_EQ(plain.workers, table.workers);
  EXPECT_EQ(plain.threads, table.threads);
  EXPECT_EQ(plain.body_limit, table.body_limit);
  EXPECT_EQ(plain.replay_window, table.replay_window);
  EXPECT_EQ(plain.batch_max, table.batch_max);
  EXPECT_EQ(plain.queue_max, table.queue_max);
  EXPECT_EQ(plain.commit_timeout_ms, table.commit_timeout_ms);
  EXPECT_EQ(plain.request_timeout_ms, table.request_timeout_ms);
  EXPECT_EQ(plain.retry_after, table.retry_after);
  EXPECT_EQ(plain.endpoint_refresh_ms, table.endpoint_refresh_ms);
  EXPECT_EQ(plain.reconnect_ms, table.reconnect_ms);
  EXPECT_EQ(plain.log_level, table.log_level);
}

TEST_F(SettingsTest, TableIsConsistent) {
  std::set<std::string> names;
  for (const auto& def : setting_defs()) {
    EXPECT_TRUE(names.insert(def.name).second) << "duplicate setting " << def.name;
    EXPECT_NE(std::string(def.description), "") << def.name;
    EXPECT_EQ(
        env_name(def.name), "IPAYOUT_" + [&] {
          std::string u = def.name;
          for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          return u;
        }());
  }
  EXPECT_EQ(env_name("body_limit"), "IPAYOUT_BODY_LIMIT");
  // Only the conninfo is a secret.
  for (const auto& def : setting_defs()) {
    EXPECT_EQ(def.secret, std::string(def.name) == "database") << def.name;
  }
}

TEST_F(SettingsTest, ConfigFileOverridesDefaults) {
  std::string path = write_config(
      "# comment\n"
      "; another comment\n"
      "\n"
      "workers = 4\n"
      "  threads=5  \n"
      "listen = \"/tmp/x.sock\"\n"
      "log_level = debug\n"
      "listen_mode = 0600\n");
  Settings s = parse_ok({"--config=" + path});
  EXPECT_EQ(s.config_file, path);
  EXPECT_EQ(s.workers, 4);
  EXPECT_EQ(s.threads, 5);
  EXPECT_EQ(s.listen, "/tmp/x.sock");  // quotes removed
  EXPECT_EQ(s.log_level, "debug");
  EXPECT_EQ(s.listen_mode, 0600);
  EXPECT_EQ(s.replay_window, 300);  // untouched
}

TEST_F(SettingsTest, ConfigFileFromEnvironmentAndSeparateArgument) {
  std::string path = write_config("workers = 7\n");
  setenv("IPAYOUT_CONFIG", path.c_str(), 1);
  EXPECT_EQ(parse_ok({}).workers, 7);
  unsetenv("IPAYOUT_CONFIG");
  EXPECT_EQ(parse_ok({"--config", path}).workers, 7);
  // --config wins over IPAYOUT_CONFIG.
  std::string other = write_config("workers = 9\n");
  setenv("IPAYOUT_CONFIG", path.c_str(), 1);
  EXPECT_EQ(parse_ok({"--config=" + other}).workers, 9);
}

TEST_F(SettingsTest, PrecedenceDefaultFileEnvCommandLine) {
  std::string path = write_config(
      "workers = 4\n"
      "threads = 5\n"
      "replay_window = 100\n");
  setenv("IPAYOUT_WORKERS", "6", 1);
  setenv("IPAYOUT_THREADS", "7", 1);
  Settings s = parse_ok({"--config=" + path, "--workers=3"});
  EXPECT_EQ(s.workers, 3);          // command line > environment
  EXPECT_EQ(s.threads, 7);          // environment > file
  EXPECT_EQ(s.replay_window, 100);  // file > default
  EXPECT_EQ(s.batch_max, 256);      // default

  // Without the command-line value the environment wins over the file.
  EXPECT_EQ(parse_ok({"--config=" + path}).workers, 6);
  unsetenv("IPAYOUT_WORKERS");
  EXPECT_EQ(parse_ok({"--config=" + path}).workers, 4);
}

TEST_F(SettingsTest, EnvironmentOverridesDefault) {
  setenv("IPAYOUT_WORKERS", "11", 1);
  setenv("IPAYOUT_BODY_LIMIT", "2048", 1);
  setenv("IPAYOUT_DATABASE", "host=db", 1);
  Settings s = parse_ok({});
  EXPECT_EQ(s.workers, 11);
  EXPECT_EQ(s.body_limit, 2048u);
  EXPECT_EQ(s.database, "host=db");
}

TEST_F(SettingsTest, CommandLineForms) {
  EXPECT_EQ(parse_ok({"--workers=3"}).workers, 3);
  EXPECT_EQ(parse_ok({"--workers", "3"}).workers, 3);
  EXPECT_EQ(parse_ok({"--body-limit=2048"}).body_limit, 2048u);
  EXPECT_EQ(parse_ok({"--body-limit", "4096"}).body_limit, 4096u);
  EXPECT_EQ(parse_ok({"--body_limit=8192"}).body_limit, 8192u);
  EXPECT_EQ(parse_ok({"--log-level=warn"}).log_level, "warn");
  EXPECT_EQ(parse_ok({"--dedup-pointers=/a,/b"}).dedup_pointers, "/a,/b");
  EXPECT_EQ(parse_ok({"--database=host=h password=x"}).database, "host=h password=x");
  // The last of repeated options wins.
  EXPECT_EQ(parse_ok({"--workers=3", "--workers=4"}).workers, 4);
}

TEST_F(SettingsTest, MissingValueRefused) {
  std::string err = parse_error({"--workers"});
  EXPECT_TRUE(contains(err, "workers")) << err;
}

TEST_F(SettingsTest, UnknownOptionRefusedForServe) {
  std::string err = parse_error({"--bogus=1"}, false);
  EXPECT_TRUE(contains(err, "--bogus")) << err;
  EXPECT_NE(parse_error({"--wokers=3"}, false), "");  // a typo must not be ignored
}

TEST_F(SettingsTest, UnknownOptionsAndPositionalsPassedThroughInOrder) {
  auto r = parse_settings(
      {"endpoint", "add", "--name=shop", "--workers=3", "--url", "https://x", "--", "-v"}, true);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->settings.workers, 3);
  EXPECT_EQ(r->rest, std::vector<std::string>(
                         {"endpoint", "add", "--name=shop", "--url", "https://x", "--", "-v"}));
}

TEST_F(SettingsTest, PositionalsKeptEvenWhenUnknownFlagsRefused) {
  auto r = parse_settings({"serve", "--workers", "5"}, false);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->settings.workers, 5);
  EXPECT_EQ(r->rest, std::vector<std::string>({"serve"}));
}

TEST_F(SettingsTest, BadValuesNameTheSetting) {
  struct Case {
    std::vector<std::string> args;
    std::string setting;
  };
  const Case cases[] = {
      {{"--workers=0"}, "workers"},
      {{"--workers=257"}, "workers"},
      {{"--workers=abc"}, "workers"},
      {{"--workers=3x"}, "workers"},
      {{"--workers="}, "workers"},
      {{"--workers=99999999999999999999"}, "workers"},
      {{"--log_level=loud"}, "log_level"},
      {{"--listen_mode=999"}, "listen_mode"},
      {{"--listen-mode=01000"}, "listen_mode"},
      {{"--body_limit=10"}, "body_limit"},
      {{"--body-limit=-1"}, "body_limit"},
      {{"--replay_window=0"}, "replay_window"},
  };
  for (const auto& c : cases) {
    std::string err = parse_error(c.args);
    EXPECT_NE(err, "") << c.args[0] << " was accepted";
    EXPECT_TRUE(contains(err, c.setting)) << c.args[0] << ": " << err;
  }
}

TEST_F(SettingsTest, BadEnvironmentValueNamesTheVariable) {
  setenv("IPAYOUT_WORKERS", "abc", 1);
  std::string err = parse_error({});
  EXPECT_TRUE(contains(err, "IPAYOUT_WORKERS")) << err;
  setenv("IPAYOUT_WORKERS", "0", 1);
  err = parse_error({});
  EXPECT_TRUE(contains(err, "IPAYOUT_WORKERS")) << err;
}

TEST_F(SettingsTest, ConfigFileUnknownKeyNamesFileAndLine) {
  std::string path = write_config("workers = 3\n\nfrobnicate = 1\n");
  auto r = parse_settings({"--config=" + path}, false);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.error().message, path + ":3")) << r.error().message;
  EXPECT_TRUE(contains(r.error().message, "frobnicate")) << r.error().message;
}

TEST_F(SettingsTest, ConfigFileMissingEqualsNamesFileAndLine) {
  std::string path = write_config("# header\nworkers 3\n");
  auto r = parse_settings({"--config=" + path}, false);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.error().message, path + ":2")) << r.error().message;
}

TEST_F(SettingsTest, ConfigFileBadValueNamesFileLineAndSetting) {
  std::string path = write_config("threads = 4\nworkers = many\n");
  auto r = parse_settings({"--config=" + path}, false);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.error().message, path + ":2")) << r.error().message;
  EXPECT_TRUE(contains(r.error().message, "workers")) << r.error().message;
}

TEST_F(SettingsTest, ConfigFileUnreadableRefused) {
  std::string path = ::testing::TempDir() + "ipayout_settings_test_does_not_exist.conf";
  auto r = parse_settings({"--config=" + path}, false);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.error().message, path)) << r.error().message;
}

TEST_F(SettingsTest, ShowConfigListsEverySetting) {
  std::string out = show_config(parse_ok({}));
  for (const auto& def : setting_defs()) {
    EXPECT_TRUE(contains(out, "\n" + std::string(def.name) + " = ")) << def.name << "\n" << out;
  }
  EXPECT_TRUE(contains(out, "\nbody_limit = 1048576\n")) << out;
  EXPECT_TRUE(contains(out, "\nlisten_mode = 0660\n")) << out;
  EXPECT_TRUE(contains(out, "\nworkers = 1\n")) << out;
}

TEST_F(SettingsTest, ShowConfigMasksDatabasePassword) {
  for (std::string db : {"postgresql://u:secret@h/db", "host=h password=secret user=u",
                         "host=h password='secret and more' user=u"}) {
    Settings s = parse_ok({"--database=" + db});
    std::string out = show_config(s);
    EXPECT_FALSE(contains(out, "secret")) << out;
    EXPECT_TRUE(contains(out, "****")) << out;
  }
}

// mask_conninfo parses with libpq (PQconninfoParse) and prints the options it
// found as key=value, password masked: URI and key=value inputs alike.
TEST(MaskConninfo, UriPassword) {
  std::string m = mask_conninfo("postgresql://u:secret@h/db");
  EXPECT_FALSE(contains(m, "secret")) << m;
  EXPECT_TRUE(contains(m, "password=****")) << m;
  EXPECT_TRUE(contains(m, "user=u")) << m;
  EXPECT_TRUE(contains(m, "host=h")) << m;
  EXPECT_TRUE(contains(m, "dbname=db")) << m;
  std::string m2 = mask_conninfo("postgres://u:secret@h:5432/db?sslmode=require");
  EXPECT_FALSE(contains(m2, "secret")) << m2;
  EXPECT_TRUE(contains(m2, "port=5432")) << m2;
  EXPECT_TRUE(contains(m2, "sslmode=require")) << m2;
}

TEST(MaskConninfo, UriPasswordQueryParameter) {
  std::string m = mask_conninfo("postgresql://h/db?user=u&password=secret&sslmode=require");
  EXPECT_FALSE(contains(m, "secret")) << m;
  EXPECT_TRUE(contains(m, "sslmode=require")) << m;
  EXPECT_TRUE(contains(m, "user=u")) << m;
}

TEST(MaskConninfo, UriWithoutPasswordKeepsEverything) {
  std::string m = mask_conninfo("postgresql:///db?host=/run/postgresql");
  EXPECT_TRUE(contains(m, "dbname=db")) << m;
  EXPECT_TRUE(contains(m, "host=/run/postgresql")) << m;
  EXPECT_FALSE(contains(m, "password")) << m;
}

TEST(MaskConninfo, KeyValuePassword) {
  std::string m = mask_conninfo("host=h password=secret user=u");
  EXPECT_FALSE(contains(m, "secret")) << m;
  EXPECT_TRUE(contains(m, "password=****")) << m;
  EXPECT_EQ(mask_conninfo("password=secret"), "password=****");
  EXPECT_FALSE(contains(mask_conninfo("host=h password = secret user=u"), "secret"));
}

TEST(MaskConninfo, KeyValueQuotedPassword) {
  std::string m = mask_conninfo("host=h password='a b' user=u");
  EXPECT_FALSE(contains(m, "a b")) << m;
  EXPECT_FALSE(contains(m, "'a")) << m;
  EXPECT_TRUE(contains(m, "user=u")) << m;
  EXPECT_TRUE(contains(m, "****")) << m;
  std::string m2 = mask_conninfo("host=h password='secret' user=u");
  EXPECT_FALSE(contains(m2, "secret")) << m2;
}

TEST(MaskConninfo, KeyValueQuotedPasswordWithEscapedQuote) {
  // libpq: "Single quotes and backslashes within the value must be escaped with
  // a backslash". The masked text must not leak what follows an escaped quote.
  std::string m = mask_conninfo(R"(host=h password='sec\'ret wrd' user=u)");
  EXPECT_FALSE(contains(m, "ret")) << m;
  EXPECT_FALSE(contains(m, "wrd")) << m;
  EXPECT_TRUE(contains(m, "user=u")) << m;
}

TEST(MaskConninfo, KeyValuePasswordAfterWordPasswordInAnotherValue) {
  // The word "password" inside another keyword's value must not redirect the mask.
  std::string m = mask_conninfo("application_name=password host=h password=secret");
  EXPECT_FALSE(contains(m, "secret")) << m;
  EXPECT_TRUE(contains(m, "application_name=password")) << m;
}

TEST(MaskConninfo, ValuesWithSpacesAreQuoted) {
  EXPECT_EQ(mask_conninfo(""), "");
  std::string m = mask_conninfo("host=h dbname='my db' user=u");
  EXPECT_TRUE(contains(m, "dbname='my db'")) << m;
}

TEST(MaskConninfo, UnparsableIsNotShown) {
  std::string m = mask_conninfo("host=h password='secret");  // unterminated quote
  EXPECT_FALSE(contains(m, "secret")) << m;
}

// ---------------------------------------------------------------------------
// Reload (SettingsStore::reload): what it applies, what it reports.

TEST_F(SettingsTest, ReloadDetectsAChangeOfOnlyTheDatabasePassword) {
  // show-config prints both as password=****: the reload must compare the
  // values themselves, or a new password would go unreported.
  SettingsStore store(parse_ok({"--database=host=db user=w password=old"}));
  Settings fresh = parse_ok({"--database=host=db user=w password=new"});
  ASSERT_EQ(show_config(*store.get()), show_config(fresh));
  EXPECT_EQ(store.reload(fresh), std::vector<std::string>{"database"});
  // Not reloadable: reported for a restart, the running value stays.
  EXPECT_EQ(store.get()->database, "host=db user=w password=old");
}

TEST_F(SettingsTest, ReloadOfTheSameSettingsReportsNothing) {
  SettingsStore store(parse_ok({"--database=host=db password=same", "--threads=3"}));
  EXPECT_TRUE(store.reload(parse_ok({"--database=host=db password=same", "--threads=3"})).empty());
}

TEST_F(SettingsTest, ReloadAppliesReloadableAndReportsTheRest) {
  SettingsStore store(parse_ok({"--threads=2", "--retry-after=5"}));
  EXPECT_EQ(store.reload(parse_ok({"--threads=3", "--retry-after=7"})),
            std::vector<std::string>{"threads"});
  EXPECT_EQ(store.get()->threads, 2);
  EXPECT_EQ(store.get()->retry_after, 7);
}

TEST_F(SettingsTest, DedupRulesCompiledIntoTheSnapshot) {
  Settings s = parse_ok({"--dedup-pointers=/a+/b,/c"});
  ASSERT_NE(s.dedup_rules, nullptr);
  ASSERT_EQ(s.dedup_rules->size(), 2u);
  EXPECT_EQ((*s.dedup_rules)[0].text, "/a+/b");
  EXPECT_EQ((*s.dedup_rules)[0].pointers, (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ((*s.dedup_rules)[1].text, "/c");

  // A reload swaps the compiled rules together with the text.
  SettingsStore store(s);
  auto before = store.get()->dedup_rules;
  store.reload(parse_ok({"--dedup-pointers=/x"}));
  EXPECT_EQ(store.get()->dedup_pointers, "/x");
  ASSERT_EQ(store.get()->dedup_rules->size(), 1u);
  EXPECT_EQ((*store.get()->dedup_rules)[0].text, "/x");
  EXPECT_EQ(before->size(), 2u);  // a request holding the old snapshot keeps its rules
}

TEST_F(SettingsTest, DefaultSettingsCarryTheDefaultRules) {
  Settings plain;
  ASSERT_NE(plain.dedup_rules, nullptr);
  EXPECT_EQ(plain.dedup_rules->size(), 3u);  // /eventId, /id, /data/id+/event
}

TEST_F(SettingsTest, BadDedupPointersRefusedWhenParsed) {
  EXPECT_TRUE(contains(parse_error({"--dedup-pointers=eventId"}), "dedup_pointers"));
}

TEST_F(SettingsTest, HelpMentionsEverySetting) {
  std::string help = settings_help();
  for (const auto& def : setting_defs()) {
    EXPECT_TRUE(contains(help, "--" + std::string(def.name))) << def.name;
    EXPECT_TRUE(contains(help, def.description)) << def.name;
  }
  EXPECT_TRUE(contains(help, "1048576"));
}

// ---------------------------------------------------------------------------
// One body limit: nginx's client_max_body_size equals the worker's default.

std::optional<size_t> nginx_size_bytes(const std::string& number, const std::string& unit) {
  size_t n = std::stoull(number);
  if (unit.empty()) return n;
  switch (unit[0]) {
    case 'k':
    case 'K':
      return n * 1024;
    case 'm':
    case 'M':
      return n * 1024 * 1024;
    case 'g':
    case 'G':
      return n * 1024 * 1024 * 1024;
  }
  return std::nullopt;
}

TEST_F(SettingsTest, NginxBodyLimitEqualsDefault) {
  std::ifstream in(NGINX_SNIPPET);
  ASSERT_TRUE(in) << "cannot read " << NGINX_SNIPPET;
  const std::regex directive(R"(^\s*client_max_body_size\s+(\d+)([kKmMgG]?)\s*;)");
  const std::regex message(R"(exceeds (\d+) bytes)");
  std::vector<size_t> limits;
  std::vector<size_t> messages;
  std::string line;
  while (std::getline(in, line)) {
    auto first = line.find_first_not_of(" \t");
    if (first != std::string::npos && line[first] == '#') continue;  // comments
    std::smatch m;
    if (std::regex_search(line, m, directive)) {
      auto bytes = nginx_size_bytes(m[1], m[2]);
      ASSERT_TRUE(bytes.has_value()) << line;
      limits.push_back(*bytes);
    }
    if (std::regex_search(line, m, message)) messages.push_back(std::stoull(m[1]));
  }
  const size_t worker_default = parse_ok({}).body_limit;
  ASSERT_FALSE(limits.empty()) << "no client_max_body_size in " << NGINX_SNIPPET;
  for (size_t limit : limits) EXPECT_EQ(limit, worker_default);
  // The 413 answer nginx gives itself quotes the same number.
  for (size_t n : messages) EXPECT_EQ(n, worker_default);

  // And the table's default text says the same.
  for (const auto& def : setting_defs()) {
    if (std::string(def.name) == "body_limit") {
      EXPECT_EQ(std::stoull(def.default_value), worker_default);
    }
  }
}

}  // namespace
}  // namespace ipayout
