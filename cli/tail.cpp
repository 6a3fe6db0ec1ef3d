#include "tail.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <pqxx/pqxx>

#include "database.h"
#include "feed.h"
#include "output.h"
#include "stop.h"

namespace ipayout::events {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kBatch = 100;
constexpr milliseconds kBackoffMin{250};
constexpr milliseconds kBackoffMax{5000};

// Counts wake-ups; the payload is not used: whatever it says, the next read of
// the feed sees it (and everything else that became readable).
class Wakeup final : public pqxx::notification_receiver {
 public:
  explicit Wakeup(pqxx::connection_base& c) : pqxx::notification_receiver(c, "ipayout_events") {}
  void operator()(const std::string&, int) override {}
};

// One connection with LISTEN in place before the first read: an event committed
// after that read wakes us, so catching up after connecting misses nothing.
class Session {
 public:
  explicit Session(const std::string& conninfo) : conn_(connect(conninfo)), wakeup_(*conn_) {}
  // Closed before the receiver goes, so that it does not try (and, with the
  // connection lost, reconnect) to UNLISTEN.
  ~Session() { conn_->disconnect(); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  pqxx::connection& conn() { return *conn_; }

 private:
  std::unique_ptr<pqxx::connection> conn_;
  Wakeup wakeup_;
};

enum class Step {
  kCaughtUp,      // printed everything readable now
  kStopped,       // SIGINT/SIGTERM
  kDone,          // --max lines printed
  kOutputClosed,  // stdout's reader went away
  kOutputFailed,
};

class Tail {
 public:
  explicit Tail(const Options& o) : o_(o) {}

  // Prints what is readable now, in batches. For a consumer, each batch is
  // acked once its lines are written: a crash before the ack prints them again
  // on restart (at-least-once), an ack is never ahead of the output.
  Step catch_up(pqxx::connection_base& conn) {
    prepare(conn);
    while (true) {
      if (stop_requested()) return Step::kStopped;
      int want = kBatch;
      if (o_.max_events) {
        long long left = *o_.max_events - printed_;
        if (left <= 0) return Step::kDone;
        want = static_cast<int>(std::min<long long>(want, left));
      }
      std::vector<EventLine> lines = o_.consumer ? poll(conn, *o_.consumer, want)
                                                 : read_after(conn, *position_, want, pattern_);
      WriteStatus status = WriteStatus::kOk;
      std::optional<long long> last_written;
      for (const EventLine& line : lines) {
        status = write_line(line.json);
        if (status != WriteStatus::kOk) break;
        ++printed_;
        last_written = line.id;
        position_ = line.position;
      }
      if (o_.consumer && last_written) {
        // If the connection drops during the ack, whether it committed is
        // unknown: the next session acks again (ack is idempotent) rather than
        // print these lines a second time.
        unacked_ = last_written;
        ack(conn, *o_.consumer, *last_written);
        unacked_.reset();
      }
      if (status == WriteStatus::kClosed) return Step::kOutputClosed;
      if (status == WriteStatus::kFailed) return Step::kOutputFailed;
      if (o_.max_events && printed_ >= *o_.max_events) return Step::kDone;
      if (static_cast<int>(lines.size()) < want) return Step::kCaughtUp;
    }
  }

 private:
  // Once per process: where to start. After a reconnect: settle an ack in doubt.
  void prepare(pqxx::connection_base& conn) {
    if (!o_.consumer) {
      if (!position_) position_ = start_position(conn, o_.since);
      pattern_ = o_.event_pattern.value_or("%");
      return;
    }
    if (!subscribed_) {
      Subscription s = subscribe(conn, *o_.consumer, o_.since, o_.event_pattern);
      if (!s.created && o_.event_pattern && *o_.event_pattern != s.pattern) {
        std::fprintf(stderr,
                     "ipayout-events: consumer '%s' exists with pattern '%s'; --event ignored "
                     "(unsubscribe and subscribe again to change it)\n",
                     o_.consumer->c_str(), s.pattern.c_str());
      }
      if (!s.created && o_.since) {
        std::fprintf(stderr,
                     "ipayout-events: consumer '%s' exists; --since ignored (move it with "
                     "`ipayout-events replay`)\n",
                     o_.consumer->c_str());
      }
      subscribed_ = true;
    }
    if (unacked_) {
      try {
        ack(conn, *o_.consumer, *unacked_);
      } catch (const pqxx::sql_error& e) {
        // Purged meanwhile (purge --force): nothing left to move past.
        if (e.sqlstate() != "P0002") throw;
      }
      unacked_.reset();
    }
  }

  const Options& o_;
  std::string pattern_ = "%";
  std::optional<Position> position_;  // stateless: the last event printed, or the start
  bool subscribed_ = false;
  std::optional<long long> unacked_;
  long long printed_ = 0;
};

int exit_code(Step step) {
  if (step == Step::kOutputFailed) {
    std::fprintf(stderr, "ipayout-events: writing to stdout: %s\n", last_write_error().c_str());
    return 1;
  }
  return 0;
}

bool finished(Step step, bool follow) {
  return step != Step::kCaughtUp || !follow;
}

}  // namespace

int run_tail(const Options& o) {
  install_stop_handlers();
  const std::string info = conninfo(o);
  Tail tail(o);
  milliseconds backoff = kBackoffMin;
  bool reconnecting = false;

  while (!stop_requested()) {
    std::unique_ptr<Session> session;
    try {
      session = std::make_unique<Session>(info);
      Step step = tail.catch_up(session->conn());
      if (reconnecting) std::fprintf(stderr, "ipayout-events: reconnected\n");
      reconnecting = false;
      backoff = kBackoffMin;
      if (finished(step, o.follow)) return exit_code(step);

      // Notifications are only wake-ups. Events can become readable without one:
      // the horizon moves when any old transaction ends, and the NOTIFY of an
      // event committed behind that transaction was spent while it was not yet
      // readable. So read again every poll_interval even when nothing woke us.
      const milliseconds repoll{o.poll_interval_ms};
      auto next_read = Clock::now() + repoll;
      while (!stop_requested()) {
        auto wait = std::chrono::duration_cast<std::chrono::microseconds>(next_read - Clock::now());
        long long us = std::max<long long>(wait.count(), 0);
        // Returns early on a notification, on a signal (no SA_RESTART), or when
        // the connection breaks (then it throws).
        int notified = session->conn().await_notification(us / 1000000, us % 1000000);
        if (notified > 0 || Clock::now() >= next_read) {
          step = tail.catch_up(session->conn());
          if (finished(step, o.follow)) return exit_code(step);
          next_read = Clock::now() + repoll;
        }
      }
    } catch (const std::exception& e) {
      const pqxx::connection_base* conn = session ? &session->conn() : nullptr;
      if (!o.follow || !connection_lost(e, conn)) {
        std::fprintf(stderr, "ipayout-events: %s\n", error_text(e).c_str());
        return 1;
      }
      std::fprintf(stderr, "ipayout-events: connection lost (%s); reconnecting in %lld ms\n",
                   error_text(e).c_str(), static_cast<long long>(backoff.count()));
      session.reset();
      reconnecting = true;
      sleep_unless_stopped(backoff);
      backoff = std::min(backoff * 2, kBackoffMax);
    }
  }
  return 0;
}

}  // namespace ipayout::events
