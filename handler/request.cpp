#include "request.h"

#include "metrics.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>

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
                     const Settings& settings) {
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
    out.response = error_response(503, "unavailable", "storage is unavailable, retry later");
    out.response->retry_after = settings.retry_after;
    return out;
  }
  auto it = out.snapshot->find(token_hash(*token));
  if (it == out.snapshot->end()) {
    out.response = error_response(404, "not_found", "no such webhook endpoint");
    return out;
  }
  out.endpoint = &it->second;
  if (!is_json_content_type(head.content_type)) {
    out.response =
        error_response(415, "unsupported_media_type", "Content-Type must be application/json");
    return out;
  }
  if (head.bad_content_length) {
    out.response = error_response(400, "bad_request", "Content-Length is not a number");
    return out;
  }
  if (head.content_length && *head.content_length > settings.body_limit) {
    out.response =
        error_response(413, "payload_too_large",
                       "body is larger than " + std::to_string(settings.body_limit) + " bytes");
    return out;
  }
  return out;
}

std::optional<HttpResponse> check_body(const RequestHead& head, const Endpoint& endpoint,
                                       const Settings& settings, int64_t now, EventParser& parser,
                                       const std::string& body, EventRecord& record) {
  SignatureVerdict verdict = SignatureVerdict::kNotChecked;
  if (endpoint.policy != SignaturePolicy::kOff) {
    verdict = verify_signature({endpoint.key, endpoint.notification_url, head.x_timestamp,
                                head.x_signature, body, now, settings.replay_window,
                                endpoint.hmac.get()});
  }
  record.signature = to_string(verdict);  // for the row, the log line and the metrics
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
  HttpResponse r = error_response(503, "unavailable", "storage is unavailable, retry later");
  r.retry_after = settings.retry_after;
  return r;
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

void log_request(std::string_view remote, const Endpoint* endpoint, std::string_view event,
                 const char* signature, const StoreResult* stored, const HttpResponse& r,
                 double latency_ms) {
  std::string line = "msg=request endpoint=";
  line += endpoint ? endpoint->name : "-";
  if (!event.empty()) {
    line += " event=";
    append_json_string(line, event);
  }
  if (stored && stored->id) line += " id=" + std::to_string(stored->id);
  line += " status=" + std::to_string(r.status);
  if (stored &&
      (stored->outcome == StoreOutcome::kAccepted || stored->outcome == StoreOutcome::kDuplicate)) {
    line += stored->outcome == StoreOutcome::kAccepted ? " outcome=accepted" : " outcome=duplicate";
  }
  if (!r.error_code.empty()) line += " error=" + r.error_code;
  if (stored && !stored->detail.empty()) {
    line += " detail=";
    append_json_string(line, stored->detail);
  }
  if (signature) line += std::string(" signature=") + signature;
  char latency[32];
  std::snprintf(latency, sizeof latency, " latency_ms=%.3f", latency_ms);
  line += latency;
  if (!remote.empty()) line += " remote=" + std::string(remote);
  if (r.status >= 500)
    spdlog::warn(line);
  else
    spdlog::info(line);
}

// Operator endpoints: served by the same pool, reachable only where nginx routes them.
std::optional<HttpResponse> operator_response(const RequestHead& head, Writer& writer) {
  if (head.path == kMetricsPath && head.method == "GET") {
    HttpResponse r;
    r.body = metrics::render();
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    return r;
  }
  if (head.path == kHealthPath && head.method == "GET") {
    if (writer.healthy()) {
      HttpResponse r;
      r.body = "{\"status\":\"ready\"}";
      return r;
    }
    HttpResponse r = error_response(503, "unavailable", "database not reachable");
    r.retry_after = 1;
    return r;
  }
  return std::nullopt;
}

}  // namespace

void handle_request(FCGX_Request& req, const Settings& settings, EndpointCache& endpoints,
                    Writer& writer, ThreadState& ts) {
  const auto started = std::chrono::steady_clock::now();
  RequestHead head = read_head(req);
  if (auto op = operator_response(head, writer)) {
    write_response(req, *op);
    return;
  }
  if (ts.dedup_pointers != settings.dedup_pointers) {  // reloaded by SIGHUP
    if (auto rules = parse_dedup_rules(settings.dedup_pointers)) {
      ts.parser.set_rules(std::move(rules.value()));
    }
    ts.dedup_pointers = settings.dedup_pointers;
  }
  HeadCheck hc = check_head(head, endpoints, settings);
  EventRecord record;
  std::optional<StoreResult> stored;
  std::optional<HttpResponse> response = std::move(hc.response);
  std::string event;  // kept for the log line: `record` is handed to the writer
  // The client address as stored and logged; "" when nginx sent none or junk.
  const std::string_view remote = valid_inet(head.remote_addr) ? head.remote_addr : "";

  if (!response) {
    switch (read_body(req, head.content_length, settings.body_limit,
                      EventParser::padded_capacity(0), ts.body)) {
      case BodyStatus::kTooLarge:
        response =
            error_response(413, "payload_too_large",
                           "body is larger than " + std::to_string(settings.body_limit) + " bytes");
        break;
      case BodyStatus::kIncomplete:
        response = error_response(400, "bad_request", "body shorter than Content-Length");
        break;
      case BodyStatus::kReadError:
        // The connection to nginx broke mid-body: nothing is wrong with the
        // delivery itself, so i-payout should send it again.
        response = error_response(503, "unavailable", "request body could not be read, retry");
        response->retry_after = settings.retry_after;
        break;
      case BodyStatus::kOk:
        break;
    }
  }
  if (!response) {
    response = check_body(head, *hc.endpoint, settings, static_cast<int64_t>(std::time(nullptr)),
                          ts.parser, ts.body, record);
  }
  if (!response) {
    record.headers_json = headers_json(req);
    record.remote_addr = std::string(remote);
    record.body = std::move(ts.body);  // the writer owns it now; the thread gets a new one
    event = record.event;
    stored = writer.store(std::move(record));
    response = store_response(*stored, *hc.endpoint, settings);
  }
  write_response(req, *response);
  // Per-thread buffers keep the size of ordinary bodies, not of the largest seen.
  constexpr size_t kKeepBytes = 64 * 1024;
  ts.parser.shrink_to(kKeepBytes);
  if (ts.body.capacity() > kKeepBytes) std::string().swap(ts.body);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const double ms = seconds * 1000;
  metrics::count_request(hc.endpoint ? hc.endpoint->id : 0,
                         hc.endpoint ? std::string_view(hc.endpoint->name) : std::string_view(),
                         response->status, seconds);
  if (stored && stored->outcome == StoreOutcome::kAccepted) metrics::count_event(event);
  if (stored && stored->outcome == StoreOutcome::kDuplicate) {
    metrics::count_duplicate(hc.endpoint->id, hc.endpoint->name);
  }
  if (response->status == 401 && record.signature) {
    metrics::count_signature_failure(record.signature);  // missing, invalid or expired
  }
  log_request(remote, hc.endpoint, event, record.signature, stored ? &*stored : nullptr, *response,
              ms);
}

}  // namespace ipayout
