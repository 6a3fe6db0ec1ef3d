#include "endpoint_loader.h"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <pqxx/pqxx>
#include <unordered_set>
#include <vector>

#include "metrics.h"

namespace ipayout {

EndpointLoader::EndpointLoader(SettingsStore& settings, DbSession& session,
                               EndpointCache& endpoints)
    : settings_(settings), session_(session), endpoints_(endpoints) {}

EndpointLoader::~EndpointLoader() {
  stop();
}

void EndpointLoader::start() {
  thread_ = std::thread([this] { run(); });
}

void EndpointLoader::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EndpointLoader::refresh_soon() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    forced_ = true;
  }
  cv_.notify_one();
}

void EndpointLoader::run() {
  using Clock = DbSession::Clock;
  for (;;) {
    bool force = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      std::swap(force, forced_);
    }
    Clock::time_point wake;
    {
      DbSession::Lease lease = session_.acquire();  // connects (and loads) if it can
      if (pqxx::connection* conn = lease.conn()) {
        try {
          load(*conn, force);
        } catch (const pqxx::broken_connection&) {
          lease.lost("connection lost while loading endpoints");
        }
      }
      // Connected: the next refresh. Not: the next connection attempt.
      wake = lease ? Clock::now() + std::chrono::milliseconds(settings_.get()->endpoint_refresh_ms)
                   : session_.next_attempt();
    }
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_until(lk, wake, [&] { return stopping_ || forced_; });
  }
}

namespace {

// A change may commit a while after it was stamped: stamped T1, committed
// after a later change stamped T2 > T1 was loaded. The table's count and
// max(updated_at) do not move then, so the version also digests every row
// stamped in the last 10 minutes: such a change shows up once it commits,
// provided it commits within that time (the endpoint commands' transactions
// take milliseconds).
const char* const kVersionSql =
    "SELECT count(*), count(*)::text || '/' || coalesce(max(updated_at)::text, '') || '/' || "
    "coalesce(md5(string_agg(id::text || '@' || updated_at::text, ',' ORDER BY id) "
    "FILTER (WHERE updated_at > now() - interval '10 minutes')), '') "
    "FROM ipayout.endpoints";

// Where such a change can be, from the newest stamp loaded: at most the
// version's 10 minutes before it (the check's now() is later than that
// stamp), plus a minute.
constexpr int64_t kLookBackUs = int64_t{11} * 60 * 1000000;

// Stamps are unix microseconds here: (extract(epoch ...) * 1000000)::bigint
// is exact (extract gives a numeric), and so is 'epoch' + n microseconds.

// Did a row stamped in [$1, $2) change since it was loaded, or appear? The
// count and sum of the stamps there, compared with those of the rows the
// snapshot was made from: one row from the index instead of every stamp of
// the window (after an import, every row of the table).
const char* const kLookBackSql =
    "SELECT count(*), coalesce(sum((extract(epoch FROM updated_at) * 1000000)::bigint - $1), 0) "
    "FROM ipayout.endpoints "
    "WHERE updated_at >= timestamptz 'epoch' + $1::bigint * interval '1 microsecond' "
    "AND updated_at < timestamptz 'epoch' + $2::bigint * interval '1 microsecond'";

// The stamps of the rows stamped from $1 on: each is compared with what the
// snapshot was made from, and only those that differ load.
const char* const kStampsSql =
    "SELECT id, (extract(epoch FROM updated_at) * 1000000)::bigint, enabled "
    "FROM ipayout.endpoints "
    "WHERE updated_at >= timestamptz 'epoch' + $1::bigint * interval '1 microsecond'";

// Grace ends as unix seconds; request threads compare them with the clock,
// so an expired grace needs no reload to end. Disabled rows too: the loader
// counts every row, so that the table's count tells it about deletions.
const char* const kRowsSql =
    "SELECT id, (extract(epoch FROM updated_at) * 1000000)::bigint, enabled, name, token_hash, "
    "ipayout_key, notification_url, signature_policy, success_status, "
    "coalesce(success_body, ''), previous_key, "
    "floor(extract(epoch FROM previous_key_until))::bigint, previous_token_hash, "
    "previous_notification_url, floor(extract(epoch FROM previous_token_until))::bigint, "
    "required_header_name, required_header_value "
    "FROM ipayout.endpoints";

// More changed rows than this, and more than a quarter of the table (an
// import): loading everything costs about the same and trusts nothing.
constexpr size_t kMaxChanges = 1000;

// One row of kRowsSql: its entries (none when disabled).
EndpointEntries entries_of(const pqxx::row& row) {
  EndpointEntries out;
  out.id = row[0].as<int64_t>();
  if (!row[2].as<bool>()) return out;
  Endpoint ep;
  ep.id = out.id;
  ep.name = row[3].as<std::string>();
  pqxx::binarystring hash(row[4]);
  ep.key = row[5].as<std::string>();
  ep.hmac = std::make_shared<const crypto::LazyHmacKey>(ep.key);
  ep.notification_url = row[6].as<std::string>();
  ep.policy = parse_policy(row[7].as<std::string>()).value_or(SignaturePolicy::kRequired);
  ep.success_status = row[8].as<int>();
  ep.success_body = row[9].as<std::string>();
  if (!row[10].is_null() && !row[10].as<std::string>().empty()) {
    ep.previous_key = row[10].as<std::string>();
    ep.previous_hmac = std::make_shared<const crypto::LazyHmacKey>(ep.previous_key);
    ep.previous_key_until = row[11].as<int64_t>();
  }
  if (!row[15].is_null()) {
    ep.required_header_name = row[15].as<std::string>();
    ep.required_header_param = fastcgi_param_name(ep.required_header_name);
    ep.required_header_value = row[16].as<std::string>();
  }
  if (!row[12].is_null()) {
    // The previous token: the same endpoint, signed over the old URL.
    Endpoint old = ep;  // shares the prepared keys
    old.notification_url = row[13].as<std::string>();
    old.token_until = row[14].as<int64_t>();
    out.entries.emplace_back(pqxx::binarystring(row[12]).str(),
                             std::make_shared<const Endpoint>(std::move(old)));
  }
  out.entries.emplace_back(hash.str(), std::make_shared<const Endpoint>(std::move(ep)));
  return out;
}

std::string array_literal(const std::vector<int64_t>& ids) {
  std::string out = "{";
  for (int64_t id : ids) {
    if (out.size() > 1) out += ',';
    out += std::to_string(id);
  }
  return out + "}";
}

}  // namespace

void EndpointLoader::load(pqxx::connection& conn, bool force) {
  try {
    pqxx::nontransaction tx(conn);
    // Cheap change check; updated_at is maintained by a trigger on every change.
    pqxx::row v = tx.exec1(kVersionSql);
    const int64_t count = v[0].as<int64_t>();
    std::string version = v[1].as<std::string>();
    if (!force && version == version_ && endpoints_.snapshot()) return;
    // The version is read before the rows: a change committed in between is
    // loaded now and changes the version again, so it costs one more load,
    // never a missed change.
    if (force || !have_rows_ || !endpoints_.snapshot() || !load_changes(tx, count)) load_all(tx);
    version_ = version;
  } catch (const pqxx::broken_connection&) {
    have_rows_ = false;
    throw;
  } catch (const std::exception& e) {
    // Keep serving with the endpoints we have; the next refresh tries again,
    // with everything if it was a load of the changes that failed.
    have_rows_ = false;
    spdlog::error("msg=\"loading endpoints failed\" error=\"{}\"", e.what());
  }
}

void EndpointLoader::record(const EndpointEntries& row, int64_t updated_at_us, bool enabled) {
  Seen seen{updated_at_us, enabled};
  for (const auto& [hash, entry] : row.entries) {
    const auto shard = static_cast<uint8_t>(EndpointMap::shard_of(hash));
    if (seen.shards < 2 && (seen.shards == 0 || seen.shard[0] != shard)) {
      seen.shard[seen.shards++] = shard;
    }
  }
  auto [it, added] = seen_.try_emplace(row.id, seen);
  if (!added) {
    if (it->second.enabled) --enabled_;
    it->second = seen;
  }
  if (seen.enabled) ++enabled_;
}

std::vector<size_t> EndpointLoader::shards_of(int64_t id) const {
  auto it = seen_.find(id);
  if (it == seen_.end()) return {};
  return std::vector<size_t>(it->second.shard, it->second.shard + it->second.shards);
}

void EndpointLoader::load_all(pqxx::transaction_base& tx) {
  pqxx::result r = tx.exec(kRowsSql);
  auto map = std::make_shared<EndpointMap>();
  have_rows_ = false;
  seen_.clear();
  seen_.reserve(r.size());
  enabled_ = 0;
  newest_us_ = 0;
  for (const auto& row : r) {
    EndpointEntries e = entries_of(row);
    const int64_t stamp = row[1].as<int64_t>();
    record(e, stamp, row[2].as<bool>());
    for (auto& [hash, entry] : e.entries) map->put(std::move(hash), std::move(entry));
    newest_us_ = std::max(newest_us_, stamp);
  }
  endpoints_.replace(std::move(map));
  r.clear();
  // The rows read and (unless a request still holds it) the old snapshot are
  // free now: hand the pages back (with 100,000 endpoints, tens of MB that
  // the heap would otherwise keep until the next full load).
  malloc_trim(0);
  have_rows_ = true;
  metrics::set_endpoints_loaded(enabled_);
  metrics::count_endpoint_load(metrics::EndpointLoad::kFull);
  spdlog::info("msg=\"endpoints loaded\" load=full enabled={}", enabled_);
}

bool EndpointLoader::load_changes(pqxx::transaction_base& tx, int64_t count) {
  // Which rows changed: those whose stamp or enabled flag is not what the
  // snapshot was made from, among the rows stamped from the newest one loaded
  // on. Then the look back: the rows stamped in the window before it, except
  // those just read (their old stamps were in it, their new ones are not),
  // must be the ones loaded, with their stamps. If not, a change there
  // committed late: compare the stamps of the window too.
  pqxx::result stamps = tx.exec_params(kStampsSql, newest_us_);
  std::unordered_set<int64_t> moved;
  for (const auto& row : stamps) moved.insert(row[0].as<int64_t>());
  const int64_t back = newest_us_ - kLookBackUs;
  int64_t count_back = 0, sum_back = 0;
  for (const auto& [id, seen] : seen_) {
    if (seen.updated_at_us >= back && seen.updated_at_us < newest_us_ && !moved.count(id)) {
      ++count_back;
      sum_back += seen.updated_at_us - back;
    }
  }
  pqxx::row late = tx.exec_params1(kLookBackSql, back, newest_us_);
  const bool late_commit = late[0].as<int64_t>() != count_back || late[1].as<int64_t>() != sum_back;
  if (late_commit) stamps = tx.exec_params(kStampsSql, back);
  std::vector<int64_t> ids;
  int64_t newest = newest_us_;
  for (const auto& row : stamps) {
    const int64_t id = row[0].as<int64_t>(), stamp = row[1].as<int64_t>();
    newest = std::max(newest, stamp);
    auto it = seen_.find(id);
    if (it == seen_.end() || it->second.updated_at_us != stamp ||
        it->second.enabled != row[2].as<bool>()) {
      ids.push_back(id);
    }
  }
  if (ids.size() > kMaxChanges && ids.size() * 4 > seen_.size()) return false;

  // From here seen_ describes the snapshot about to be made; until it is in
  // place, a failure means the next load loads everything.
  have_rows_ = false;
  std::vector<EndpointEntries> changes;
  std::unordered_map<int64_t, size_t> changed;  // id -> its place in changes
  if (!ids.empty()) {
    for (const auto& row : tx.exec_params(std::string(kRowsSql) + " WHERE id = ANY($1::bigint[])",
                                          array_literal(ids))) {
      changes.push_back(entries_of(row));
      EndpointEntries& c = changes.back();
      c.old_shards = shards_of(c.id);
      const int64_t stamp = row[1].as<int64_t>();
      record(c, stamp, row[2].as<bool>());
      newest = std::max(newest, stamp);
      changed.emplace(c.id, changes.size() - 1);
    }
  }
  auto forget = [&](int64_t id) {
    auto it = seen_.find(id);
    if (it == seen_.end()) return;
    if (it->second.enabled) --enabled_;
    if (auto c = changed.find(id); c != changed.end()) {
      changes[c->second].entries.clear();  // read a moment ago, deleted since
    } else {
      changes.push_back({id, {}, shards_of(id)});
    }
    seen_.erase(it);
  };
  for (int64_t id : ids) {
    if (!changed.count(id)) forget(id);  // deleted since its stamp was read
  }
  // A deleted row leaves no stamp behind; the count says that one went.
  if (seen_.size() != static_cast<size_t>(count)) {
    std::unordered_set<int64_t> present;
    for (const auto& row : tx.exec("SELECT id FROM ipayout.endpoints")) {
      const int64_t id = row[0].as<int64_t>();
      // A row whose stamp said nothing (inserted with an old updated_at, or
      // committed after the window): nothing here can be trusted.
      if (!seen_.count(id)) return false;
      present.insert(id);
    }
    std::vector<int64_t> gone;
    for (const auto& [id, seen] : seen_) {
      if (!present.count(id)) gone.push_back(id);
    }
    for (int64_t id : gone) forget(id);
  }
  newest_us_ = newest;
  if (!changes.empty()) {
    endpoints_.replace(merge_endpoints(*endpoints_.snapshot(), changes));
    // stamps: rows whose stamp was compared; look_back: a late commit made
    // it read the window before the newest stamp too.
    spdlog::info(
        "msg=\"endpoints loaded\" load=incremental changed={} stamps={} look_back={} enabled={}",
        changes.size(), stamps.size(), late_commit, enabled_);
  } else {
    spdlog::debug("msg=\"endpoints unchanged\" stamps={} look_back={} enabled={}", stamps.size(),
                  late_commit, enabled_);
  }
  have_rows_ = true;
  metrics::set_endpoints_loaded(enabled_);
  metrics::count_endpoint_load(metrics::EndpointLoad::kIncremental);
  return true;
}

}  // namespace ipayout
