#include "access_log.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "http.h"
#include "metrics.h"

namespace ipayout {
namespace {

void log_line(const Delivery& d, double latency_ms) {
  const StoreResult* stored = d.stored ? &*d.stored : nullptr;
  std::string line = "msg=request endpoint=";
  line += d.endpoint ? d.endpoint->name : "-";
  if (!d.event.empty()) {
    line += " event=";
    append_json_string(line, d.event);
  }
  if (stored && stored->id) line += " id=" + std::to_string(stored->id);
  line += " status=" + std::to_string(d.status);
  if (stored &&
      (stored->outcome == StoreOutcome::kAccepted || stored->outcome == StoreOutcome::kDuplicate)) {
    line += stored->outcome == StoreOutcome::kAccepted ? " outcome=accepted" : " outcome=duplicate";
  }
  if (!d.error_code.empty()) line += " error=" + d.error_code;
  if (stored && stored->failure != StoreFailure::kNone) {
    line += " detail=";
    append_json_string(line, describe(stored->failure));
  }
  if (d.signature) line += std::string(" signature=") + to_string(*d.signature);
  char latency[32];
  std::snprintf(latency, sizeof latency, " latency_ms=%.3f", latency_ms);
  line += latency;
  if (!d.remote.empty()) line += " remote=" + d.remote;
  if (d.status >= 500)
    spdlog::warn(line);
  else
    spdlog::info(line);
}

}  // namespace

void account(const Delivery& d) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - d.started).count();
  metrics::count_request(d.endpoint ? d.endpoint->id : 0,
                         d.endpoint ? std::string_view(d.endpoint->name) : std::string_view(),
                         d.status, seconds);
  if (d.stored && d.stored->outcome == StoreOutcome::kAccepted) metrics::count_event(d.event);
  if (d.stored && d.stored->outcome == StoreOutcome::kDuplicate) {
    metrics::count_duplicate(d.endpoint->id, d.endpoint->name);
  }
  if (d.status == 401 && d.endpoint && d.error_code == "required_header_invalid") {
    metrics::count_required_header_failure(d.endpoint->id, d.endpoint->name);
  }
  if (d.status == 401 && d.signature) {
    metrics::count_signature_failure(*d.signature);  // missing, invalid or expired
  }
  log_line(d, seconds * 1000);
}

}  // namespace ipayout
