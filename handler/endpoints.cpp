#include "endpoints.h"

#include <cctype>
#include <unordered_set>

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

void put_endpoint(EndpointMap& map, std::string token_hash, std::shared_ptr<const Endpoint> entry) {
  auto [it, added] = map.try_emplace(std::move(token_hash), entry);
  if (!added && it->second->token_until != 0 && entry->token_until == 0) it->second = entry;
}

std::shared_ptr<EndpointMap> merge_endpoints(const EndpointMap& old,
                                             const std::vector<EndpointEntries>& changed) {
  std::unordered_set<int64_t> ids;
  size_t added = 0;
  for (const auto& c : changed) {
    ids.insert(c.id);
    added += c.entries.size();
  }
  auto map = std::make_shared<EndpointMap>();
  map->reserve(old.size() + added);
  for (const auto& [hash, entry] : old) {
    if (!ids.count(entry->id)) map->emplace(hash, entry);
  }
  for (const auto& c : changed) {
    for (const auto& [hash, entry] : c.entries) put_endpoint(*map, hash, entry);
  }
  return map;
}

}  // namespace ipayout
