#include "feed.h"

namespace ipayout::events {
namespace {

// One compact JSON object per event, keys in a fixed order; to_json() quotes and
// escapes every string, and the payload is jsonb's own text (or null).
// Endpoint names are readable by ipayout_reader.
const char* const kLineSelect =
    "SELECT e.txid::text, e.id, format("
    "'{\"id\":%s,\"event\":%s,\"endpoint\":%s,\"received_at\":%s,\"dedup_key\":%s,"
    "\"signature\":%s,\"payload\":%s}', e.id, to_json(e.event), to_json(ep.name), "
    "to_json(e.received_at), to_json(e.dedup_key), to_json(e.signature), "
    "coalesce(e.payload::text, 'null')) ";
// The ORDER BY restores feed order, which the join does not promise to keep.
const char* const kLineJoin =
    " e JOIN ipayout.endpoints ep ON ep.id = e.endpoint_id ORDER BY e.txid, e.id";

std::vector<EventLine> to_lines(const pqxx::result& r) {
  std::vector<EventLine> lines;
  lines.reserve(r.size());
  for (const auto& row : r) {
    EventLine l;
    l.position.txid = row[0].as<std::string>();
    l.id = row[1].as<long long>();
    l.position.id = l.id;
    l.json = row[2].as<std::string>();
    lines.push_back(std::move(l));
  }
  return lines;
}

}  // namespace

Position start_position(pqxx::connection_base& conn, const std::optional<std::string>& since) {
  pqxx::nontransaction tx(conn);
  if (since && *since == "beginning") return Position{"0", 0};
  if (since && *since != "end") {
    // As ipayout.subscribe does: just before the first event (in feed order)
    // received at or after the time; nothing that recent means the end.
    auto r = tx.exec_params(
        "SELECT e.txid::text, e.id - 1 FROM ipayout.events e "
        "WHERE e.received_at >= $1::timestamptz ORDER BY e.txid, e.id LIMIT 1",
        *since);
    if (!r.empty()) return Position{r[0][0].as<std::string>(), r[0][1].as<long long>()};
  }
  return Position{tx.exec("SELECT ipayout.feed_horizon()::text")[0][0].as<std::string>(), 0};
}

std::vector<EventLine> read_after(pqxx::connection_base& conn, const Position& after, int max,
                                  const std::string& pattern) {
  pqxx::nontransaction tx(conn);
  return to_lines(tx.exec_params(
      std::string(kLineSelect) + "FROM ipayout.read_after($1::xid8, $2, $3, $4)" + kLineJoin,
      after.txid, after.id, max, pattern));
}

Subscription subscribe(pqxx::connection_base& conn, const std::string& consumer,
                       const std::optional<std::string>& since,
                       const std::optional<std::string>& pattern) {
  pqxx::nontransaction tx(conn);
  Subscription s;
  s.created = tx.exec_params("SELECT ipayout.subscribe($1, $2, $3)", consumer,
                             since.value_or("end"), pattern.value_or("%"))[0][0]
                  .as<bool>();
  s.pattern =
      tx.exec_params("SELECT event_pattern FROM ipayout.consumers WHERE name = $1", consumer)[0][0]
          .as<std::string>();
  return s;
}

std::vector<EventLine> poll(pqxx::connection_base& conn, const std::string& consumer, int max) {
  pqxx::nontransaction tx(conn);
  return to_lines(tx.exec_params(std::string(kLineSelect) + "FROM ipayout.poll($1, $2)" + kLineJoin,
                                 consumer, max));
}

void ack(pqxx::connection_base& conn, const std::string& consumer, long long event_id) {
  pqxx::nontransaction tx(conn);
  tx.exec_params("SELECT ipayout.ack($1, $2)", consumer, event_id);
}

}  // namespace ipayout::events
