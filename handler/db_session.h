// The process's one database session, shared by the writer (group commits) and
// the endpoint loader: connect, reconnect after a pause, report readiness and
// connection health. One session per worker process, so behind PgBouncer a
// worker is one client.
//
// libpq connections are not for two threads at once: every use goes through a
// Lease, which holds the session's lock for as long as it lives.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "settings.h"

#include <pqxx/connection>

namespace ipayout {

class DbSession {
 public:
  using Clock = std::chrono::steady_clock;
  // Runs on each new connection before anyone else uses it (and before
  // readiness is reported): the endpoint loader loads the endpoints there, so
  // a worker is ready only once it can tell a real token from a wrong one.
  // May throw pqxx::broken_connection; the connection is then dropped.
  using OnConnect = std::function<void(pqxx::connection&)>;

  explicit DbSession(SettingsStore& settings);
  ~DbSession();
  DbSession(const DbSession&) = delete;
  DbSession& operator=(const DbSession&) = delete;

  void on_connect(OnConnect hook) { on_connect_ = std::move(hook); }

  class Lease {
   public:
    // The open connection, or nullptr: none, and the pause after the last
    // attempt has not passed yet (or the attempt failed).
    pqxx::connection* conn() const { return s_->conn_.get(); }
    explicit operator bool() const { return conn() != nullptr; }
    // The connection broke: drop it; the next connect() may try at once.
    void lost(const std::string& why) { s_->disconnect(why); }
    // Connects if there is no connection and the pause allows. True if open.
    bool connect() { return s_->ensure_connected(); }

   private:
    friend class DbSession;
    explicit Lease(DbSession* s) : lk_(s->mu_), s_(s) {}
    std::unique_lock<std::mutex> lk_;
    DbSession* s_;
  };

  // Waits for the lock, then connects if needed and allowed.
  Lease acquire();

  // Has a connection (as far as its last use showed). For /ipayout/health.
  bool connected() const { return connected_.load(); }
  // When the next connection attempt is allowed.
  Clock::time_point next_attempt() const {
    return Clock::time_point(Clock::duration(next_attempt_.load()));
  }

  void close(const std::string& why);

 private:
  bool ensure_connected();  // with mu_ held
  void disconnect(const std::string& why);

  SettingsStore& settings_;
  OnConnect on_connect_;
  std::mutex mu_;
  // The concrete type: libpqxx 6.4's connection_base has no virtual
  // destructor, so deleting through it would never close the connection.
  std::unique_ptr<pqxx::connection> conn_;
  std::atomic<bool> connected_{false};
  std::atomic<Clock::rep> next_attempt_{0};
  Clock::time_point last_warning_{};
};

}  // namespace ipayout
