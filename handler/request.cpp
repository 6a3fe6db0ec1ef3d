#include "request.h"

#include <cctype>
#include <chrono>
#include <ctime>
#include <utility>

namespace ipayout {

bool is_json_content_type(std::string_view ct) {
  std::string_view media = ct.substr(0, ct.find(';'));
  while (!media.empty() && media.back() == ' ') media.remove_suffix(1);
  while (!media.empty() && media.front() == ' ') media.remove_prefix(1);
  auto iequals = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(a[i])) != b[i]) return false;
    }
    return true;
  };
  if (iequals(media, "application/json")) return true;
  // Structured syntax suffix (RFC 6839), e.g. application/vnd.ipayout+json.
  return media.size() > 17 && iequals(media.substr(0, 12), "application/") &&
         iequals(media.substr(media.size() - 5), "+json");
}

HeadCheck check_head(const RequestHead& head, const EndpointCache& endpoints,
                     const Settings& settings, int64_t now) {
  HeadCheck out;
  if (head.method != "POST") {
    out.response = error_response(405, "method_not_allowed", "only POST is accepted here");
    out.response->allow_post = true;
    return out;
  }
  auto token = token_from_path(head.path);
  if (!token) {
    out.response = error_response(404, "not_found", "no such webhook endpoint");
    return out;
  }
  out.snapshot = endpoints.snapshot();
  if (!out.snapshot) {
    // Never loaded: we cannot tell a real endpoint from a wrong one. A 404 here
    // would make i-payout drop a real event; 503 makes it retry.
    out.response = unavailable_response(settings.retry_after);
    return out;
  }
  const Endpoint* endpoint = out.snapshot->find(token_hash(*token));
  // A previous token after its grace: the same 404 as a token never issued.
  // Checked per request, as the endpoints are reloaded only when they change.
  if (!endpoint || (endpoint->token_until != 0 && now >= endpoint->token_until)) {
    out.response = error_response(404, "not_found", "no such webhook endpoint");
    return out;
  }
  out.endpoint = endpoint;
  if (head.bad_content_length) {
    out.response = error_response(400, "bad_request", "Content-Length is not a number");
    return out;
  }
  if (head.content_length && *head.content_length > settings.body_limit) {
    out.response = payload_too_large_response(settings.body_limit);
    return out;
  }
  return out;
}

std::optional<HttpResponse> check_required_header(const Endpoint& endpoint,
                                                  std::optional<std::string_view> value) {
  if (endpoint.required_header_name.empty()) return std::nullopt;
  const std::string& want = endpoint.required_header_value;
  // The length is compared first (it is not what is secret), then the bytes in
  // constant time. Neither the value sent nor the one wanted goes into the answer.
  if (!value || !crypto::equal_constant_time(*value, want)) {
    return error_response(401, "required_header_invalid",
                          "a header this endpoint requires is missing or wrong");
  }
  return std::nullopt;
}

std::optional<HttpResponse> check_body(const RequestHead& head, const Endpoint& endpoint,
                                       const Settings& settings, int64_t now, EventParser& parser,
                                       const std::string& body, EventRecord& record) {
  SignatureVerdict verdict = SignatureVerdict::kNotChecked;
  if (endpoint.policy != SignaturePolicy::kOff) {
    verdict = verify_signature(
        {endpoint.key, endpoint.notification_url, head.x_timestamp, head.x_signature, body, now,
         settings.replay_window, endpoint.hmac ? &endpoint.hmac->get() : nullptr},
        {endpoint.previous_key, endpoint.previous_hmac.get(), endpoint.previous_key_until});
  }
  record.signature = verdict;  // for the row, the log line and the metrics
  if (!accepted_by(endpoint.policy, verdict)) {
    switch (verdict) {
      case SignatureVerdict::kMissing:
        return error_response(401, "signature_missing",
                              "x-signature and x-timestamp headers are required");
      case SignatureVerdict::kExpired:
        return error_response(401, "timestamp_out_of_window",
                              "x-timestamp is outside the replay window");
      default:
        return error_response(401, "signature_invalid", "x-signature does not match");
    }
  }
  // A body one of the endpoint's keys signed is i-payout's, and taken as JSON
  // whatever its Content-Type says (i-payout's content-type options are not
  // documented; the header is kept with the event). A body nothing vouches for
  // (policy record or off, signature missing or wrong) must at least say it
  // is JSON.
  if (!signature_matched(verdict) && !is_json_content_type(head.content_type)) {
    return error_response(415, "unsupported_media_type",
                          "Content-Type must be application/json unless the body is signed");
  }
  Result<ParsedEvent> parsed = parser.parse(body);
  if (!parsed) return error_response(400, parsed.error().code, parsed.error().message);
  record.endpoint_id = endpoint.id;
  record.event = std::move(parsed->event);
  record.dedup_key = std::move(parsed->dedup_key);
  record.jsonb_compatible = parsed->jsonb_compatible;
  return std::nullopt;
}

HttpResponse store_response(const StoreResult& result, const Endpoint& endpoint,
                            const Settings& settings) {
  switch (result.outcome) {
    case StoreOutcome::kAccepted:
    case StoreOutcome::kDuplicate: {
      HttpResponse r;
      r.status = endpoint.success_status;
      const char* status = result.outcome == StoreOutcome::kAccepted ? "accepted" : "duplicate";
      r.body = render_success_body(endpoint.success_body, status, result.id);
      if (!endpoint.success_body.empty() && endpoint.success_body.front() != '{') {
        r.content_type = "text/plain; charset=utf-8";
      }
      return r;
    }
    case StoreOutcome::kRejected:
      return error_response(400, "unstorable", "the database refused this event's data");
    case StoreOutcome::kUnavailable:
      break;
  }
  return unavailable_response(settings.retry_after);
}

namespace {

bool valid_inet(std::string_view addr) {
  if (addr.empty() || addr.size() > 45) return false;
  for (char c : addr) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
              c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

// The answer for a body read_body did not deliver whole; nullopt when it did.
std::optional<HttpResponse> body_response(BodyStatus status, const Settings& settings) {
  switch (status) {
    case BodyStatus::kTooLarge:
      return payload_too_large_response(settings.body_limit);
    case BodyStatus::kIncomplete:
      return error_response(400, "bad_request", "body shorter than Content-Length");
    case BodyStatus::kReadError:
      // The connection to nginx broke mid-body: nothing is wrong with the
      // delivery itself, so i-payout should send it again.
      return unavailable_response(settings.retry_after, "request body could not be read, retry");
    case BodyStatus::kOk:
      break;
  }
  return std::nullopt;
}

}  // namespace

void ThreadState::trim() {
  constexpr size_t kKeepBytes = 64 * 1024;
  parser.shrink_to(kKeepBytes);
  if (body.capacity() > kKeepBytes) std::string().swap(body);
}

Delivery handle_delivery(FCGX_Request& req, const RequestHead& head, const Settings& settings,
                         const EndpointCache& endpoints, Writer& writer, ThreadState& ts,
                         std::chrono::steady_clock::time_point started) {
  Delivery d;
  d.started = started;
  // The client address as stored and logged; "" when nginx sent none or junk.
  if (valid_inet(head.remote_addr)) d.remote = std::string(head.remote_addr);
  // The rules of this request's snapshot, compiled when the settings were read.
  if (ts.parser.rules() != settings.dedup_rules) ts.parser.set_rules(settings.dedup_rules);

  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  HeadCheck hc = check_head(head, endpoints, settings, now);
  d.snapshot = std::move(hc.snapshot);
  d.endpoint = hc.endpoint;
  std::optional<HttpResponse> response = std::move(hc.response);
  if (!response && !d.endpoint->required_header_name.empty()) {
    const char* v = FCGX_GetParam(d.endpoint->required_header_param.c_str(), req.envp);
    response =
        check_required_header(*d.endpoint, v ? std::optional<std::string_view>(v) : std::nullopt);
  }
  if (!response) {
    response = body_response(read_body(req, head.content_length, settings.body_limit,
                                       EventParser::padded_capacity(0), ts.body),
                             settings);
  }
  EventRecord record;
  if (!response) {
    response = check_body(head, *d.endpoint, settings, now, ts.parser, ts.body, record);
    d.signature = record.signature;
  }
  if (!response) {
    // The required header is a secret: it is not kept with the event.
    record.headers_json = headers_json(req, d.endpoint->required_header_param);
    record.remote_addr = d.remote;
    record.body = std::move(ts.body);  // the writer owns it now; the thread gets a new one
    d.event = record.event;            // kept for the log line and the counters
    d.stored = writer.store(std::move(record));
    response = store_response(*d.stored, *d.endpoint, settings);
  }
  write_response(req, *response);
  d.status = response->status;
  d.error_code = std::move(response->error_code);
  return d;
}

}  // namespace ipayout
