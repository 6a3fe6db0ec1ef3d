// Thin wrappers over OpenSSL 3: nothing here implements a primitive by hand.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ipayout::crypto {

using Digest = std::array<unsigned char, 32>;

Digest sha256(std::string_view data);
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
