// Connecting: which database, under which name, and telling a lost connection
// (reconnect) from an error in what we asked (report and stop).
#pragma once

#include <exception>
#include <memory>
#include <pqxx/pqxx>
#include <string>

#include "options.h"

namespace ipayout::events {

// --database, else $IPAYOUT_DATABASE, else "" (libpq's PG* variables decide).
std::string conninfo(const Options& o);

// Opens a connection named "ipayout-events" in pg_stat_activity (unless the
// conninfo or PGAPPNAME names it otherwise). Throws pqxx::broken_connection.
std::unique_ptr<pqxx::connection> connect(const std::string& conninfo);

// True if `e` means the connection is gone (server restart, pg_terminate_backend,
// network): the caller reconnects. False for errors in the request itself.
bool connection_lost(const std::exception& e, const pqxx::connection_base* conn);

// The SQLSTATE of a server error, or "" for errors that are not one.
std::string sqlstate(const std::exception& e);

// The first line of an error's text (PostgreSQL's CONTEXT lines and libpq's
// trailing newlines are noise on a terminal).
std::string error_text(const std::exception& e);

}  // namespace ipayout::events
