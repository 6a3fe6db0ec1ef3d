// Thin wrappers over OpenSSL 3: nothing here implements a primitive by hand.
#pragma once

#include <openssl/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace ipayout::crypto {

using Digest = std::array<unsigned char, 32>;

Digest sha256(std::string_view data);
// SHA-256 of the pieces one after another, as if joined: the signed text
// "<timestamp>#<url>#<body>" is hashed without copying the body.
Digest sha256(std::initializer_list<std::string_view> parts);

// An HMAC-SHA256 key, set up once: OpenSSL derives the key's inner and outer
// hash states when the key is set, and mac() starts from a copy of them. Built
// when endpoints load, so a request pays two SHA-256 blocks, not a MAC fetch
// and key setup. Immutable once built: threads share it (mac() only reads it).
class HmacKey {
 public:
  explicit HmacKey(std::string_view key);
  ~HmacKey();
  HmacKey(const HmacKey&) = delete;
  HmacKey& operator=(const HmacKey&) = delete;

  Digest mac(const Digest& message) const;

 private:
  EVP_MAC_CTX* ctx_;
};

// An HmacKey made at its first use, then kept. A prepared HmacKey is about
// 1 KB of OpenSSL state (malloc'd, measured with mallinfo2), most of an
// endpoint's memory; with 100,000 endpoints most of them see no delivery
// between two loads, so the key is prepared by the first request that needs
// it instead of when the endpoints load. Thread-safe: threads that race on the
// first use may each build one; one is kept, the others are freed.
class LazyHmacKey {
 public:
  explicit LazyHmacKey(std::string key) : key_(std::move(key)) {}
  ~LazyHmacKey();
  LazyHmacKey(const LazyHmacKey&) = delete;
  LazyHmacKey& operator=(const LazyHmacKey&) = delete;

  // The prepared key (built now on the first call). Throws like HmacKey.
  const HmacKey& get() const {
    const HmacKey* k = prepared_.load(std::memory_order_acquire);
    return k ? *k : prepare();
  }
  bool prepared() const { return prepared_.load(std::memory_order_acquire) != nullptr; }

 private:
  const HmacKey& prepare() const;

  std::string key_;
  mutable std::atomic<const HmacKey*> prepared_{nullptr};
};

// One-off HMAC (tools and tests); the request path uses a prepared HmacKey.
Digest hmac_sha256(std::string_view key, const Digest& message);

std::string base64(const unsigned char* data, size_t len);  // standard, padded
std::string hex(const unsigned char* data, size_t len);
inline std::string hex(const Digest& d) {
  return hex(d.data(), d.size());
}
inline std::string as_bytes(const Digest& d) {
  return std::string(d.begin(), d.end());
}

// Constant-time for equal lengths; the length of a signature is not a secret.
bool equal_constant_time(std::string_view a, std::string_view b);

// `bytes` random bytes from the OpenSSL CSPRNG, base64url without padding.
std::string random_token(size_t bytes);

}  // namespace ipayout::crypto
