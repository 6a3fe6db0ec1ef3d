// Known-answer tests for the OpenSSL wrappers in handler/crypto.h. Expected
// values come from RFC 6234 / RFC 4648 or from an independent implementation
// (Python's hashlib/hmac), never from the code under test.
#include "crypto.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ipayout::crypto {
namespace {

std::string b64(std::string_view s) {
  return base64(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

TEST(Sha256, AbcKnownVector) {
  // FIPS 180-2 / RFC 6234 test vector.
  EXPECT_EQ(hex(sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, EmptyInputKnownVector) {
  EXPECT_EQ(hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, HashesEmbeddedNulBytes) {
  // The whole view is hashed, not a C string up to the first NUL.
  const std::string with_nul("a\0b", 3);
  EXPECT_NE(hex(sha256(with_nul)), hex(sha256("a")));
}

// hmac_sha256 only takes a 32-byte message (the signature scheme MACs a digest),
// and none of the RFC 4231 messages is 32 bytes long. So these use the RFC 4231
// keys with message = SHA-256("abc"); the expected MACs were computed with
// Python: hmac.new(key, hashlib.sha256(b"abc").digest(), hashlib.sha256).
TEST(HmacSha256, Rfc4231Case1KeyOverKnownDigest) {
  const std::string key(20, '\x0b');
  EXPECT_EQ(hex(hmac_sha256(key, sha256("abc"))),
            "c4bc707beef4ffb9e89e9e5c177896ef8c2b601853b2ded027fa7b86942026a5");
}

TEST(HmacSha256, Rfc4231Case2KeyOverKnownDigest) {
  EXPECT_EQ(hex(hmac_sha256("Jefe", sha256("abc"))),
            "232c2669cb503fb8cdcb22ab38171d82809faa9dd6ad5b92eab1ae43616b9924");
}

TEST(HmacSha256, Rfc4231Case6KeyLongerThanBlockSize) {
  // A 131-byte key is hashed first (RFC 2104): exercises that path.
  const std::string key(131, '\xaa');
  EXPECT_EQ(hex(hmac_sha256(key, sha256("abc"))),
            "4b29c635ed8d0cbf3a67bcbe7b5d1c585ffb8c3d35383650b5813102dbb145c0");
}

TEST(HmacSha256, DifferentKeysGiveDifferentMacs) {
  EXPECT_NE(hmac_sha256("key-a", sha256("abc")), hmac_sha256("key-b", sha256("abc")));
}

TEST(HmacSha256, EmptyKeyKnownVector) {
  // Python: hmac.new(b"", hashlib.sha256(b"abc").digest(), hashlib.sha256).
  // (HmacKey stands in "\0" for the empty key: the same key once zero-padded.)
  EXPECT_EQ(hex(hmac_sha256("", sha256("abc"))),
            "0b18f2bc0fb546053597876e4b0fbe81378ec3ebeb5f811cec8fbba0b66497fa");
}

TEST(HmacKey, PreparedKeyGivesTheSameMacEveryTime) {
  // mac() must start from the key's state on every call, never from the last
  // message: a prepared key is shared by all requests of an endpoint.
  const HmacKey key("Jefe");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(hex(key.mac(sha256("abc"))),
              "232c2669cb503fb8cdcb22ab38171d82809faa9dd6ad5b92eab1ae43616b9924");
    EXPECT_EQ(key.mac(sha256("other")), hmac_sha256("Jefe", sha256("other")));
  }
}

TEST(Sha256, PiecesHashAsIfJoined) {
  EXPECT_EQ(sha256({"12", "#", "https://x/y", "#", "{}"}), sha256("12#https://x/y#{}"));
  EXPECT_EQ(sha256({"", "abc", ""}), sha256("abc"));
  EXPECT_EQ(hex(sha256({})), hex(sha256("")));
}

TEST(Base64, Rfc4648PaddingCases) {
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foo"), "Zm9v");
  EXPECT_EQ(b64("foob"), "Zm9vYg==");
  EXPECT_EQ(b64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
}

TEST(Base64, StandardAlphabetWithPlusAndSlash) {
  const unsigned char bytes[] = {0xfb, 0xff, 0xbf};
  EXPECT_EQ(base64(bytes, sizeof bytes), "+/+/");
  const unsigned char two[] = {0xfb, 0xff};
  EXPECT_EQ(base64(two, sizeof two), "+/8=");
}

TEST(Base64, ThirtyTwoBytesIsFortyFourChars) {
  // The length verify_signature relies on.
  Digest d = sha256("abc");
  std::string s = base64(d.data(), d.size());
  EXPECT_EQ(s.size(), 44u);
  EXPECT_EQ(s.back(), '=');
  EXPECT_EQ(s, "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
}

TEST(Hex, LowerCaseTwoDigitsPerByte) {
  const unsigned char bytes[] = {0x00, 0x0f, 0xa0, 0xff};
  EXPECT_EQ(hex(bytes, sizeof bytes), "000fa0ff");
  EXPECT_EQ(hex(bytes, 0), "");
}

TEST(AsBytes, RawDigestBytes) {
  Digest d = sha256("abc");
  std::string raw = as_bytes(d);
  ASSERT_EQ(raw.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(raw[0]), 0xba);
  EXPECT_EQ(static_cast<unsigned char>(raw[31]), 0xad);
}

TEST(RandomToken, ThirtyTwoBytesIsFortyThreeUrlSafeChars) {
  std::string t = random_token(32);
  EXPECT_EQ(t.size(), 43u);  // ceil(32 * 4 / 3), no padding
  for (char c : t) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    EXPECT_TRUE(ok) << "unexpected character '" << c << "' in " << t;
  }
}

TEST(RandomToken, OtherLengthsHaveNoPadding) {
  EXPECT_EQ(random_token(1).size(), 2u);
  EXPECT_EQ(random_token(2).size(), 3u);
  EXPECT_EQ(random_token(3).size(), 4u);
  EXPECT_EQ(random_token(48).size(), 64u);
  EXPECT_EQ(random_token(31).find('='), std::string::npos);
}

TEST(RandomToken, CallsDiffer) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) seen.insert(random_token(32));
  EXPECT_EQ(seen.size(), 100u);
}

TEST(RandomToken, UsesUrlSafeReplacementsEventually) {
  // Over many tokens both '-' and '_' (base64url for '+' and '/') must show up;
  // with 100 * 43 characters the chance of missing either is negligible.
  bool dash = false, underscore = false;
  for (int i = 0; i < 100; ++i) {
    std::string t = random_token(32);
    dash = dash || t.find('-') != std::string::npos;
    underscore = underscore || t.find('_') != std::string::npos;
    EXPECT_EQ(t.find('+'), std::string::npos);
    EXPECT_EQ(t.find('/'), std::string::npos);
  }
  EXPECT_TRUE(dash);
  EXPECT_TRUE(underscore);
}

TEST(EqualConstantTime, ComparesWholeContent) {
  EXPECT_TRUE(equal_constant_time("", ""));
  EXPECT_TRUE(equal_constant_time("abc", "abc"));
  EXPECT_FALSE(equal_constant_time("abc", "abd"));
  EXPECT_FALSE(equal_constant_time("abc", "Abc"));
  EXPECT_FALSE(equal_constant_time("abc", "ab"));
  EXPECT_FALSE(equal_constant_time("ab", "abc"));
  EXPECT_FALSE(equal_constant_time("", "a"));
  // Bytes after an embedded NUL still count.
  EXPECT_FALSE(equal_constant_time(std::string("a\0b", 3), std::string("a\0c", 3)));
  EXPECT_TRUE(equal_constant_time(std::string("a\0b", 3), std::string("a\0b", 3)));
}

TEST(LazyHmacKey, PreparesOnFirstUseAndKeepsIt) {
  const LazyHmacKey key("Jefe");
  EXPECT_FALSE(key.prepared());  // loading an endpoint prepares nothing
  const HmacKey& first = key.get();
  EXPECT_TRUE(key.prepared());
  EXPECT_EQ(&key.get(), &first);
  EXPECT_EQ(first.mac(sha256("abc")), hmac_sha256("Jefe", sha256("abc")));
}

TEST(LazyHmacKey, ThreadsRacingOnTheFirstUseGetOneKey) {
  const LazyHmacKey key("Jefe");
  std::vector<const HmacKey*> got(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = &key.get(); });
  }
  for (auto& t : threads) t.join();
  for (const HmacKey* k : got) EXPECT_EQ(k, got[0]);
  EXPECT_EQ(got[0]->mac(sha256("x")), hmac_sha256("Jefe", sha256("x")));
}

}  // namespace
}  // namespace ipayout::crypto
