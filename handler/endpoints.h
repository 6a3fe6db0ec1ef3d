// Endpoints: which secret URL belongs to which merchant configuration. Workers
// keep an immutable snapshot keyed by SHA-256 of the token (the database never
// holds a token) and swap it whole when the table changes. A new snapshot
// shares the entries of the endpoints that did not change with the old one
// (merge_endpoints): one changed endpoint builds one entry, not all of them.
#pragma once

#include <array>
#include <atomic>
#include <bitset>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "crypto.h"
#include "signature.h"

namespace ipayout {

constexpr std::string_view kWebhookPathPrefix = "/ipayout/webhooks/";
constexpr size_t kMinTokenChars = 32;
constexpr size_t kMaxTokenChars = 128;
constexpr size_t kGeneratedTokenBytes = 32;  // 256 bits from the CSPRNG

struct Endpoint {
  int64_t id = 0;
  std::string name;
  std::string key;  // i-payout key: a secret, never logged
  // `key` for HMAC, prepared at the first delivery that needs it; nullptr: per call.
  std::shared_ptr<const crypto::LazyHmacKey> hmac;
  std::string notification_url;  // exactly as registered with i-payout; it is signed
  SignaturePolicy policy = SignaturePolicy::kRequired;
  int success_status = 200;
  std::string success_body;  // "" = default JSON; else a template with {status} and {id}
  // Key rotation: the previous key verifies while now < previous_key_until.
  std::string previous_key;  // "" = none; a secret like `key`
  std::shared_ptr<const crypto::LazyHmacKey> previous_hmac;
  int64_t previous_key_until = 0;  // unix seconds
  // Token rotation: the map entry of a previous token is a copy of the
  // endpoint with the previous notification URL (what i-payout signs for the
  // old URL) and the end of its grace; 0 for the current token.
  int64_t token_until = 0;  // unix seconds; the entry answers 404 from then on
  // merchantWebHookAdditionalHeaderDetails: a header every delivery must carry.
  std::string required_header_name;   // lower case, "" = none
  std::string required_header_param;  // its FastCGI param: HTTP_X_NAME
  std::string required_header_value;  // a secret: never logged, never shown
};

// HTTP_<NAME upper-cased, '-' -> '_'>: how nginx hands a request header over.
std::string fastcgi_param_name(std::string_view header_name);

// The token from a request path, or nullopt for anything that is not exactly
// /ipayout/webhooks/<32..128 URL-safe characters>.
std::optional<std::string_view> token_from_path(std::string_view path);

// sha256(token) as raw bytes: the lookup key here and `token_hash` in the table.
std::string token_hash(std::string_view token);

// By token_hash, in 256 shards by its first byte (a SHA-256: uniform).
// Entries are immutable and shared between snapshots, and so are the shards
// a change does not touch: a new snapshot for one changed endpoint copies the
// one or two shards that hold its entries (1/256 of the map each), not the
// map. A lookup is one hash in one shard, as with one flat map, and one
// pointer more.
class EndpointMap {
 public:
  using Entry = std::shared_ptr<const Endpoint>;
  using Shard = std::unordered_map<std::string, Entry>;
  static constexpr size_t kShards = 256;
  static size_t shard_of(const std::string& token_hash) {
    return token_hash.empty() ? 0 : static_cast<unsigned char>(token_hash[0]);
  }

  EndpointMap();
  EndpointMap(const EndpointMap& other);  // shares every shard of `other`
  EndpointMap& operator=(const EndpointMap&) = delete;

  // The entry of a token hash; nullptr: none.
  const Endpoint* find(const std::string& token_hash) const {
    const Shard& shard = *shards_[shard_of(token_hash)];
    auto it = shard.find(token_hash);
    return it == shard.end() ? nullptr : it->second.get();
  }
  size_t size() const { return size_; }
  const Shard& shard(size_t i) const { return *shards_[i]; }
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& shard : shards_) {
      for (const auto& [hash, entry] : *shard) f(hash, entry);
    }
  }

  // Adds one entry. Token hashes are unique per column, but nothing stops one
  // endpoint's previous token from being another's current one: the current
  // token wins, whichever was added first.
  void put(std::string token_hash, Entry entry);
  // Drops the entries of these endpoints from one shard.
  void drop(size_t shard, const std::unordered_set<int64_t>& ids);

 private:
  Shard& own(size_t shard);  // the shard, copied first if it is shared

  std::array<std::shared_ptr<Shard>, kShards> shards_;  // never null
  std::bitset<kShards> owned_;  // shards this map made: the only ones it changes
  size_t size_ = 0;
};

// One endpoint's entries: its current token and, during a token rotation's
// grace, its previous one (a copy with the previous URL and token_until).
// None: the endpoint is disabled or gone.
struct EndpointEntries {
  int64_t id = 0;
  std::vector<std::pair<std::string, EndpointMap::Entry>> entries;
  // The shards that hold this endpoint's entries in the snapshot it changes.
  std::vector<size_t> old_shards;
};

// `old` with the endpoints in `changed` replaced: every entry of their ids
// (both tokens) dropped from their old shards, then their new entries added.
// Every other shard is shared with `old`, not copied.
std::shared_ptr<EndpointMap> merge_endpoints(const EndpointMap& old,
                                             const std::vector<EndpointEntries>& changed);

class EndpointCache {
 public:
  // nullptr until the first successful load: then requests get 503, not 404.
  std::shared_ptr<const EndpointMap> snapshot() const { return std::atomic_load(&map_); }
  void replace(std::shared_ptr<const EndpointMap> m) { std::atomic_store(&map_, std::move(m)); }

 private:
  std::shared_ptr<const EndpointMap> map_;
};

}  // namespace ipayout
