// Where a request goes: this file is the whole path of one webhook delivery,
// from FastCGI params to the answer, in the order of the contract (docs/design.md):
//   method -> token -> endpoint -> content type -> length -> body -> signature
//   -> JSON and dedup key -> group commit -> answer (only after COMMIT).
#pragma once

#include <fcgiapp.h>

#include <memory>
#include <string>

#include "endpoints.h"
#include "event.h"
#include "fcgi_io.h"
#include "http.h"
#include "settings.h"
#include "writer.h"

namespace ipayout {

// Per-thread scratch: a parser and a body buffer reused across requests.
struct ThreadState {
  explicit ThreadState(const Settings& s, std::vector<DedupRule> rules)
      : parser(std::move(rules), s.body_limit), dedup_pointers(s.dedup_pointers) {}
  EventParser parser;
  std::string body;
  std::string dedup_pointers;  // what parser's rules were built from (SIGHUP may change it)
};

// The checks that need no body. Returns a response to send now, or nullopt and
// sets `endpoint` (valid while `snapshot` is held).
struct HeadCheck {
  std::optional<HttpResponse> response;
  std::shared_ptr<const EndpointMap> snapshot;
  const Endpoint* endpoint = nullptr;
};
HeadCheck check_head(const RequestHead& head, const EndpointCache& endpoints,
                     const Settings& settings);

bool is_json_content_type(std::string_view content_type);

// Signature and body checks for a known endpoint. On success fills `record`
// (except headers/remote address) and returns nullopt.
std::optional<HttpResponse> check_body(const RequestHead& head, const Endpoint& endpoint,
                                       const Settings& settings, int64_t now, EventParser& parser,
                                       const std::string& body, EventRecord& record);

// The answer for a store outcome.
HttpResponse store_response(const StoreResult& result, const Endpoint& endpoint,
                            const Settings& settings);

// Everything above, plus I/O, the one log line and the counters per request.
// Also answers GET /ipayout/metrics and /ipayout/health (nginx decides who
// may reach them: the example site exposes them on loopback only).
void handle_request(FCGX_Request& req, const Settings& settings, EndpointCache& endpoints,
                    Writer& writer, ThreadState& ts);

constexpr std::string_view kMetricsPath = "/ipayout/metrics";
constexpr std::string_view kHealthPath = "/ipayout/health";

}  // namespace ipayout
