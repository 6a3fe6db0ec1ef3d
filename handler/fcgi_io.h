// FastCGI I/O: what a request looks like after nginx (params and body), and how
// an HttpResponse goes back. Nothing here decides anything.
#pragma once

#include <fcgiapp.h>

#include <optional>
#include <string>
#include <string_view>

#include "http.h"

namespace ipayout {

struct RequestHead {
  std::string_view method;
  std::string_view path;          // DOCUMENT_URI: nginx's normalised $uri, no query
  std::string_view content_type;  // "" when absent
  std::string_view remote_addr;
  std::optional<std::string_view> x_timestamp;
  std::optional<std::string_view> x_signature;
  std::optional<size_t> content_length;  // nullopt when absent
  bool bad_content_length = false;       // present but not a number
};

// Views point into the request's params: valid until FCGX_Finish_r.
RequestHead read_head(FCGX_Request& req);

// The request headers worth keeping with the event, as a JSON object: every
// HTTP_* param (i-payout lets merchants add static headers) except credentials,
// each value capped, the whole capped; names lower-case with '-' (x-signature).
// `also_drop` is one more param to leave out (an endpoint's required header,
// a secret), e.g. "HTTP_X_SHARED"; "" = none.
std::string headers_json(FCGX_Request& req, std::string_view also_drop = {});

// kIncomplete: the body ended before Content-Length (the client's fault, 400);
// kReadError: reading failed (our side or nginx's: 503, i-payout retries).
enum class BodyStatus { kOk, kTooLarge, kIncomplete, kReadError };

// Reads the body into `out` (cleared first; capacity left for simdjson padding).
// With a Content-Length, exactly that many bytes must arrive; without one, reads
// to the end. More than `limit` bytes is kTooLarge.
BodyStatus read_body(FCGX_Request& req, std::optional<size_t> content_length, size_t limit,
                     size_t padding, std::string& out);

void write_response(FCGX_Request& req, const HttpResponse& r);

// Reads what is left of the request body (an answer given before reading it,
// or the empty record that ends it) and drops it. True if the body ended, so
// the connection can carry the next request; false after a small cap.
bool finish_input(FCGX_Request& req);

}  // namespace ipayout
