// The operator routes: GET /ipayout/metrics (Prometheus text) and
// GET /ipayout/health. Served by the same pool as the webhooks; nginx decides
// who may reach them (the example site exposes them on loopback only).
#pragma once

#include <optional>
#include <string_view>

#include "db_session.h"
#include "endpoints.h"
#include "fcgi_io.h"
#include "http.h"

namespace ipayout {

constexpr std::string_view kMetricsPath = "/ipayout/metrics";
constexpr std::string_view kHealthPath = "/ipayout/health";

// Ready to store: the session has a connection and endpoints were loaded.
bool healthy(const DbSession& session, const EndpointCache& endpoints);

// The answer to an operator route, or nullopt for every other request.
std::optional<HttpResponse> operator_response(const RequestHead& head, const DbSession& session,
                                              const EndpointCache& endpoints);

}  // namespace ipayout
