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

EndpointMap::EndpointMap() {
  for (auto& shard : shards_) shard = std::make_shared<Shard>();
  owned_.set();
}

EndpointMap::EndpointMap(const EndpointMap& other) : shards_(other.shards_), size_(other.size_) {}

EndpointMap::Shard& EndpointMap::own(size_t shard) {
  if (!owned_[shard]) {
    shards_[shard] = std::make_shared<Shard>(*shards_[shard]);
    owned_.set(shard);
  }
  return *shards_[shard];
}

void EndpointMap::put(std::string token_hash, Entry entry) {
  Shard& shard = own(shard_of(token_hash));
  auto [it, added] = shard.try_emplace(std::move(token_hash), entry);
  if (added) {
    ++size_;
  } else if (it->second->token_until != 0 && entry->token_until == 0) {
    it->second = std::move(entry);
  }
}

void EndpointMap::drop(size_t shard, const std::unordered_set<int64_t>& ids) {
  if (!owned_[shard]) {
    // Copy only what stays.
    auto kept = std::make_shared<Shard>();
    kept->reserve(shards_[shard]->size());
    for (const auto& [hash, entry] : *shards_[shard]) {
      if (!ids.count(entry->id)) kept->emplace(hash, entry);
    }
    size_ -= shards_[shard]->size() - kept->size();
    shards_[shard] = std::move(kept);
    owned_.set(shard);
    return;
  }
  Shard& s = *shards_[shard];
  for (auto it = s.begin(); it != s.end();) {
    if (ids.count(it->second->id)) {
      it = s.erase(it);
      --size_;
    } else {
      ++it;
    }
  }
}

std::shared_ptr<EndpointMap> merge_endpoints(const EndpointMap& old,
                                             const std::vector<EndpointEntries>& changed) {
  auto map = std::make_shared<EndpointMap>(old);
  std::unordered_set<int64_t> ids;
  std::unordered_set<size_t> shards;
  for (const auto& c : changed) {
    ids.insert(c.id);
    shards.insert(c.old_shards.begin(), c.old_shards.end());
  }
  for (size_t shard : shards) map->drop(shard, ids);
  for (const auto& c : changed) {
    for (const auto& [hash, entry] : c.entries) map->put(hash, entry);
  }
  return map;
}

}  // namespace ipayout
