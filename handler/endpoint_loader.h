// Keeps the process's EndpointCache fresh, on its own timer (a thread of its
// own, every endpoint_refresh_ms, at once on SIGHUP) instead of in front of a
// batch: the writer never waits for a reload it did not need. It also loads
// on every new database connection (DbSession's hook) and, while the database
// is away, keeps trying to reconnect, so health recovers without traffic.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <pqxx/transaction_base>

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

  // Loads the endpoints if they changed: only the rows that changed when it
  // can be sure of them, all of them when `force`, on the first load, and
  // whenever it cannot. Throws pqxx::broken_connection; logs and keeps the
  // current snapshot on other errors.
  void load(pqxx::connection& conn, bool force);

 private:
  // What the snapshot was made from, per row of the table (enabled or not).
  struct Seen {
    int64_t updated_at_us;
    bool enabled;
    uint8_t shards = 0;  // how many of shard[] its entries are in (EndpointMap::shard_of)
    uint8_t shard[2] = {0, 0};
  };

  void run();
  void load_all(pqxx::transaction_base& tx);
  // false: it cannot be sure of the change; the caller loads everything.
  bool load_changes(pqxx::transaction_base& tx, int64_t count);
  // Remembers a row as loaded, with the shards of its entries.
  void record(const EndpointEntries& row, int64_t updated_at_us, bool enabled);
  // The shards that hold the entries of `id` in the snapshot.
  std::vector<size_t> shards_of(int64_t id) const;

  SettingsStore& settings_;
  DbSession& session_;
  EndpointCache& endpoints_;
  // Guarded by the session's lease, as load() is.
  std::string version_;     // of the loaded snapshot
  bool have_rows_ = false;  // seen_ describes the snapshot: a change can be loaded alone
  std::unordered_map<int64_t, Seen> seen_;
  size_t enabled_ = 0;     // rows of seen_ that are enabled
  int64_t newest_us_ = 0;  // newest updated_at loaded, unix microseconds

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool forced_ = false;
  std::thread thread_;
};

}  // namespace ipayout
