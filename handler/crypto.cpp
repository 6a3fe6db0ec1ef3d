#include "crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <memory>
#include <stdexcept>
#include <vector>

namespace ipayout::crypto {
namespace {

// Fetched once per process. EVP_sha256() and the one-shot HMAC() look the
// algorithm up in OpenSSL 3's provider store on every call, which costs more
// than hashing a webhook body and takes a lock shared by all request threads.
const EVP_MD* sha256_md() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (!md) throw std::runtime_error("OpenSSL has no SHA256");
  return md;
}

EVP_MAC* hmac_algorithm() {
  static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!mac) throw std::runtime_error("OpenSSL has no HMAC");
  return mac;
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct MacCtxFree {
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
};

}  // namespace

Digest sha256(std::string_view data) {
  return sha256({data});
}

Digest sha256(std::initializer_list<std::string_view> parts) {
  // One context per thread, reset per call: no allocation per request.
  thread_local std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  Digest out{};
  unsigned int len = 0;
  bool ok = ctx && EVP_DigestInit_ex2(ctx.get(), sha256_md(), nullptr) == 1;
  for (std::string_view p : parts) ok = ok && EVP_DigestUpdate(ctx.get(), p.data(), p.size()) == 1;
  if (!ok || EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 || len != out.size()) {
    throw std::runtime_error("SHA-256 failed");
  }
  return out;
}

HmacKey::HmacKey(std::string_view key) : ctx_(EVP_MAC_CTX_new(hmac_algorithm())) {
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                         OSSL_PARAM_construct_end()};
  // OpenSSL reads an empty key as "keep the previous key". HMAC pads every key
  // shorter than a block with zero bytes, so the one-byte key "\0" is the same
  // key as the empty one (policy `off` endpoints may have no key).
  static const unsigned char kZero = 0;
  const auto* bytes = key.empty() ? &kZero : reinterpret_cast<const unsigned char*>(key.data());
  if (!ctx_ || EVP_MAC_init(ctx_, bytes, key.empty() ? 1 : key.size(), params) != 1) {
    EVP_MAC_CTX_free(ctx_);
    throw std::runtime_error("HMAC key setup failed");
  }
}

HmacKey::~HmacKey() {
  EVP_MAC_CTX_free(ctx_);
}

Digest HmacKey::mac(const Digest& message) const {
  std::unique_ptr<EVP_MAC_CTX, MacCtxFree> c(EVP_MAC_CTX_dup(ctx_));
  Digest out{};
  size_t len = 0;
  if (!c || EVP_MAC_update(c.get(), message.data(), message.size()) != 1 ||
      EVP_MAC_final(c.get(), out.data(), &len, out.size()) != 1 || len != out.size()) {
    throw std::runtime_error("HMAC(sha256) failed");
  }
  return out;
}

LazyHmacKey::~LazyHmacKey() {
  delete prepared_.load(std::memory_order_acquire);
}

const HmacKey& LazyHmacKey::prepare() const {
  auto made = std::make_unique<const HmacKey>(key_);
  const HmacKey* expected = nullptr;
  if (prepared_.compare_exchange_strong(expected, made.get(), std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
    return *made.release();
  }
  return *expected;  // another thread was first; `made` is freed
}

Digest hmac_sha256(std::string_view key, const Digest& message) {
  return HmacKey(key).mac(message);
}

std::string base64(const unsigned char* data, size_t len) {
  std::string out(4 * ((len + 2) / 3) + 1, '\0');
  int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(len));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string hex(const unsigned char* data, size_t len) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (size_t i = 0; i < len; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 0xf]);
  }
  return out;
}

bool equal_constant_time(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string random_token(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed: no entropy");
  }
  std::string b64 = base64(raw.data(), raw.size());
  // base64 -> base64url, unpadded: safe in a URL path without escaping.
  std::string out;
  out.reserve(b64.size());
  for (char c : b64) {
    if (c == '+')
      out.push_back('-');
    else if (c == '/')
      out.push_back('_');
    else if (c != '=')
      out.push_back(c);
  }
  return out;
}

}  // namespace ipayout::crypto
