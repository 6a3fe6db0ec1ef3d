#include "admin.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <pqxx/pqxx>
#include <sstream>

#include "common/duration.h"
#include "common/option_word.h"
#include "crypto.h"
#include "endpoints.h"
#include "migrations.h"
#include "signature.h"

namespace ipayout {
namespace {

// What each verb takes: its positional words (in the usage's words) and the
// options that carry a value.
struct VerbSpec {
  const char* verb;
  std::vector<const char*> positional;
  std::vector<const char*> options;
};

const std::vector<VerbSpec>& verb_specs() {
  static const std::vector<VerbSpec> specs = {
      {"add",
       {"NAME"},
       {"notification-url", "key", "key-file", "policy", "success-status", "success-body"}},
      {"list", {}, {}},
      {"disable", {"NAME"}, {}},
      {"enable", {"NAME"}, {}},
      {"set-key", {"NAME"}, {"key", "key-file", "keep-previous"}},
      {"set-policy", {"NAME", "POLICY"}, {}},
      {"rotate-token", {"NAME"}, {"notification-url", "keep-previous"}},
      {"set-response", {"NAME"}, {"status", "body"}},
      {"set-required-header", {"NAME", "'X-NAME: VALUE'"}, {}},
      {"clear-required-header", {"NAME"}, {}},
  };
  return specs;
}

Error usage_error(const std::string& message) {
  return Error{"usage", message};
}

}  // namespace

Result<EndpointArgs> parse_endpoint_args(const std::vector<std::string>& args) {
  if (args.size() < 2) return usage_error("endpoint: which command?");
  EndpointArgs out;
  out.verb = args[1];
  const VerbSpec* spec = nullptr;
  for (const auto& v : verb_specs()) {
    if (out.verb == v.verb) spec = &v;
  }
  if (!spec) return usage_error("endpoint: unknown command '" + out.verb + "'");
  const std::string what = "endpoint " + out.verb;
  auto takes = [spec](const std::string& name) {
    for (const char* o : spec->options) {
      if (name == o) return true;
    }
    return false;
  };
  bool options_end = false;
  for (size_t i = 2; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (options_end || a.size() < 2 || a[0] != '-') {
      out.positional.push_back(a);
      continue;
    }
    if (a == "--") {
      options_end = true;
      continue;
    }
    auto [name, value] = split_option_word(a);
    if (a[1] != '-' || !takes(name)) {
      return usage_error(what + ": unknown option '" + a.substr(0, a.find('=')) + "'");
    }
    if (!value) {
      if (i + 1 >= args.size()) return usage_error(what + ": --" + name + " needs a value");
      value = args[++i];
    }
    out.values[name] = *value;
  }
  if (out.positional.size() != spec->positional.size()) {
    std::string want;
    for (const char* p : spec->positional) want += std::string(" ") + p;
    if (out.positional.size() > spec->positional.size()) {
      return usage_error(what + ": unexpected argument '" +
                         out.positional[spec->positional.size()] + "'");
    }
    return usage_error(what + ": expects" + want);
  }
  for (const char* status : {"success-status", "status"}) {
    if (auto s = out.values.find(status); s != out.values.end()) {
      const std::string& v = s->second;
      if (v.empty() || v.size() > 3 || v.find_first_not_of("0123456789") != std::string::npos) {
        return usage_error(what + ": --" + status + " needs an HTTP status, not '" + v + "'");
      }
    }
  }
  if (auto k = out.values.find("keep-previous"); k != out.values.end()) {
    if (!parse_duration_seconds(k->second)) {
      return usage_error(what +
                         ": --keep-previous needs a duration (90s, 15m, 24h, 7d, 2w or 0), " +
                         "not '" + k->second + "'");
    }
  }
  if (out.verb == "set-response" && out.values.empty()) {
    return usage_error(what + ": expects --status N and/or --body T");
  }
  return out;
}

namespace {

using Flags = EndpointArgs;

// The key comes from --key, --key-file (first line) or IPAYOUT_KEY: a key on the
// command line is visible in `ps`, so the other two are preferred.
bool read_key(const Flags& f, std::string& key, std::string& error) {
  if (auto it = f.values.find("key-file"); it != f.values.end()) {
    std::ifstream in(it->second);
    if (!in || !std::getline(in, key)) {
      error = "cannot read --key-file " + it->second;
      return false;
    }
  } else if (auto k = f.values.find("key"); k != f.values.end()) {
    key = k->second;
  } else if (const char* env = std::getenv("IPAYOUT_KEY")) {
    key = env;
  }
  while (!key.empty() && (key.back() == '\r' || key.back() == '\n' || key.back() == ' ')) {
    key.pop_back();
  }
  return true;
}

// --notification-url is the public base of the receiver (https://hooks.example.com)
// or a full URL with "{token}" where the token goes.
std::string build_url(const std::string& base, const std::string& token) {
  if (auto p = base.find("{token}"); p != std::string::npos) {
    std::string out = base;
    out.replace(p, 7, token);
    return out;
  }
  std::string out = base;
  while (!out.empty() && out.back() == '/') out.pop_back();
  return out + std::string(kWebhookPathPrefix) + token;
}

pqxx::binarystring hash_param(const std::string& token) {
  return pqxx::binarystring(token_hash(token));
}

int fail(const std::string& message) {
  std::cerr << "ipayout-webhookd: " << message << "\n";
  return 1;
}

int endpoint_add(pqxx::connection& conn, const Flags& f) {
  const std::string& name = f.positional[0];
  auto url_it = f.values.find("notification-url");
  if (url_it == f.values.end() || url_it->second.empty()) {
    return fail("endpoint add: --notification-url is required");
  }
  auto policy = parse_policy(f.values.count("policy") ? f.values.at("policy") : "required");
  if (!policy) return fail("endpoint add: --policy must be required, record or off");
  std::string key, error;
  if (!read_key(f, key, error)) return fail(error);
  if (key.empty() && *policy != SignaturePolicy::kOff) {
    return fail(
        "endpoint add: a key (--key-file, --key or IPAYOUT_KEY) is required unless "
        "--policy=off");
  }
  std::string token = crypto::random_token(kGeneratedTokenBytes);
  std::string url = build_url(url_it->second, token);
  int status = 200;
  if (auto s = f.values.find("success-status"); s != f.values.end()) status = std::stoi(s->second);
  std::optional<std::string> body;
  if (auto b = f.values.find("success-body"); b != f.values.end()) body = b->second;

  pqxx::work tx(conn);
  tx.exec_params(
      "INSERT INTO ipayout.endpoints (name, token_hash, ipayout_key, notification_url, "
      "signature_policy, success_status, success_body) VALUES ($1, $2, $3, $4, $5, $6, $7)",
      name, hash_param(token), key, url, to_string(*policy), status, body);
  tx.commit();
  std::cerr << "endpoint '" << name << "' created. Register this URL with i-payout; it holds the "
            << "secret token and is shown only now:\n";
  std::cout << url << "\n";
  return 0;
}

// A grace period still running, as "until <time>"; "-" when none.
const char* kGraceSql =
    "CASE WHEN %s > now() THEN 'until ' || to_char(%s AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') ELSE '-' END";

std::string grace_sql(const char* column) {
  char buf[256];
  std::snprintf(buf, sizeof buf, kGraceSql, column, column);
  return buf;
}

int endpoint_list(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  // The required header's value is a secret like the key: only its name shows.
  pqxx::result r = tx.exec(
      "SELECT e.id, e.name, e.enabled, e.signature_policy, e.success_status, "
      "  regexp_replace(e.notification_url, '[A-Za-z0-9_-]{32,}', '<token>'), "
      "  (SELECT count(*) FROM ipayout.events v WHERE v.endpoint_id = e.id), e.created_at, " +
      grace_sql("e.previous_key_until") + ", " + grace_sql("e.previous_token_until") +
      ", coalesce(e.required_header_name, '-') "
      "FROM ipayout.endpoints e ORDER BY e.id");
  std::printf("%-4s %-20s %-8s %-9s %-6s %-8s %-28s %-28s %-20s %s\n", "id", "name", "enabled",
              "policy", "status", "events", "previous_key", "previous_token", "required_header",
              "notification_url");
  for (const auto& row : r) {
    std::printf("%-4s %-20s %-8s %-9s %-6s %-8s %-28s %-28s %-20s %s\n", row[0].c_str(),
                row[1].c_str(), row[2].as<bool>() ? "yes" : "no", row[3].c_str(), row[4].c_str(),
                row[6].c_str(), row[8].c_str(), row[9].c_str(), row[10].c_str(), row[5].c_str());
  }
  return 0;
}

// --keep-previous in seconds (validated by parse_endpoint_args); 24 hours when absent.
int64_t keep_previous(const Flags& f) {
  auto it = f.values.find("keep-previous");
  if (it == f.values.end()) return 24 * 3600;
  return parse_duration_seconds(it->second).value_or(0);
}

std::string grace_note(int64_t seconds, const char* what) {
  if (seconds == 0) return std::string("the previous ") + what + " is revoked now";
  return std::string("the previous ") + what + " keeps working for " + std::to_string(seconds) +
         " s (see endpoint list)";
}

int endpoint_set_key(pqxx::connection& conn, const Flags& f) {
  std::string key, error;
  if (!read_key(f, key, error)) return fail(error);
  if (key.empty()) return fail("set-key: no key given");
  const int64_t keep = keep_previous(f);
  pqxx::work tx(conn);
  // The old key becomes the previous one (a previous key still in its grace
  // is replaced: one rotation overlaps at a time). Without a key before
  // (policy off), there is nothing to keep.
  pqxx::result r = tx.exec_params(
      "UPDATE ipayout.endpoints SET "
      "  previous_key = CASE WHEN $3 > 0 AND ipayout_key <> '' AND ipayout_key <> $2 "
      "                      THEN ipayout_key END, "
      "  previous_key_until = CASE WHEN $3 > 0 AND ipayout_key <> '' AND ipayout_key <> $2 "
      "                      THEN now() + make_interval(secs => $3) END, "
      "  ipayout_key = $2 "
      "WHERE name = $1 RETURNING id",
      f.positional[0], key, keep);
  if (r.empty()) return fail("no endpoint named '" + f.positional[0] + "'");
  tx.commit();
  std::cerr << "endpoint '" << f.positional[0] << "': key replaced; " << grace_note(keep, "key")
            << "\n";
  return 0;
}

int endpoint_rotate_token(pqxx::connection& conn, const Flags& f) {
  auto url_it = f.values.find("notification-url");
  if (url_it == f.values.end() || url_it->second.empty()) {
    return fail("rotate-token: --notification-url is required");
  }
  const int64_t keep = keep_previous(f);
  std::string token = crypto::random_token(kGeneratedTokenBytes);
  std::string url = build_url(url_it->second, token);
  pqxx::work tx(conn);
  // The old token and the URL it was registered with (what i-payout signs
  // for it) keep delivering until the grace ends.
  pqxx::result r = tx.exec_params(
      "UPDATE ipayout.endpoints SET "
      "  previous_token_hash = CASE WHEN $4 > 0 THEN token_hash END, "
      "  previous_notification_url = CASE WHEN $4 > 0 THEN notification_url END, "
      "  previous_token_until = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4) END, "
      "  token_hash = $2, notification_url = $3 "
      "WHERE name = $1 RETURNING id",
      f.positional[0], hash_param(token), url, keep);
  if (r.empty()) return fail("no endpoint named '" + f.positional[0] + "'");
  tx.commit();
  std::cerr << "endpoint '" << f.positional[0] << "': new token; " << grace_note(keep, "URL")
            << ". Register this URL with i-payout (shown only now):\n";
  std::cout << url << "\n";
  return 0;
}

int endpoint_set_response(pqxx::connection& conn, const Flags& f) {
  std::optional<int> status;
  if (auto s = f.values.find("status"); s != f.values.end()) status = std::stoi(s->second);
  // --body '' goes back to the default JSON body.
  std::optional<std::string> body;
  bool set_body = false;
  if (auto b = f.values.find("body"); b != f.values.end()) {
    set_body = true;
    if (!b->second.empty()) body = b->second;
  }
  pqxx::work tx(conn);
  pqxx::result r = tx.exec_params(
      "UPDATE ipayout.endpoints SET success_status = coalesce($2, success_status), "
      "  success_body = CASE WHEN $3 THEN $4 ELSE success_body END "
      "WHERE name = $1 RETURNING success_status",
      f.positional[0], status, set_body, body);
  if (r.empty()) return fail("no endpoint named '" + f.positional[0] + "'");
  tx.commit();
  std::cerr << "endpoint '" << f.positional[0] << "': success answer set (status "
            << r[0][0].c_str() << ")\n";
  return 0;
}

int endpoint_set_required_header(pqxx::connection& conn, const Flags& f) {
  // 'X-Name: value'. The value is a secret: it is not repeated in any message.
  std::string line = f.positional[1];
  if (line == "-") {  // from stdin: a value on the command line is visible in ps
    if (!std::getline(std::cin, line)) return fail("set-required-header: nothing on stdin");
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  auto colon = line.find(':');
  if (colon == std::string::npos) {
    return fail("set-required-header: expects 'X-Name: value' (a colon after the name)");
  }
  std::string name = line.substr(0, colon);
  std::string value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // nginx drops a header with '_' in its name (underscores_in_headers off), and
  // hands Content-Type/-Length over under other names; the signature headers
  // are the signature's.
  if (name.empty() || name.size() > 64 ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^`|~") !=
          std::string::npos) {
    return fail("set-required-header: the header name must be 1..64 letters, digits or '-'");
  }
  if (name == "content-type" || name == "content-length" || name == "x-signature" ||
      name == "x-timestamp" || name == "host") {
    return fail("set-required-header: '" + name + "' cannot be the required header");
  }
  if (value.empty()) return fail("set-required-header: the value is empty");
  pqxx::work tx(conn);
  pqxx::result r = tx.exec_params(
      "UPDATE ipayout.endpoints SET required_header_name = $2, required_header_value = $3 "
      "WHERE name = $1 RETURNING id",
      f.positional[0], name, value);
  if (r.empty()) return fail("no endpoint named '" + f.positional[0] + "'");
  tx.commit();
  std::cerr << "endpoint '" << f.positional[0] << "': every delivery must now carry " << name
            << " with the value given\n";
  return 0;
}

int endpoint_update(pqxx::connection& conn, const std::string& name, const std::string& set_sql,
                    const std::string& value, const std::string& what) {
  pqxx::work tx(conn);
  pqxx::result r = tx.exec_params(
      "UPDATE ipayout.endpoints SET " + set_sql + " WHERE name = $1 RETURNING id", name, value);
  if (r.empty()) return fail("no endpoint named '" + name + "'");
  tx.commit();
  std::cerr << "endpoint '" << name << "': " << what << "\n";
  return 0;
}

}  // namespace

std::string endpoint_usage() {
  return "Endpoint commands (connect with --database, as the schema owner):\n"
         "  endpoint add NAME --notification-url URL [--key-file F | --key KEY]\n"
         "               [--policy required|record|off] [--success-status N] [--success-body T]\n"
         "      Generates a 256-bit token, stores only its SHA-256 and prints the full URL to\n"
         "      register with i-payout, once. URL is the public base (https://hooks.example.com)\n"
         "      or a full URL containing {token}. The key may also come from IPAYOUT_KEY.\n"
         "  endpoint list\n"
         "  endpoint disable NAME | enable NAME\n"
         "  endpoint set-key NAME [--key-file F | --key KEY] [--keep-previous DURATION]\n"
         "      The previous key keeps verifying for DURATION (default 24h; 0 revokes it now).\n"
         "  endpoint set-policy NAME required|record|off\n"
         "  endpoint rotate-token NAME --notification-url URL [--keep-previous DURATION]\n"
         "      New token and URL (printed once); the old URL keeps delivering for DURATION\n"
         "      (default 24h), then answers 404; 0 ends it now.\n"
         "  endpoint set-response NAME [--status N] [--body T]\n"
         "      The answer to a stored delivery (i-payout's acceptedResponseCode/Text);\n"
         "      --body '' restores the default JSON body.\n"
         "  endpoint set-required-header NAME 'X-Name: value'   ('-': read it from stdin)\n"
         "  endpoint clear-required-header NAME\n"
         "      A header every delivery must carry (merchantWebHookAdditionalHeaderDetails);\n"
         "      without it, or with another value: 401.\n"
         "DURATION: 90s, 15m, 24h, 7d, 2w, or 0.\n";
}

int run_endpoint_command(const Settings& settings, const std::vector<std::string>& args) {
  auto parsed = parse_endpoint_args(args);
  if (!parsed) {
    std::cerr << "ipayout-webhookd: " << parsed.error().message << "\n\n" << endpoint_usage();
    return 2;
  }
  const Flags& f = *parsed;
  const std::string& verb = f.verb;
  try {
    pqxx::connection conn(settings.database);
    if (verb == "add") return endpoint_add(conn, f);
    if (verb == "list") return endpoint_list(conn);
    if (verb == "disable" || verb == "enable") {
      return endpoint_update(conn, f.positional[0], "enabled = ($2 = 'enable')", verb, verb + "d");
    }
    if (verb == "set-key") return endpoint_set_key(conn, f);
    if (verb == "set-response") return endpoint_set_response(conn, f);
    if (verb == "set-required-header") return endpoint_set_required_header(conn, f);
    if (verb == "clear-required-header") {
      return endpoint_update(conn, f.positional[0],
                             "required_header_name = NULLIF($2, ''), "
                             "required_header_value = NULLIF($2, '')",
                             "", "no header required any more");
    }
    if (verb == "set-policy") {
      if (!parse_policy(f.positional[1])) return fail("policy must be required, record or off");
      return endpoint_update(conn, f.positional[0], "signature_policy = $2", f.positional[1],
                             "policy set to " + f.positional[1]);
    }
    if (verb == "rotate-token") return endpoint_rotate_token(conn, f);
    std::cerr << endpoint_usage();
    return 2;
  } catch (const pqxx::unique_violation&) {
    return fail("an endpoint with that name already exists");
  } catch (const pqxx::check_violation& e) {
    return fail(std::string("invalid endpoint: ") + e.what());
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

int run_migrate(const Settings& settings) {
  try {
    pqxx::connection conn(settings.database);
    {
      pqxx::nontransaction tx(conn);
      // Session-level lock: two migrate runs at once (two hosts deploying) must
      // not interleave. Released when the connection closes.
      tx.exec("SELECT pg_advisory_lock(hashtext('ipayout-webhook migrate'))");
      tx.exec(
          "CREATE SCHEMA IF NOT EXISTS ipayout; "
          "CREATE TABLE IF NOT EXISTS ipayout.schema_migrations ("
          "  version integer PRIMARY KEY, name text NOT NULL,"
          "  applied_at timestamptz NOT NULL DEFAULT now())");
    }
    int applied = 0;
    for (const Migration& m : migrations()) {
      pqxx::work tx(conn, "migrate");
      if (!tx.exec_params("SELECT 1 FROM ipayout.schema_migrations WHERE version = $1", m.version)
               .empty()) {
        continue;
      }
      tx.exec(m.sql);
      tx.exec_params("INSERT INTO ipayout.schema_migrations (version, name) VALUES ($1, $2)",
                     m.version, m.name);
      tx.commit();
      std::cerr << "applied " << m.name << "\n";
      ++applied;
    }
    std::cerr << "database is at migration " << migrations().back().version << " (" << applied
              << " applied now)\n";
    return 0;
  } catch (const std::exception& e) {
    return fail(std::string("migrate: ") + e.what());
  }
}

}  // namespace ipayout
