// The per-process writer: request threads hand it events, it commits everything
// waiting in one transaction (group commit: one fsync for many events) and then
// tells each request its own outcome. It owns the process's only database
// connection, reconnects by itself, and keeps the endpoint cache fresh.
//
// Invariant: a request is told kAccepted or kDuplicate only after COMMIT returned.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "endpoints.h"
#include "settings.h"

#include <pqxx/connection>

namespace ipayout {

struct EventRecord {
  int64_t endpoint_id = 0;
  std::string event;
  std::string dedup_key;
  std::string body;  // raw bytes, valid UTF-8 without NUL (checked by EventParser)
  bool jsonb_compatible = true;
  std::string headers_json;         // a JSON object built by us
  const char* signature = nullptr;  // verdict, to_string(SignatureVerdict): static text
  std::string remote_addr;          // "" = unknown
};

enum class StoreOutcome {
  kAccepted,     // inserted by this commit
  kDuplicate,    // an event with this dedup key was already stored
  kUnavailable,  // not committed (database down, queue full, timeout): 503, retry
  kRejected,     // PostgreSQL refused the data itself; retrying cannot help
};

struct StoreResult {
  StoreOutcome outcome = StoreOutcome::kUnavailable;
  int64_t id = 0;
  std::string detail;  // why, for the log and the error body; never request data
};

class Writer {
 public:
  Writer(SettingsStore& settings, EndpointCache& endpoints);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void start();
  // Commits what is already queued, then stops. Called after request threads ended.
  void stop();

  // Blocks until the event is committed, refused, or request_timeout_ms passed.
  StoreResult store(EventRecord record);

  // Connected and endpoints loaded: what the health endpoint reports.
  bool healthy() const { return healthy_.load(); }
  // Reload endpoints at the next opportunity (SIGHUP).
  void refresh_soon();

 private:
  struct Item {
    EventRecord record;
    std::promise<StoreResult> done;
    std::chrono::steady_clock::time_point queued;
  };
  using Batch = std::vector<std::unique_ptr<Item>>;

  void run();
  bool ensure_connected();
  void disconnect(const std::string& why);
  void refresh_endpoints(bool force);
  void commit(Batch& batch);
  bool try_commit(Batch& batch, const std::vector<size_t>& leaders,
                  std::vector<StoreResult>& results, std::string& error_state);
  void fail(Batch& batch, StoreOutcome outcome, const std::string& detail);

  SettingsStore& settings_;
  EndpointCache& endpoints_;
  std::atomic<bool> healthy_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Item>> queue_;
  bool stopping_ = false;
  bool force_refresh_ = false;

  std::thread thread_;
  // The concrete type: libpqxx 6.4's connection_base has no virtual
  // destructor, so deleting through it would never close the connection.
  std::unique_ptr<pqxx::connection> conn_;  // only touched by the writer thread
  std::chrono::steady_clock::time_point next_connect_{};
  std::chrono::steady_clock::time_point next_refresh_{};
  std::chrono::steady_clock::time_point last_connect_warning_{};
  std::string endpoints_version_;
};

}  // namespace ipayout
