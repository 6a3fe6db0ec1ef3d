#include "db_session.h"

#include <spdlog/spdlog.h>

#include <pqxx/pqxx>

#include "metrics.h"
#include "readiness.h"

namespace ipayout {

DbSession::DbSession(SettingsStore& settings) : settings_(settings) {}

DbSession::~DbSession() {
  close("shutting down");
}

DbSession::Lease DbSession::acquire() {
  Lease lease(this);
  ensure_connected();
  return lease;
}

void DbSession::close(const std::string& why) {
  std::lock_guard<std::mutex> lk(mu_);
  if (conn_) disconnect(why);
}

bool DbSession::ensure_connected() {
  if (conn_ && conn_->is_open()) return true;
  if (conn_) disconnect("connection lost");
  const auto now = Clock::now();
  if (now < next_attempt()) return false;
  const auto settings = settings_.get();
  next_attempt_.store(
      (now + std::chrono::milliseconds(settings->reconnect_ms)).time_since_epoch().count());
  try {
    auto c = std::make_unique<pqxx::connection>(settings->database);
    // Named, so operators and fault tests find the writers in pg_stat_activity.
    c->set_variable("application_name", "'ipayout-webhookd'");
    conn_ = std::move(c);
    connected_.store(true);
    metrics::count_reconnect();
    metrics::set_db_connected(true);
    spdlog::info("msg=\"database connected\"");
  } catch (const std::exception& e) {
    conn_.reset();
    // One warning per 30 s while the outage lasts, not one per attempt.
    if (now - last_warning_ > std::chrono::seconds(30)) {
      last_warning_ = now;
      std::string why = e.what();
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      for (auto& ch : why) {
        if (ch == '\n' || ch == '"') ch = ' ';
      }
      spdlog::warn("msg=\"database unavailable, answering 503\" error=\"{}\"", why);
    }
    return false;
  }
  if (on_connect_) {
    try {
      on_connect_(*conn_);
    } catch (const pqxx::broken_connection&) {
      disconnect("connection lost while loading endpoints");
      return false;
    }
  }
  readiness::report();
  return true;
}

void DbSession::disconnect(const std::string& why) {
  spdlog::info("msg=\"database disconnected\" reason=\"{}\"", why);
  connected_.store(false);
  metrics::set_db_connected(false);
  try {
    conn_.reset();
  } catch (...) {
  }
  next_attempt_.store(Clock::now().time_since_epoch().count());
}

}  // namespace ipayout
