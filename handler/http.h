// HTTP answers as data: every status the contract names, JSON error bodies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ipayout {

struct HttpResponse {
  int status = 200;
  std::string body;  // always JSON unless an endpoint's success body says otherwise
  std::string content_type = "application/json";
  std::string error_code;   // for the log line; "" on success
  int retry_after = 0;      // seconds; > 0 adds Retry-After (503)
  bool allow_post = false;  // adds Allow: POST (405)
};

// {"error":"<code>","message":"<message>"}. Messages are ours, never request data.
HttpResponse error_response(int status, std::string_view code, std::string_view message);

// 413 payload_too_large, whichever check found the body too large (its
// Content-Length, or the bytes actually read).
HttpResponse payload_too_large_response(size_t limit);

// 503 unavailable with Retry-After: i-payout delivers again after `retry_after`
// seconds. `message` says what is unavailable; every 503 is built here.
HttpResponse unavailable_response(int retry_after,
                                  std::string_view message = "storage is unavailable, retry later");

const char* reason_phrase(int status);

// Appends `s` as a JSON string literal (quotes included). Invalid UTF-8 bytes
// become U+FFFD so the result is always valid JSON and valid jsonb input.
void append_json_string(std::string& out, std::string_view s);

// An endpoint's configured success body: "" gives {"status":"<status>","id":N};
// otherwise the template with {status} and {id} substituted.
std::string render_success_body(std::string_view tmpl, std::string_view status, int64_t id);

}  // namespace ipayout
