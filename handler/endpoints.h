// Endpoints: which secret URL belongs to which merchant configuration. Workers
// keep an immutable snapshot keyed by SHA-256 of the token (the database never
// holds a token) and swap it whole when the table changes.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

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
  std::string key;                              // i-payout key: a secret, never logged
  std::shared_ptr<const crypto::HmacKey> hmac;  // `key`, prepared when endpoints load
  std::string notification_url;                 // exactly as registered with i-payout; it is signed
  SignaturePolicy policy = SignaturePolicy::kRequired;
  int success_status = 200;
  std::string success_body;  // "" = default JSON; else a template with {status} and {id}
  // Key rotation: the previous key verifies while now < previous_key_until.
  std::string previous_key;  // "" = none; a secret like `key`
  std::shared_ptr<const crypto::HmacKey> previous_hmac;
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

using EndpointMap = std::unordered_map<std::string, Endpoint>;  // by token_hash

class EndpointCache {
 public:
  // nullptr until the first successful load: then requests get 503, not 404.
  std::shared_ptr<const EndpointMap> snapshot() const { return std::atomic_load(&map_); }
  void replace(std::shared_ptr<const EndpointMap> m) { std::atomic_store(&map_, std::move(m)); }

 private:
  std::shared_ptr<const EndpointMap> map_;
};

}  // namespace ipayout
