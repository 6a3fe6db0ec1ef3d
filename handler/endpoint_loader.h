// Keeps the process's EndpointCache fresh, on its own timer (a thread of its
// own, every endpoint_refresh_ms, at once on SIGHUP) instead of in front of a
// batch: the writer never waits for a reload it did not need. It also loads
// on every new database connection (DbSession's hook) and, while the database
// is away, keeps trying to reconnect, so health recovers without traffic.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "db_session.h"
#include "endpoints.h"
#include "settings.h"

namespace ipayout {

class EndpointLoader {
 public:
  EndpointLoader(SettingsStore& settings, DbSession& session, EndpointCache& endpoints);
  ~EndpointLoader();
  EndpointLoader(const EndpointLoader&) = delete;
  EndpointLoader& operator=(const EndpointLoader&) = delete;

  void start();
  void stop();
  // Reload at once (SIGHUP), without waiting for the next tick.
  void refresh_soon();

  // Loads the endpoints if they changed (always when `force`). Throws
  // pqxx::broken_connection; logs and keeps the current snapshot on other errors.
  void load(pqxx::connection& conn, bool force);

 private:
  void run();

  SettingsStore& settings_;
  DbSession& session_;
  EndpointCache& endpoints_;
  std::string version_;  // of the loaded snapshot; guarded by the session's lease

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool forced_ = false;
  std::thread thread_;
};

}  // namespace ipayout
