#include "commands.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "database.h"
#include "feed.h"

namespace ipayout::events {
namespace {

int usage(const std::string& message) {
  std::cerr << "ipayout-events: " << message << "\n";
  return 2;
}

// Connects, runs `body`, and turns any database error into a message and exit 1.
int with_connection(const Options& o, const std::function<int(pqxx::connection&)>& body) {
  try {
    auto conn = connect(conninfo(o));
    return body(*conn);
  } catch (const std::exception& e) {
    std::cerr << "ipayout-events: " << error_text(e) << "\n";
    return 1;
  }
}

// Left-aligned columns, two spaces apart, for a human at a terminal.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

std::string replay_note(const std::string& since) {
  if (since == "-infinity") return "will read from the oldest event on";
  if (since == "infinity") return "will read only events that arrive from now on";
  return "will read from the first event received at or after " + since + " on";
}

}  // namespace

int run_consumers(const Options& o) {
  return with_connection(o, [](pqxx::connection& conn) {
    pqxx::nontransaction tx(conn);
    // lag: age of the oldest event not acked yet, to the second.
    auto r = tx.exec(
        "SELECT consumer, event_pattern, position_id::text, pending::text, "
        "coalesce(date_trunc('second', lag)::text, '-'), "
        "coalesce(to_char(acked_at, 'YYYY-MM-DD HH24:MI:SSOF'), '-') "
        "FROM ipayout.consumer_status()");
    std::vector<std::vector<std::string>> rows{
        {"CONSUMER", "PATTERN", "POSITION", "PENDING", "LAG", "LAST ACK"}};
    for (const auto& row : r) {
      std::vector<std::string> cells;
      for (const auto& field : row) cells.push_back(field.as<std::string>());
      rows.push_back(std::move(cells));
    }
    print_table(rows);
    return 0;
  });
}

int run_replay(const Options& o) {
  if (!o.consumer) return usage("replay needs --consumer NAME");
  if (o.from_id.has_value() == o.since.has_value()) {
    return usage("replay needs exactly one of --from-id ID and --since T");
  }
  // 'beginning' and 'end' as the timestamps before and after every event.
  std::string since = o.since.value_or("");
  if (since == "beginning") since = "-infinity";
  if (since == "end") since = "infinity";
  return with_connection(o, [&o, &since](pqxx::connection& conn) {
    pqxx::nontransaction tx(conn);
    if (o.from_id) {
      tx.exec_params("SELECT ipayout.seek($1, $2::bigint)", *o.consumer, *o.from_id);
      std::cout << "consumer '" << *o.consumer << "' will read from event " << *o.from_id
                << " on\n";
    } else {
      tx.exec_params("SELECT ipayout.seek($1, $2::timestamptz)", *o.consumer, since);
      std::cout << "consumer '" << *o.consumer << "' " << replay_note(since) << "\n";
    }
    return 0;
  });
}

int run_subscribe(const Options& o) {
  if (o.positional.size() != 1) return usage("usage: subscribe NAME [--since T] [--event PATTERN]");
  const std::string& name = o.positional[0];
  return with_connection(o, [&](pqxx::connection& conn) {
    Subscription s = subscribe(conn, name, o.since, o.event_pattern);
    if (s.created) {
      std::cout << "consumer '" << name << "' created (pattern '" << s.pattern << "')\n";
    } else {
      std::cout << "consumer '" << name << "' exists already (pattern '" << s.pattern
                << "'), left as it is\n";
    }
    return 0;
  });
}

int run_unsubscribe(const Options& o) {
  if (o.positional.size() != 1) return usage("usage: unsubscribe NAME");
  const std::string& name = o.positional[0];
  return with_connection(o, [&](pqxx::connection& conn) {
    pqxx::nontransaction tx(conn);
    if (!tx.exec_params("SELECT ipayout.unsubscribe($1)", name)[0][0].as<bool>()) {
      std::cerr << "ipayout-events: no consumer named '" << name << "'\n";
      return 1;
    }
    std::cout << "consumer '" << name << "' removed\n";
    return 0;
  });
}

int run_purge(const Options& o) {
  if (!o.older_than) return usage("purge needs --older-than AGE (e.g. 30d or '30 days')");
  return with_connection(o, [&o](pqxx::connection& conn) {
    // One short transaction per batch (nontransaction: each statement commits
    // by itself), so readers never wait long behind the purge's own txid.
    constexpr long long kBatch = 10000;
    pqxx::nontransaction tx(conn);
    // A time in the future (a typo in the year) or a negative age would purge
    // every event: refused, by the database's clock.
    const char* check = o.older_than_is_time ? "SELECT $1::timestamptz > now()"
                                             : "SELECT $1::interval < interval '0'";
    if (tx.exec_params1(check, o.older_than_sql)[0].as<bool>()) {
      return usage("--older-than '" + *o.older_than + "' " +
                   (o.older_than_is_time ? "is in the future" : "is negative") +
                   ": that would purge every event; nothing purged");
    }
    long long n = 0;
    for (;;) {
      // A timestamp: older than it is "received more than now() - T ago".
      const char* sql = o.older_than_is_time
                            ? "SELECT ipayout.purge(now() - $1::timestamptz, $2, $3)"
                            : "SELECT ipayout.purge($1::interval, $2, $3)";
      auto got = tx.exec_params(sql, o.older_than_sql, o.force, kBatch)[0][0].as<long long>();
      n += got;
      if (got < kBatch) break;
    }
    std::cout << "purged " << n << " event" << (n == 1 ? "" : "s") << " older than "
              << *o.older_than << (o.force ? " (forced)" : "") << "\n";
    return 0;
  });
}

}  // namespace ipayout::events
