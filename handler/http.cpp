#include "http.h"

#include <simdjson.h>

#include <string>

namespace ipayout {

HttpResponse error_response(int status, std::string_view code, std::string_view message) {
  HttpResponse r;
  r.status = status;
  r.error_code = std::string(code);
  r.body.reserve(32 + code.size() + message.size());
  r.body += "{\"error\":";
  append_json_string(r.body, code);
  r.body += ",\"message\":";
  append_json_string(r.body, message);
  r.body += "}";
  return r;
}

HttpResponse payload_too_large_response(size_t limit) {
  return error_response(413, "payload_too_large",
                        "body is larger than " + std::to_string(limit) + " bytes");
}

HttpResponse unavailable_response(int retry_after, std::string_view message) {
  HttpResponse r = error_response(503, "unavailable", message);
  r.retry_after = retry_after;
  return r;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

namespace {

// Length of the UTF-8 sequence a lead byte announces (0 = not a lead byte).
size_t utf8_length(unsigned char lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static const char hexdigits[] = "0123456789abcdef";
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Copy a valid sequence whole; anything else becomes one U+FFFD per byte.
      size_t n = utf8_length(c);
      if (n && i + n <= s.size() && simdjson::validate_utf8(s.data() + i, n)) {
        out.append(s.data() + i, n);
        i += n;
      } else {
        out += "\xEF\xBF\xBD";
        ++i;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out.push_back(hexdigits[c >> 4]);
          out.push_back(hexdigits[c & 0xf]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
}

std::string render_success_body(std::string_view tmpl, std::string_view status, int64_t id) {
  if (tmpl.empty()) {
    std::string out = "{\"status\":\"";
    out.append(status).append("\",\"id\":").append(std::to_string(id)).append("}");
    return out;
  }
  std::string out;
  out.reserve(tmpl.size() + 16);
  for (size_t i = 0; i < tmpl.size();) {
    if (tmpl.compare(i, 8, "{status}") == 0) {
      out.append(status);
      i += 8;
    } else if (tmpl.compare(i, 4, "{id}") == 0) {
      out.append(std::to_string(id));
      i += 4;
    } else {
      out.push_back(tmpl[i++]);
    }
  }
  return out;
}

}  // namespace ipayout
