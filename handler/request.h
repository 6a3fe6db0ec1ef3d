// Where a webhook delivery goes: this file is the whole path of one, from the
// request head to the answer, in the order of the contract (docs/design.md):
//   method -> token (and its grace) -> endpoint -> length -> required header
//   -> body -> signature -> content type (unless signed) -> JSON and dedup key
//   -> group commit -> answer (only after COMMIT).
// The operator routes are in operator_routes.h; the access log line and the
// counters, written after the answer went out, in access_log.h.
#pragma once

#include <fcgiapp.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "endpoints.h"
#include "event.h"
#include "fcgi_io.h"
#include "http.h"
#include "settings.h"
#include "signature.h"
#include "writer.h"

namespace ipayout {

// Per-thread scratch: a parser and a body buffer reused across requests.
struct ThreadState {
  explicit ThreadState(const Settings& s) : parser(DedupRules{}, s.body_limit) {}
  EventParser parser;
  std::string body;
  // Per-thread buffers keep the size of ordinary bodies, not of the largest seen.
  void trim();
};

// The checks that need no body. Returns a response to send now, or nullopt and
// sets `endpoint` (valid while `snapshot` is held). `now` (unix seconds) ends
// a previous token's grace.
struct HeadCheck {
  std::optional<HttpResponse> response;
  std::shared_ptr<const EndpointMap> snapshot;
  const Endpoint* endpoint = nullptr;
};
HeadCheck check_head(const RequestHead& head, const EndpointCache& endpoints,
                     const Settings& settings, int64_t now);

// The endpoint's required header, if it has one: `value` is what the request
// carried (nullopt: absent). 401 required_header_invalid unless equal.
std::optional<HttpResponse> check_required_header(const Endpoint& endpoint,
                                                  std::optional<std::string_view> value);

bool is_json_content_type(std::string_view content_type);

// Signature and body checks for a known endpoint. On success fills `record`
// (except headers/remote address) and returns nullopt. Sets record.signature
// either way. The Content-Type must be JSON only when no key of the endpoint
// signed the body (415).
std::optional<HttpResponse> check_body(const RequestHead& head, const Endpoint& endpoint,
                                       const Settings& settings, int64_t now, EventParser& parser,
                                       const std::string& body, EventRecord& record);

// The answer for a store outcome.
HttpResponse store_response(const StoreResult& result, const Endpoint& endpoint,
                            const Settings& settings);

// One delivery, answered: what the access log and the counters need once the
// answer has gone out. Owns its data (the request's params are gone by then).
struct Delivery {
  std::chrono::steady_clock::time_point started;
  std::shared_ptr<const EndpointMap> snapshot;  // keeps `endpoint` valid
  const Endpoint* endpoint = nullptr;           // nullptr: no endpoint matched
  std::string event;                            // "" unless the body parsed
  std::optional<SignatureVerdict> signature;    // set once the signature was looked at
  std::optional<StoreResult> stored;            // set once the writer was asked
  std::string remote;                           // client address; "" when none or junk
  int status = 0;
  std::string error_code;
};

// Everything above plus the request's I/O: reads the body, checks it, hands
// it to the writer and writes the answer into `req` (sent when the request
// is finished). `started` is when the request was taken.
Delivery handle_delivery(FCGX_Request& req, const RequestHead& head, const Settings& settings,
                         const EndpointCache& endpoints, Writer& writer, ThreadState& ts,
                         std::chrono::steady_clock::time_point started);

}  // namespace ipayout
