#include "endpoint_loader.h"

#include <spdlog/spdlog.h>

#include <pqxx/pqxx>

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

void EndpointLoader::load(pqxx::connection& conn, bool force) {
  try {
    pqxx::nontransaction tx(conn);
    // Cheap change check; updated_at is maintained by a trigger on every change.
    // Count and newest stamp alone miss a change that commits after a later
    // one was loaded (stamped T1, committed after T2 > T1: neither moves), so
    // the version also digests every row stamped in the last 10 minutes; such
    // a change shows up once it commits, provided it commits within that
    // time (the endpoint commands' transactions take milliseconds).
    pqxx::row v = tx.exec1(
        "SELECT count(*)::text || '/' || coalesce(max(updated_at)::text, '') || '/' || "
        "coalesce(md5(string_agg(id::text || '@' || updated_at::text, ',' ORDER BY id) "
        "FILTER (WHERE updated_at > now() - interval '10 minutes')), '') "
        "FROM ipayout.endpoints");
    std::string version = v[0].as<std::string>();
    if (!force && version == version_ && endpoints_.snapshot()) return;
    // Grace ends as unix seconds; request threads compare them with the clock,
    // so an expired grace needs no reload to end.
    pqxx::result r = tx.exec(
        "SELECT id, name, token_hash, ipayout_key, notification_url, signature_policy, "
        "success_status, coalesce(success_body, ''), previous_key, "
        "floor(extract(epoch FROM previous_key_until))::bigint, previous_token_hash, "
        "previous_notification_url, floor(extract(epoch FROM previous_token_until))::bigint, "
        "required_header_name, required_header_value "
        "FROM ipayout.endpoints WHERE enabled");
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
      if (!row[8].is_null() && !row[8].as<std::string>().empty()) {
        ep.previous_key = row[8].as<std::string>();
        ep.previous_hmac = std::make_shared<const crypto::HmacKey>(ep.previous_key);
        ep.previous_key_until = row[9].as<int64_t>();
      }
      if (!row[13].is_null()) {
        ep.required_header_name = row[13].as<std::string>();
        ep.required_header_param = fastcgi_param_name(ep.required_header_name);
        ep.required_header_value = row[14].as<std::string>();
      }
      if (!row[10].is_null()) {
        // The previous token: the same endpoint, signed over the old URL.
        Endpoint old = ep;
        old.notification_url = row[11].as<std::string>();
        old.token_until = row[12].as<int64_t>();
        map->emplace(pqxx::binarystring(row[10]).str(), std::move(old));
      }
      map->emplace(hash.str(), std::move(ep));
    }
    endpoints_.replace(std::move(map));
    version_ = version;
    metrics::set_endpoints_loaded(r.size());
    spdlog::info("msg=\"endpoints loaded\" enabled={}", r.size());
  } catch (const pqxx::broken_connection&) {
    throw;
  } catch (const std::exception& e) {
    // Keep serving with the endpoints we have; the next refresh tries again.
    spdlog::error("msg=\"loading endpoints failed\" error=\"{}\"", e.what());
  }
}

}  // namespace ipayout
