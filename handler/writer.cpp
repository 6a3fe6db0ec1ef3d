#include "writer.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <pqxx/pqxx>
#include <unordered_map>

#include "metrics.h"

namespace ipayout {
namespace {

using Clock = std::chrono::steady_clock;

// Builds a PostgreSQL array literal. Quoting every element (and escaping only
// '"' and '\\') is valid for every element type and avoids all special cases.
class ArrayLiteral {
 public:
  void add(std::string_view v) {
    out_.reserve(out_.size() + v.size() + 3);
    if (out_.size() > 1) out_.push_back(',');
    out_.push_back('"');
    // Copy the runs between characters that need a backslash, not byte by byte.
    size_t from = 0;
    for (size_t i = v.find_first_of("\"\\"); i != std::string_view::npos;
         i = v.find_first_of("\"\\", i + 1)) {
      out_.append(v.data() + from, i - from);
      out_.push_back('\\');
      from = i;
    }
    out_.append(v.data() + from, v.size() - from);
    out_.push_back('"');
  }
  void add_null() {
    if (out_.size() > 1) out_.push_back(',');
    out_ += "NULL";
  }
  std::string finish() {
    out_.push_back('}');
    return std::move(out_);
  }

 private:
  std::string out_ = "{";
};

// True if the idle session has nothing to read. A backend terminated while
// idle (pg_terminate_backend, a restart) has left its error and the end of the
// stream on the socket. Sending the batch on it would make its outcome
// unknown; found now, nothing has been sent and a new connection is safe.
bool idle_session_alive(pqxx::connection& conn) {
  char c;
  ssize_t n = recv(conn.sock(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// SQLSTATE class 22 (data exception): the input itself was refused, e.g. a body
// jsonb cannot hold. Retrying the same data cannot succeed.
bool is_data_error(const pqxx::sql_error& e) {
  return e.sqlstate().rfind("22", 0) == 0;
}

// The most events that can be waiting: each request thread waits for its own.
// A wait for more ends here, not only at batch_max.
size_t full_batch(const Settings& s) {
  return static_cast<size_t>(std::min(s.batch_max, s.threads));
}

}  // namespace

const char* describe(StoreFailure f) {
  switch (f) {
    case StoreFailure::kNone:
      return "";
    case StoreFailure::kShuttingDown:
      return "shutting down";
    case StoreFailure::kQueueFull:
      return "writer queue full";
    case StoreFailure::kTimedOut:
      return "commit did not finish in time";
    case StoreFailure::kDatabaseUnavailable:
      return "database unavailable";
    case StoreFailure::kOutcomeUnknown:
      return "commit outcome unknown";
    case StoreFailure::kDataRefused:
      return "the database refused this event's data";
    case StoreFailure::kVanished:
      return "event not found after insert";
  }
  return "?";
}

Writer::Writer(SettingsStore& settings, DbSession& session)
    : settings_(settings), session_(session) {}

Writer::~Writer() {
  stop();
}

void Writer::start() {
  thread_ = std::thread([this] { run(); });
}

void Writer::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

StoreResult Writer::store(EventRecord record) {
  auto item = std::make_shared<Item>();
  item->record = std::move(record);
  item->queued = Clock::now();
  const auto settings = settings_.get();  // one snapshot for this request
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return {StoreOutcome::kUnavailable, 0, StoreFailure::kShuttingDown};
    if (queue_.size() >= static_cast<size_t>(settings->queue_max)) {
      return {StoreOutcome::kUnavailable, 0, StoreFailure::kQueueFull};
    }
    queue_.push_back(item);
    // The writer waits for the first event, or for a full batch while it
    // lingers; in between, waking it would only make it check and sleep again.
    wake = queue_.size() == 1 || queue_.size() >= full_batch(*settings);
  }
  if (wake) cv_.notify_one();
  // If the wait times out the writer may still commit the event later. Answering
  // 503 is safe then: i-payout retries and the retry is answered as a duplicate.
  if (!item->done.wait_for(std::chrono::milliseconds(settings->request_timeout_ms))) {
    return {StoreOutcome::kUnavailable, 0, StoreFailure::kTimedOut};
  }
  return item->done.get();
}

void Writer::run() {
  Batch batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) break;
    }
    take_batch(batch);
    bool connected = false;
    {
      // Held for the commit only: the endpoint loader gets its turn in between.
      DbSession::Lease lease = session_.acquire();
      connected = static_cast<bool>(lease);
      if (connected) commit(lease, batch);
    }
    if (connected) {
      batch.clear();
      continue;
    }
    // No database: every event waiting now gets its 503 at once, not after its
    // request timeout; the next ones wait for the next connection attempt.
    {
      std::lock_guard<std::mutex> lk(mu_);
      while (!queue_.empty()) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      metrics::set_queue_depth(0);
    }
    fail(batch, StoreOutcome::kUnavailable, StoreFailure::kDatabaseUnavailable);
    std::unique_lock<std::mutex> lk(mu_);
    if (stopping_) break;
    cv_.wait_until(lk, session_.next_attempt(), [&] { return stopping_; });
  }
}

void Writer::take_batch(Batch& batch) {
  std::unique_lock<std::mutex> lk(mu_);
  const auto settings = settings_.get();
  const size_t batch_max = static_cast<size_t>(settings->batch_max);
  const size_t full = full_batch(*settings);
  // Linger only with a database to commit to: without one the answer is 503 now.
  if (settings->batch_wait_us > 0 && session_.connected() && !queue_.empty() &&
      queue_.size() < full) {
    // A bigger batch shares one commit (one fsync) among more events.
    const auto until = queue_.front()->queued + std::chrono::microseconds(settings->batch_wait_us);
    cv_.wait_until(lk, until, [&] { return stopping_ || queue_.size() >= full; });
  }
  while (!queue_.empty() && batch.size() < batch_max) {
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  metrics::set_queue_depth(queue_.size());
}

void Writer::fail(Batch& batch, StoreOutcome outcome, StoreFailure why) {
  for (auto& item : batch) item->done.set({outcome, 0, why});
  batch.clear();
}

void Writer::commit(DbSession::Lease& lease, Batch& batch) {
  // Two copies of one event in the same batch: only the first goes to the
  // database; the others are answered as its duplicates after the commit.
  std::vector<size_t> leaders;
  std::vector<size_t> leader_of(batch.size());
  std::unordered_map<std::string, size_t> first;
  for (size_t i = 0; i < batch.size(); ++i) {
    const EventRecord& r = batch[i]->record;
    std::string k = std::to_string(r.endpoint_id) + '\n' + r.dedup_key;
    auto [it, inserted] = first.emplace(std::move(k), i);
    leader_of[i] = it->second;
    if (inserted) leaders.push_back(i);
  }

  std::vector<StoreResult> results(batch.size());
  CommitFailure failure = CommitFailure::kOther;
  const auto started = Clock::now();
  bool ok = try_commit(lease, batch, leaders, results, failure);
  metrics::observe_batch(leaders.size(),
                         std::chrono::duration<double>(Clock::now() - started).count());
  if (!ok && failure == CommitFailure::kNotSent) {
    // The connection was found broken before the batch was sent, so nothing
    // was written: one retry on a fresh connection hides a terminated backend
    // from i-payout.
    if (lease.connect()) ok = try_commit(lease, batch, leaders, results, failure);
  }
  if (!ok && failure == CommitFailure::kData) {
    // Some body in the batch was refused by PostgreSQL (the parser should have
    // caught it). Commit the others one by one so one bad event cannot block them.
    for (size_t i : leaders) {
      std::vector<size_t> one{i};
      CommitFailure f = CommitFailure::kOther;
      if (try_commit(lease, batch, one, results, f)) continue;
      if (f == CommitFailure::kData && batch[i]->record.jsonb_compatible) {
        batch[i]->record.jsonb_compatible = false;  // keep the raw body, payload NULL
        if (try_commit(lease, batch, one, results, f)) continue;
      }
      results[i] =
          f == CommitFailure::kData
              ? StoreResult{StoreOutcome::kRejected, 0, StoreFailure::kDataRefused}
              : StoreResult{StoreOutcome::kUnavailable, 0, StoreFailure::kDatabaseUnavailable};
    }
    ok = true;
  }
  if (!ok) {
    fail(batch, StoreOutcome::kUnavailable,
         failure == CommitFailure::kInDoubt ? StoreFailure::kOutcomeUnknown
                                            : StoreFailure::kDatabaseUnavailable);
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (leader_of[i] != i) {
      const StoreResult& lead = results[leader_of[i]];
      results[i] = lead;
      if (lead.outcome == StoreOutcome::kAccepted) results[i].outcome = StoreOutcome::kDuplicate;
    }
    batch[i]->done.set(results[i]);
  }
  batch.clear();
}

// One transaction for the events at `idx`. On failure `failure` says what kind.
bool Writer::try_commit(DbSession::Lease& lease, Batch& batch, const std::vector<size_t>& idx,
                        std::vector<StoreResult>& results, CommitFailure& failure) {
  pqxx::connection* conn = lease.conn();
  if (!conn) {
    failure = CommitFailure::kOther;
    return false;
  }
  ArrayLiteral endpoint, event, key, body, is_json, headers, signature, addr;
  for (size_t i : idx) {
    const EventRecord& r = batch[i]->record;
    endpoint.add(std::to_string(r.endpoint_id));
    event.add(r.event);
    key.add(r.dedup_key);
    body.add(r.body);
    is_json.add(r.jsonb_compatible ? "t" : "f");
    headers.add(r.headers_json);
    signature.add(to_string(r.signature));
    if (r.remote_addr.empty())
      addr.add_null();
    else
      addr.add(r.remote_addr);
  }
  if (!idle_session_alive(*conn)) {
    failure = CommitFailure::kNotSent;
    lease.lost("connection lost while idle");
    return false;
  }
  // One round trip: one Query message of three statements, which PostgreSQL
  // runs as one implicit transaction and commits after the last one, before
  // it answers ReadyForQuery (so a commit error is the last result, and
  // exec() throws it). Any error rolls all of it back. A broken connection
  // during it leaves the outcome unknown. Bounded waits: a slow or locked
  // database turns into 503s, not piled-up threads. SET LOCAL, not a session
  // SET: behind PgBouncer in transaction mode the next transaction may run on
  // another server connection. The arrays are text literals quoted by libpq
  // for this connection (PQescapeStringConn).
  try {
    // Built inside the try: esc() throws (an encoding it refuses, a lost
    // connection) and nothing may escape to the writer's loop.
    const std::string timeout = std::to_string(settings_.get()->commit_timeout_ms);
    std::string sql = "SET LOCAL statement_timeout = " + timeout +
                      "; SET LOCAL lock_timeout = " + timeout +
                      "; SELECT ord, id, accepted FROM ipayout.ingest(";
    const std::pair<ArrayLiteral*, const char*> columns[] = {
        {&endpoint, "bigint[]"}, {&event, "text[]"},   {&key, "text[]"},       {&body, "text[]"},
        {&is_json, "boolean[]"}, {&headers, "text[]"}, {&signature, "text[]"}, {&addr, "text[]"}};
    for (const auto& [literal, type] : columns) {
      if (literal != &endpoint) sql += ", ";
      sql += '\'';
      sql += conn->esc(literal->finish());
      sql += "'::";
      sql += type;
    }
    sql += ')';
    pqxx::nontransaction tx(*conn, "ingest");
    pqxx::result rows = tx.exec(sql);
    std::vector<bool> seen(idx.size(), false);
    std::vector<StoreResult> out(idx.size());
    for (const auto& row : rows) {
      size_t ord = row[0].as<size_t>();  // 1-based position in the arrays
      if (ord < 1 || ord > idx.size()) continue;
      out[ord - 1] = {row[2].as<bool>() ? StoreOutcome::kAccepted : StoreOutcome::kDuplicate,
                      row[1].as<int64_t>(), StoreFailure::kNone};
      seen[ord - 1] = true;
    }
    for (size_t j = 0; j < idx.size(); ++j) {
      // Not seen: the row vanished between insert and lookup (retention raced
      // us). It was not acknowledged, so 503 and the retry stores it again.
      results[idx[j]] =
          seen[j] ? out[j] : StoreResult{StoreOutcome::kUnavailable, 0, StoreFailure::kVanished};
    }
    return true;
  } catch (const pqxx::broken_connection& e) {
    // The statements were sent: the commit may or may not have happened.
    spdlog::error("msg=\"commit outcome unknown\" events={} error=\"{}\"", idx.size(), e.what());
    failure = CommitFailure::kInDoubt;
    lease.lost("connection lost during commit");
  } catch (const pqxx::sql_error& e) {
    failure = is_data_error(e) ? CommitFailure::kData : CommitFailure::kOther;
    std::string what = e.what();
    for (auto& ch : what) {
      if (ch == '\n' || ch == '"') ch = ' ';
    }
    spdlog::error("msg=\"batch insert failed\" events={} sqlstate={} error=\"{}\"", idx.size(),
                  e.sqlstate(), what);
    if (!conn->is_open()) lease.lost("connection lost");
  } catch (const std::exception& e) {
    failure = CommitFailure::kOther;
    spdlog::error("msg=\"batch insert failed\" events={} error=\"{}\"", idx.size(), e.what());
  }
  return false;
}

}  // namespace ipayout
