#include "writer.h"

#include <spdlog/spdlog.h>

#include <pqxx/pqxx>
#include <unordered_map>

#include "metrics.h"
#include "readiness.h"

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

Writer::Writer(SettingsStore& settings, EndpointCache& endpoints)
    : settings_(settings), endpoints_(endpoints) {}

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

void Writer::refresh_soon() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    force_refresh_ = true;
  }
  cv_.notify_one();
}

StoreResult Writer::store(EventRecord record) {
  auto item = std::make_unique<Item>();
  item->record = std::move(record);
  item->queued = Clock::now();
  std::future<StoreResult> done = item->done.get_future();
  const auto settings = settings_.get();  // one snapshot for this request
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return {StoreOutcome::kUnavailable, 0, "shutting down"};
    if (queue_.size() >= static_cast<size_t>(settings->queue_max)) {
      return {StoreOutcome::kUnavailable, 0, "writer queue full"};
    }
    queue_.push_back(std::move(item));
    // The writer waits for the first event, or for a full batch while it
    // lingers; in between, waking it would only make it check and sleep again.
    wake = queue_.size() == 1 || queue_.size() >= full_batch(*settings);
  }
  if (wake) cv_.notify_one();
  // If the wait times out the writer may still commit the event later. Answering
  // 503 is safe then: i-payout retries and the retry is answered as a duplicate.
  if (done.wait_for(std::chrono::milliseconds(settings->request_timeout_ms)) !=
      std::future_status::ready) {
    return {StoreOutcome::kUnavailable, 0, "commit did not finish in time"};
  }
  return done.get();
}

void Writer::run() {
  Batch batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      auto wake = conn_ ? next_refresh_ : next_connect_;
      cv_.wait_until(lk, wake, [&] { return stopping_ || force_refresh_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) break;
    }
    if (!ensure_connected()) {
      Batch failed;
      {
        std::lock_guard<std::mutex> lk(mu_);
        while (!queue_.empty()) {
          failed.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      fail(failed, StoreOutcome::kUnavailable, "database unavailable");
      if (stopping_) break;
      // Sleep until the next attempt, but wake for a stop request.
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait_until(lk, next_connect_, [&] { return stopping_; });
      continue;
    }
    bool forced = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      std::swap(forced, force_refresh_);
    }
    if (forced || Clock::now() >= next_refresh_) refresh_endpoints(forced);
    {
      std::unique_lock<std::mutex> lk(mu_);
      const auto settings = settings_.get();
      const size_t batch_max = static_cast<size_t>(settings->batch_max);
      const size_t full = full_batch(*settings);
      if (settings->batch_wait_us > 0 && !queue_.empty() && queue_.size() < full) {
        // Linger: a bigger batch shares one commit (one fsync) among more events.
        const auto until =
            queue_.front()->queued + std::chrono::microseconds(settings->batch_wait_us);
        cv_.wait_until(lk, until, [&] { return stopping_ || queue_.size() >= full; });
      }
      while (!queue_.empty() && batch.size() < batch_max) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      metrics::set_queue_depth(queue_.size());
    }
    if (!batch.empty()) {
      commit(batch);
      batch.clear();
    }
  }
  if (conn_) disconnect("shutting down");
}

bool Writer::ensure_connected() {
  if (conn_ && conn_->is_open()) return true;
  if (conn_) disconnect("connection lost");
  auto now = Clock::now();
  if (now < next_connect_) return false;
  next_connect_ = now + std::chrono::milliseconds(settings_.get()->reconnect_ms);
  try {
    auto c = std::make_unique<pqxx::connection>(settings_.get()->database);
    // Named, so operators and fault tests find the writers in pg_stat_activity.
    c->set_variable("application_name", "'ipayout-webhookd'");
    conn_ = std::move(c);
    metrics::count_reconnect();
    metrics::set_db_connected(true);
    spdlog::info("msg=\"database connected\"");
    refresh_endpoints(true);
    if (!conn_) return false;
    healthy_.store(endpoints_.snapshot() != nullptr);
    readiness::report();
    return true;
  } catch (const std::exception& e) {
    conn_.reset();
    // One warning per 30 s while the outage lasts, not one per attempt.
    if (now - last_connect_warning_ > std::chrono::seconds(30)) {
      last_connect_warning_ = now;
      std::string why = e.what();
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      for (auto& ch : why) {
        if (ch == '\n' || ch == '"') ch = ' ';
      }
      spdlog::warn("msg=\"database unavailable, answering 503\" error=\"{}\"", why);
    }
    return false;
  }
}

void Writer::disconnect(const std::string& why) {
  spdlog::info("msg=\"database disconnected\" reason=\"{}\"", why);
  healthy_.store(false);
  metrics::set_db_connected(false);
  try {
    conn_.reset();
  } catch (...) {
  }
  next_connect_ = Clock::now();
}

void Writer::refresh_endpoints(bool force) {
  next_refresh_ = Clock::now() + std::chrono::milliseconds(settings_.get()->endpoint_refresh_ms);
  try {
    pqxx::nontransaction tx(*conn_);
    // Cheap change check; updated_at is maintained by a trigger on every change.
    pqxx::row v = tx.exec1(
        "SELECT count(*)::text || '/' || coalesce(max(updated_at)::text, '') "
        "FROM ipayout.endpoints");
    std::string version = v[0].as<std::string>();
    if (!force && version == endpoints_version_ && endpoints_.snapshot()) return;
    pqxx::result r = tx.exec(
        "SELECT id, name, token_hash, ipayout_key, notification_url, signature_policy, "
        "success_status, coalesce(success_body, '') FROM ipayout.endpoints WHERE enabled");
    auto map = std::make_shared<EndpointMap>();
    for (const auto& row : r) {
      Endpoint ep;
      ep.id = row[0].as<int64_t>();
      ep.name = row[1].as<std::string>();
      pqxx::binarystring hash(row[2]);
      ep.key = row[3].as<std::string>();
      ep.hmac = std::make_shared<const crypto::HmacKey>(ep.key);
      ep.notification_url = row[4].as<std::string>();
      ep.policy = parse_policy(row[5].as<std::string>()).value_or(SignaturePolicy::kRequired);
      ep.success_status = row[6].as<int>();
      ep.success_body = row[7].as<std::string>();
      map->emplace(hash.str(), std::move(ep));
    }
    endpoints_.replace(std::move(map));
    endpoints_version_ = version;
    metrics::set_endpoints_loaded(r.size());
    healthy_.store(true);
    spdlog::info("msg=\"endpoints loaded\" enabled={}", r.size());
  } catch (const pqxx::broken_connection& e) {
    disconnect("connection lost while loading endpoints");
  } catch (const std::exception& e) {
    // Keep serving with the endpoints we have; the next refresh tries again.
    spdlog::error("msg=\"loading endpoints failed\" error=\"{}\"", e.what());
  }
}

void Writer::fail(Batch& batch, StoreOutcome outcome, const std::string& detail) {
  for (auto& item : batch) item->done.set_value({outcome, 0, detail});
  batch.clear();
}

void Writer::commit(Batch& batch) {
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
  std::string error_state;
  const auto started = Clock::now();
  bool ok = try_commit(batch, leaders, results, error_state);
  metrics::observe_batch(leaders.size(),
                         std::chrono::duration<double>(Clock::now() - started).count());
  if (!ok && error_state == "retry") {
    // The connection broke before COMMIT was sent, so nothing was written:
    // one retry on a fresh connection hides a terminated backend from i-payout.
    if (ensure_connected()) ok = try_commit(batch, leaders, results, error_state);
  }
  if (!ok && error_state == "data") {
    // Some body in the batch was refused by PostgreSQL (the parser should have
    // caught it). Commit the others one by one so one bad event cannot block them.
    for (size_t i : leaders) {
      std::vector<size_t> one{i};
      std::string st;
      if (try_commit(batch, one, results, st)) continue;
      if (st == "data" && batch[i]->record.jsonb_compatible) {
        batch[i]->record.jsonb_compatible = false;  // keep the raw body, payload NULL
        if (try_commit(batch, one, results, st)) continue;
      }
      results[i] = {
          st == "data" ? StoreOutcome::kRejected : StoreOutcome::kUnavailable, 0,
          st == "data" ? "the database refused this event's data" : "database unavailable"};
    }
    ok = true;
  }
  if (!ok) {
    fail(batch, StoreOutcome::kUnavailable,
         error_state == "in_doubt" ? "commit outcome unknown" : "database unavailable");
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (leader_of[i] != i) {
      const StoreResult& lead = results[leader_of[i]];
      results[i] = lead;
      if (lead.outcome == StoreOutcome::kAccepted) results[i].outcome = StoreOutcome::kDuplicate;
    }
    batch[i]->done.set_value(std::move(results[i]));
  }
  batch.clear();
}

// One transaction for the events at `idx`. On failure `error_state` says what
// kind: "retry" (nothing sent for commit, connection lost), "in_doubt", "data",
// or "error".
bool Writer::try_commit(Batch& batch, const std::vector<size_t>& idx,
                        std::vector<StoreResult>& results, std::string& error_state) {
  if (!conn_) {
    error_state = "error";
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
    signature.add(r.signature);
    if (r.remote_addr.empty())
      addr.add_null();
    else
      addr.add(r.remote_addr);
  }
  bool committing = false;
  try {
    pqxx::work tx(*conn_, "ingest");
    // Bounded waits: a slow or locked database turns into 503s, not piled-up
    // threads. SET LOCAL, not a session SET: behind PgBouncer in transaction
    // mode the next transaction may run on another server connection.
    const std::string timeout = std::to_string(settings_.get()->commit_timeout_ms);
    tx.exec("SET LOCAL statement_timeout = " + timeout + "; SET LOCAL lock_timeout = " + timeout);
    pqxx::result rows = tx.exec_params(
        "SELECT ord, id, accepted FROM ipayout.ingest($1::bigint[], $2::text[], $3::text[], "
        "$4::text[], $5::boolean[], $6::text[], $7::text[], $8::text[])",
        endpoint.finish(), event.finish(), key.finish(), body.finish(), is_json.finish(),
        headers.finish(), signature.finish(), addr.finish());
    std::vector<bool> seen(idx.size(), false);
    std::vector<StoreResult> out(idx.size());
    for (const auto& row : rows) {
      size_t ord = row[0].as<size_t>();  // 1-based position in the arrays
      if (ord < 1 || ord > idx.size()) continue;
      out[ord - 1] = {row[2].as<bool>() ? StoreOutcome::kAccepted : StoreOutcome::kDuplicate,
                      row[1].as<int64_t>(), ""};
      seen[ord - 1] = true;
    }
    committing = true;
    tx.commit();
    for (size_t j = 0; j < idx.size(); ++j) {
      // Not seen: the row vanished between insert and lookup (retention raced
      // us). It was not acknowledged, so 503 and the retry stores it again.
      results[idx[j]] =
          seen[j] ? out[j]
                  : StoreResult{StoreOutcome::kUnavailable, 0, "event not found after insert"};
    }
    return true;
  } catch (const pqxx::in_doubt_error& e) {
    spdlog::error("msg=\"commit outcome unknown\" events={} error=\"{}\"", idx.size(), e.what());
    error_state = "in_doubt";
    disconnect("connection lost during commit");
  } catch (const pqxx::broken_connection& e) {
    error_state = committing ? "in_doubt" : "retry";
    disconnect("connection lost");
  } catch (const pqxx::sql_error& e) {
    error_state = is_data_error(e) ? "data" : "error";
    std::string what = e.what();
    for (auto& ch : what) {
      if (ch == '\n' || ch == '"') ch = ' ';
    }
    spdlog::error("msg=\"batch insert failed\" events={} sqlstate={} error=\"{}\"", idx.size(),
                  e.sqlstate(), what);
    if (!conn_->is_open()) disconnect("connection lost");
  } catch (const std::exception& e) {
    error_state = "error";
    spdlog::error("msg=\"batch insert failed\" events={} error=\"{}\"", idx.size(), e.what());
  }
  return false;
}

}  // namespace ipayout
