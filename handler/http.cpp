#include "http.h"

#include <simdjson.h>

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

void append_json_string(std::string& out, std::string_view s) {
  static const char hexdigits[] = "0123456789abcdef";
  const bool utf8 = simdjson::validate_utf8(s.data(), s.size());
  out.push_back('"');
  for (unsigned char c : s) {
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
        } else if (c >= 0x80 && !utf8) {
          out += "\xEF\xBF\xBD";  // U+FFFD
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
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
