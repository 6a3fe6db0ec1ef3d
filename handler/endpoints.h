// Endpoints: which secret URL belongs to which merchant configuration. Workers
// keep an immutable snapshot keyed by SHA-256 of the token (the database never
// holds a token) and swap it whole when the table changes. A new snapshot
// shares the entries of the endpoints that did not change with the old one
// (merge_endpoints): one changed endpoint builds one entry, not all of them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
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

// By token_hash. Entries are immutable and shared between snapshots: a
// lookup is one hash and one pointer, as cheap as with the entries inline.
using EndpointMap = std::unordered_map<std::string, std::shared_ptr<const Endpoint>>;

// One endpoint's entries: its current token and, during a token rotation's
// grace, its previous one (a copy with the previous URL and token_until).
// None: the endpoint is disabled or gone.
struct EndpointEntries {
  int64_t id = 0;
  std::vector<std::pair<std::string, std::shared_ptr<const Endpoint>>> entries;
};

// Adds one entry. Token hashes are unique per column, but nothing stops one
// endpoint's previous token from being another's current one: the current
// token wins, whichever was added first.
void put_endpoint(EndpointMap& map, std::string token_hash, std::shared_ptr<const Endpoint> entry);

// `old` with the endpoints in `changed` replaced: every entry of their ids
// (both tokens) dropped, then their new entries added. The entries of every
// other endpoint are shared with `old`, not copied.
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
