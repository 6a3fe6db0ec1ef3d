// The feed through the SQL API (sql/002_consumers.sql): positions, reading,
// consumers. Every function is one statement in its own transaction, so none
// holds a transaction id open while lines are being written: an open one would
// hold back the readable horizon of every reader of the database.
#pragma once

#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

namespace ipayout::events {

// A place in feed order (txid, id); reading "after" it never skips an event.
struct Position {
  std::string txid;  // xid8 as text: 64 bits, kept exactly as PostgreSQL prints it
  long long id = 0;
};

struct EventLine {
  Position position;  // of this event
  long long id = 0;
  std::string json;  // built by PostgreSQL (to_json), so escaping is its
};

// Where a stateless reader starts: 'beginning', 'end' (absent = 'end': events
// not yet readable), or a timestamp (the first event received at or after it).
Position start_position(pqxx::connection_base& conn, const std::optional<std::string>& since);

std::vector<EventLine> read_after(pqxx::connection_base& conn, const Position& after, int max,
                                  const std::string& pattern);

// Consumer side. poll does not move the position; ack does.
struct Subscription {
  bool created = false;
  std::string pattern;  // the consumer's stored pattern (it wins over --event)
};
Subscription subscribe(pqxx::connection_base& conn, const std::string& consumer,
                       const std::optional<std::string>& since,
                       const std::optional<std::string>& pattern);
std::vector<EventLine> poll(pqxx::connection_base& conn, const std::string& consumer, int max);
void ack(pqxx::connection_base& conn, const std::string& consumer, long long event_id);

}  // namespace ipayout::events
