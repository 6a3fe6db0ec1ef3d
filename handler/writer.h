// The per-process writer: request threads hand it events, it commits everything
// waiting in one transaction (group commit: one fsync for many events) and then
// tells each request its own outcome. The connection is the process's
// DbSession (db_session.h); the endpoints are kept fresh by EndpointLoader.
//
// Invariant: a request is told kAccepted or kDuplicate only after COMMIT returned.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "completion.h"
#include "db_session.h"
#include "settings.h"
#include "signature.h"

namespace ipayout {

struct EventRecord {
  int64_t endpoint_id = 0;
  std::string event;
  std::string dedup_key;
  std::string body;  // raw bytes, valid UTF-8 without NUL (checked by EventParser)
  bool jsonb_compatible = true;
  std::string headers_json;                                    // a JSON object built by us
  SignatureVerdict signature = SignatureVerdict::kNotChecked;  // stored as to_string()
  std::string remote_addr;                                     // "" = unknown
};

enum class StoreOutcome {
  kAccepted,     // inserted by this commit
  kDuplicate,    // an event with this dedup key was already stored
  kUnavailable,  // not committed (database down, queue full, timeout): 503, retry
  kRejected,     // PostgreSQL refused the data itself; retrying cannot help
};

// Why an event was not stored (kUnavailable, kRejected): for the log line.
enum class StoreFailure {
  kNone,
  kShuttingDown,
  kQueueFull,
  kTimedOut,             // the request's wait for its commit ended first
  kDatabaseUnavailable,  // no connection, or it broke before COMMIT
  kOutcomeUnknown,       // the connection broke during COMMIT
  kDataRefused,          // PostgreSQL refused this event's data (kRejected)
  kVanished,             // the row was gone between insert and lookup (retention)
};
// The words the log line shows; one table for every kind.
const char* describe(StoreFailure f);

struct StoreResult {
  StoreOutcome outcome = StoreOutcome::kUnavailable;
  int64_t id = 0;
  StoreFailure failure = StoreFailure::kNone;
};

class Writer {
 public:
  Writer(SettingsStore& settings, DbSession& session);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void start();
  // Commits what is already queued, then stops. Called after request threads ended.
  void stop();

  // Blocks until the event is committed, refused, or request_timeout_ms passed.
  StoreResult store(EventRecord record);

 private:
  // Shared by the request thread and the writer: a request that timed out
  // drops its share, and the writer may still finish the item later.
  struct Item {
    EventRecord record;
    Completion<StoreResult> done;
    std::chrono::steady_clock::time_point queued;
  };
  using Batch = std::vector<std::shared_ptr<Item>>;

  // How a transaction failed, and so what may be done about it.
  enum class CommitFailure {
    kNotSent,  // connection found lost before the batch was sent: retry is safe
    kInDoubt,  // connection lost after it was sent: the commit may or may not have happened
    kData,     // PostgreSQL refused the data (SQLSTATE class 22)
    kOther,
  };

  void run();
  void take_batch(Batch& batch);
  void commit(DbSession::Lease& lease, Batch& batch);
  bool try_commit(DbSession::Lease& lease, Batch& batch, const std::vector<size_t>& idx,
                  std::vector<StoreResult>& results, CommitFailure& failure);
  static void fail(Batch& batch, StoreOutcome outcome, StoreFailure why);

  SettingsStore& settings_;
  DbSession& session_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Item>> queue_;
  bool stopping_ = false;

  std::thread thread_;
};

}  // namespace ipayout
