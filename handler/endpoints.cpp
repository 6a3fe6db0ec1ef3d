#include "endpoints.h"

#include <cctype>

#include "crypto.h"

namespace ipayout {

std::optional<std::string_view> token_from_path(std::string_view path) {
  if (path.substr(0, kWebhookPathPrefix.size()) != kWebhookPathPrefix) return std::nullopt;
  std::string_view token = path.substr(kWebhookPathPrefix.size());
  if (token.size() < kMinTokenChars || token.size() > kMaxTokenChars) return std::nullopt;
  for (char c : token) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return std::nullopt;
  }
  return token;
}

std::string token_hash(std::string_view token) {
  return crypto::as_bytes(crypto::sha256(token));
}

std::string fastcgi_param_name(std::string_view header_name) {
  std::string out = "HTTP_";
  for (char c : header_name) {
    out.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  return out;
}

}  // namespace ipayout
