#include "fcgi_io.h"

#include <cstdlib>
#include <cstring>

namespace ipayout {
namespace {

constexpr size_t kMaxHeaderValue = 1024;
constexpr size_t kMaxHeadersJson = 16384;

std::optional<std::string_view> param(FCGX_Request& req, const char* name) {
  const char* v = FCGX_GetParam(name, req.envp);
  if (!v) return std::nullopt;
  return std::string_view(v);
}

std::string_view param_or_empty(FCGX_Request& req, const char* name) {
  return param(req, name).value_or(std::string_view());
}

}  // namespace

RequestHead read_head(FCGX_Request& req) {
  RequestHead h;
  h.method = param_or_empty(req, "REQUEST_METHOD");
  h.path = param_or_empty(req, "DOCUMENT_URI");
  if (h.path.empty()) {  // not nginx: fall back to REQUEST_URI without the query
    std::string_view uri = param_or_empty(req, "REQUEST_URI");
    h.path = uri.substr(0, uri.find('?'));
  }
  h.content_type = param_or_empty(req, "CONTENT_TYPE");
  h.remote_addr = param_or_empty(req, "REMOTE_ADDR");
  h.x_timestamp = param(req, "HTTP_X_TIMESTAMP");
  h.x_signature = param(req, "HTTP_X_SIGNATURE");
  if (auto cl = param(req, "CONTENT_LENGTH"); cl && !cl->empty()) {
    size_t n = 0;
    bool ok = cl->size() <= 18;
    for (char c : *cl) {
      if (c < '0' || c > '9')
        ok = false;
      else
        n = n * 10 + static_cast<size_t>(c - '0');
    }
    if (ok)
      h.content_length = n;
    else
      h.bad_content_length = true;
  }
  return h;
}

std::string headers_json(FCGX_Request& req, std::string_view also_drop) {
  std::string out = "{";
  for (char** p = req.envp; p && *p; ++p) {
    std::string_view kv(*p);
    if (kv.rfind("HTTP_", 0) != 0) continue;
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    if (!also_drop.empty() && kv.substr(0, eq) == also_drop) continue;
    std::string name(kv.substr(5, eq - 5));
    if (name == "AUTHORIZATION" || name == "COOKIE" || name == "PROXY_AUTHORIZATION") continue;
    for (auto& c : name) c = (c == '_') ? '-' : static_cast<char>(std::tolower(c));
    std::string_view value = kv.substr(eq + 1).substr(0, kMaxHeaderValue);
    // Escaping can make a value up to six times longer: measure what was
    // appended, and take it back if the object would pass its cap.
    const size_t mark = out.size();
    if (out.size() > 1) out.push_back(',');
    append_json_string(out, name);
    out.push_back(':');
    append_json_string(out, value);
    if (out.size() + 1 > kMaxHeadersJson) {  // + 1: the closing brace
      out.resize(mark);
      break;
    }
  }
  out.push_back('}');
  return out;
}

BodyStatus read_body(FCGX_Request& req, std::optional<size_t> content_length, size_t limit,
                     size_t padding, std::string& out) {
  out.clear();
  size_t want = content_length.value_or(limit + 1);
  if (content_length && *content_length > limit) return BodyStatus::kTooLarge;
  out.reserve(std::min(want, limit + 1) + padding);
  char buf[16384];
  while (out.size() < want) {
    size_t chunk = std::min(sizeof buf, want - out.size());
    int n = FCGX_GetStr(buf, static_cast<int>(chunk), req.in);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > limit) return BodyStatus::kTooLarge;
  }
  if (FCGX_GetError(req.in) != 0) return BodyStatus::kReadError;
  if (content_length && out.size() != *content_length) return BodyStatus::kIncomplete;
  if (out.capacity() < out.size() + padding) out.reserve(out.size() + padding);
  return BodyStatus::kOk;
}

bool finish_input(FCGX_Request& req) {
  // Enough for any error answered before the body was read that nginx let
  // through; beyond this, closing the connection is cheaper than reading.
  constexpr int kMaxDiscard = 64 * 1024;
  char buf[4096];
  for (int total = 0; total <= kMaxDiscard;) {
    int n = FCGX_GetStr(buf, sizeof buf, req.in);
    if (n <= 0) return FCGX_HasSeenEOF(req.in) && !FCGX_GetError(req.in);
    total += n;
  }
  return false;
}

void write_response(FCGX_Request& req, const HttpResponse& r) {
  std::string head;
  head.reserve(160);
  head += "Status: " + std::to_string(r.status) + " " + reason_phrase(r.status) + "\r\n";
  head += "Content-Type: " + r.content_type + "\r\n";
  head += "Cache-Control: no-store\r\n";
  if (r.retry_after > 0) head += "Retry-After: " + std::to_string(r.retry_after) + "\r\n";
  if (r.allow_post) head += "Allow: POST\r\n";
  head += "Content-Length: " + std::to_string(r.body.size()) + "\r\n\r\n";
  FCGX_PutStr(head.data(), static_cast<int>(head.size()), req.out);
  FCGX_PutStr(r.body.data(), static_cast<int>(r.body.size()), req.out);
}

}  // namespace ipayout
