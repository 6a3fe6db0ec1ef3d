#include "database.h"

#include <cstdlib>

namespace ipayout::events {

std::string conninfo(const Options& o) {
  if (o.database) return *o.database;
  if (const char* env = std::getenv("IPAYOUT_DATABASE")) return env;
  return "";
}

std::unique_ptr<pqxx::connection> connect(const std::string& conninfo) {
  // Defaults through libpq's own variables, so that anything the user put in
  // the conninfo string (URI or key=value) or the environment still wins:
  // operators find us by name, and a dead host fails an attempt instead of
  // hanging the reconnect loop.
  setenv("PGAPPNAME", "ipayout-events", 0);
  setenv("PGCONNECT_TIMEOUT", "10", 0);
  return std::make_unique<pqxx::connection>(conninfo);
}

std::string sqlstate(const std::exception& e) {
  if (auto* s = dynamic_cast<const pqxx::sql_error*>(&e)) return s->sqlstate();
  return "";
}

std::string error_text(const std::exception& e) {
  std::string s = e.what();
  s = s.substr(0, s.find('\n'));
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

bool connection_lost(const std::exception& e, const pqxx::connection_base* conn) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) return true;
  // The commit of an ack may or may not have happened; the caller acks again.
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) return true;
  std::string state = sqlstate(e);
  // 08: connection exception; 57P01..57P05: admin/crash shutdown, cannot connect
  // now, idle session timeout.
  if (state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0) return true;
  return conn != nullptr && !conn->is_open();
}

}  // namespace ipayout::events
