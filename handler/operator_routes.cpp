#include "operator_routes.h"

#include "metrics.h"

namespace ipayout {

bool healthy(const DbSession& session, const EndpointCache& endpoints) {
  return session.connected() && endpoints.snapshot() != nullptr;
}

std::optional<HttpResponse> operator_response(const RequestHead& head, const DbSession& session,
                                              const EndpointCache& endpoints) {
  if (head.method != "GET") return std::nullopt;
  if (head.path == kMetricsPath) {
    HttpResponse r;
    r.body = metrics::render();
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    return r;
  }
  if (head.path == kHealthPath) {
    if (!healthy(session, endpoints)) {
      // Retry-After 1: a probe, not i-payout; it may look again soon.
      return unavailable_response(1, "database not reachable");
    }
    HttpResponse r;
    r.body = "{\"status\":\"ready\"}";
    return r;
  }
  return std::nullopt;
}

}  // namespace ipayout
