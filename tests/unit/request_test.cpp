// The request path's pure functions: content type, token from path, the checks
// before and after the body, and every answer the HTTP contract names
// (docs/design.md, "The HTTP contract"), without FastCGI or a database.
#include "request.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <memory>
#include <string>

#include "crypto.h"
#include "endpoints.h"
#include "http.h"
#include "signature.h"

namespace ipayout {
namespace {

// The worked example of docs/ipayout.md ("Worked example").
constexpr std::string_view kToken = "Zq3vK8mN2pR5tW7yB1cD4fG6hJ9kL0xA";  // 32 characters
constexpr std::string_view kKey = "pk_test_3f9a1c";
constexpr std::string_view kUrl =
    "https://hooks.example.com/ipayout/webhooks/Zq3vK8mN2pR5tW7yB1cD4fG6hJ9kL0xA";
constexpr std::string_view kTimestamp = "1764151530";
constexpr int64_t kNow = 1764151530;
constexpr std::string_view kBody = R"({"event":"PAYMENT.COMPLETED","eventId":"e-1"})";

std::string padded(std::string_view s) {
  std::string out;
  out.reserve(EventParser::padded_capacity(s.size()));
  out.assign(s.data(), s.size());
  return out;
}

std::string path_for(std::string_view token) {
  return std::string(kWebhookPathPrefix) + std::string(token);
}

// Parses an error body and returns {error, message}; fails the test when the body
// is not a JSON object with exactly those two string fields.
std::pair<std::string, std::string> error_fields(const std::string& body) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  auto err = parser.parse(body).get(doc);
  EXPECT_EQ(err, simdjson::SUCCESS) << "not JSON: " << body;
  if (err) return {};
  simdjson::dom::object obj;
  EXPECT_EQ(doc.get_object().get(obj), simdjson::SUCCESS) << body;
  EXPECT_EQ(obj.size(), 2u) << body;
  std::string_view code, message;
  EXPECT_EQ(obj["error"].get_string().get(code), simdjson::SUCCESS) << body;
  EXPECT_EQ(obj["message"].get_string().get(message), simdjson::SUCCESS) << body;
  return {std::string(code), std::string(message)};
}

// The JSON string `s` encodes, or "<invalid>" when it is not a JSON string.
std::string json_string_value(const std::string& json) {
  simdjson::dom::parser parser;
  std::string_view v;
  if (parser.parse(json).get_string().get(v)) return "<invalid>";
  return std::string(v);
}

// ---------------------------------------------------------------------------
// is_json_content_type

TEST(ContentType, JsonAccepted) {
  EXPECT_TRUE(is_json_content_type("application/json"));
  EXPECT_TRUE(is_json_content_type("application/json; charset=utf-8"));
  EXPECT_TRUE(is_json_content_type("application/json;charset=UTF-8"));
  EXPECT_TRUE(is_json_content_type("APPLICATION/JSON"));
  EXPECT_TRUE(is_json_content_type("Application/Json; Charset=utf-8"));
  EXPECT_TRUE(is_json_content_type(" application/json "));
  EXPECT_TRUE(is_json_content_type("application/vnd.x+json"));
  EXPECT_TRUE(is_json_content_type("application/vnd.ipayout+json; charset=utf-8"));
  EXPECT_TRUE(is_json_content_type("application/problem+JSON"));
}

TEST(ContentType, OthersRefused) {
  EXPECT_FALSE(is_json_content_type("text/plain"));
  EXPECT_FALSE(is_json_content_type(""));
  EXPECT_FALSE(is_json_content_type("application/jsonx"));
  EXPECT_FALSE(is_json_content_type("application/json-seq"));
  EXPECT_FALSE(is_json_content_type("application/x-www-form-urlencoded"));
  EXPECT_FALSE(is_json_content_type("multipart/form-data; boundary=x"));
  EXPECT_FALSE(is_json_content_type("text/json+xml"));
  EXPECT_FALSE(is_json_content_type("application/xml"));
  EXPECT_FALSE(is_json_content_type("text/plain; charset=application/json"));
  EXPECT_FALSE(is_json_content_type("json"));
  EXPECT_FALSE(is_json_content_type("application/"));
}

// ---------------------------------------------------------------------------
// token_from_path

TEST(TokenFromPath, ExactPrefixAndLength) {
  const std::string t32(32, 'a'), t128(128, 'Z');
  EXPECT_EQ(token_from_path(path_for(t32)), t32);
  EXPECT_EQ(token_from_path(path_for(t128)), t128);
  EXPECT_EQ(token_from_path(path_for(kToken)), kToken);
  EXPECT_EQ(token_from_path(path_for("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_")),
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_");
}

TEST(TokenFromPath, ReturnsViewIntoThePath) {
  std::string path = path_for(kToken);
  auto t = token_from_path(path);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->data(), path.data() + kWebhookPathPrefix.size());
}

TEST(TokenFromPath, LengthBoundsRefused) {
  EXPECT_EQ(token_from_path(path_for(std::string(31, 'a'))), std::nullopt);
  EXPECT_EQ(token_from_path(path_for(std::string(129, 'a'))), std::nullopt);
  EXPECT_EQ(token_from_path(path_for("")), std::nullopt);
}

TEST(TokenFromPath, CharactersOutsideBase64UrlRefused) {
  const std::string base(31, 'a');
  for (char c : {'.', '/', '%', '+', '=', ' ', '~', '?', '#', '\0', '\n'}) {
    EXPECT_EQ(token_from_path(path_for(base + c)), std::nullopt) << "char " << int(c);
    EXPECT_EQ(token_from_path(path_for(std::string(1, c) + base)), std::nullopt) << int(c);
  }
  EXPECT_EQ(token_from_path(path_for(std::string(30, 'a') + "\xC3\xA9")), std::nullopt);
}

TEST(TokenFromPath, ExtraSegmentsAndWrongPrefixRefused) {
  const std::string tok(kToken);
  EXPECT_EQ(token_from_path(path_for(tok + "/")), std::nullopt);
  EXPECT_EQ(token_from_path(path_for(tok + "/extra")), std::nullopt);
  EXPECT_EQ(token_from_path(path_for("x/" + tok)), std::nullopt);
  EXPECT_EQ(token_from_path(path_for("/" + tok)), std::nullopt);
  EXPECT_EQ(token_from_path("/ipayout/webhook/" + tok), std::nullopt);
  EXPECT_EQ(token_from_path("/IPAYOUT/webhooks/" + tok), std::nullopt);
  EXPECT_EQ(token_from_path("ipayout/webhooks/" + tok), std::nullopt);
  EXPECT_EQ(token_from_path("/x/ipayout/webhooks/" + tok), std::nullopt);
  EXPECT_EQ(token_from_path(tok), std::nullopt);
  EXPECT_EQ(token_from_path(""), std::nullopt);
  EXPECT_EQ(token_from_path(kWebhookPathPrefix), std::nullopt);
}

TEST(TokenFromPath, GeneratedTokensFit) {
  for (int i = 0; i < 20; ++i) {
    std::string t = crypto::random_token(kGeneratedTokenBytes);
    EXPECT_EQ(token_from_path(path_for(t)), t);
  }
}

TEST(TokenHash, RawSha256OfToken) {
  std::string h = token_hash(kToken);
  EXPECT_EQ(h.size(), 32u);
  EXPECT_EQ(h, crypto::as_bytes(crypto::sha256(kToken)));
  EXPECT_NE(h, token_hash(std::string(kToken) + "x"));
}

// ---------------------------------------------------------------------------
// check_head

class CheckHeadTest : public ::testing::Test {
 protected:
  CheckHeadTest() {
    auto map = std::make_shared<EndpointMap>();
    Endpoint e;
    e.id = 7;
    e.name = "shop";
    e.key = std::string(kKey);
    e.notification_url = std::string(kUrl);
    map->put(token_hash(kToken), std::make_shared<const Endpoint>(e));
    cache_.replace(map);
    path_ = path_for(kToken);
    head_.method = "POST";
    head_.path = path_;
    head_.content_type = "application/json";
    head_.content_length = kBody.size();
  }

  Settings settings_;
  EndpointCache cache_;
  std::string path_;
  RequestHead head_;
};

TEST_F(CheckHeadTest, OkSetsEndpoint) {
  HeadCheck hc = check_head(head_, cache_, settings_, kNow);
  EXPECT_FALSE(hc.response.has_value()) << hc.response->body;
  ASSERT_NE(hc.endpoint, nullptr);
  EXPECT_EQ(hc.endpoint->id, 7);
  EXPECT_EQ(hc.endpoint->name, "shop");
  ASSERT_NE(hc.snapshot, nullptr);
  EXPECT_EQ(hc.endpoint, hc.snapshot->find(token_hash(kToken)));
}

TEST_F(CheckHeadTest, NoContentLengthIsOk) {
  head_.content_length = std::nullopt;  // chunked: the body reader enforces the limit
  EXPECT_FALSE(check_head(head_, cache_, settings_, kNow).response.has_value());
}

TEST_F(CheckHeadTest, NotPostIs405WithAllow) {
  for (std::string_view m : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "post", ""}) {
    head_.method = m;
    HeadCheck hc = check_head(head_, cache_, settings_, kNow);
    ASSERT_TRUE(hc.response.has_value()) << m;
    EXPECT_EQ(hc.response->status, 405) << m;
    EXPECT_TRUE(hc.response->allow_post) << m;
    EXPECT_EQ(error_fields(hc.response->body).first, "method_not_allowed");
    EXPECT_EQ(hc.endpoint, nullptr);
  }
}

TEST_F(CheckHeadTest, MalformedTokenIs404) {
  std::string bad = path_for("short");
  head_.path = bad;
  HeadCheck hc = check_head(head_, cache_, settings_, kNow);
  ASSERT_TRUE(hc.response.has_value());
  EXPECT_EQ(hc.response->status, 404);
  EXPECT_FALSE(hc.response->allow_post);
  EXPECT_EQ(error_fields(hc.response->body).first, "not_found");
  EXPECT_EQ(hc.endpoint, nullptr);
}

TEST_F(CheckHeadTest, UnknownTokenIs404LikeMalformed) {
  std::string malformed = path_for("short");
  head_.path = malformed;
  HttpResponse a = *check_head(head_, cache_, settings_, kNow).response;

  std::string unknown = path_for(std::string(32, 'u'));
  head_.path = unknown;
  HeadCheck hc = check_head(head_, cache_, settings_, kNow);
  ASSERT_TRUE(hc.response.has_value());
  HttpResponse b = *hc.response;
  EXPECT_EQ(b.status, 404);
  EXPECT_EQ(b.body, a.body);  // nothing tells a guessed token from a malformed one
  EXPECT_EQ(b.error_code, a.error_code);
  EXPECT_EQ(b.content_type, a.content_type);
  EXPECT_EQ(b.retry_after, a.retry_after);
  EXPECT_EQ(b.allow_post, a.allow_post);
  EXPECT_EQ(hc.endpoint, nullptr);
}

TEST_F(CheckHeadTest, WrongPathIs404) {
  std::string other = "/ipayout/other/" + std::string(kToken);
  head_.path = other;
  HeadCheck hc = check_head(head_, cache_, settings_, kNow);
  ASSERT_TRUE(hc.response.has_value());
  EXPECT_EQ(hc.response->status, 404);
}

TEST_F(CheckHeadTest, CacheNeverLoadedIs503WithRetryAfter) {
  EndpointCache empty;
  settings_.retry_after = 17;
  HeadCheck hc = check_head(head_, empty, settings_, kNow);
  ASSERT_TRUE(hc.response.has_value());
  EXPECT_EQ(hc.response->status, 503);
  EXPECT_EQ(hc.response->retry_after, 17);
  EXPECT_EQ(error_fields(hc.response->body).first, "unavailable");
  EXPECT_EQ(hc.endpoint, nullptr);
}

TEST_F(CheckHeadTest, LoadedButEmptyCacheIs404) {
  EndpointCache empty;
  empty.replace(std::make_shared<EndpointMap>());
  HeadCheck hc = check_head(head_, empty, settings_, kNow);
  ASSERT_TRUE(hc.response.has_value());
  EXPECT_EQ(hc.response->status, 404);
}

TEST_F(CheckHeadTest, ContentTypeIsNotAHeadCheck) {
  // Whether a non-JSON type is refused depends on the signature (check_body).
  for (std::string_view ct : {"text/plain", "", "application/x-www-form-urlencoded"}) {
    head_.content_type = ct;
    EXPECT_FALSE(check_head(head_, cache_, settings_, kNow).response.has_value()) << ct;
  }
}

TEST_F(CheckHeadTest, PreviousTokenDeliversUntilItsGraceEnds) {
  auto map = std::make_shared<EndpointMap>(*cache_.snapshot());
  Endpoint old = *map->find(token_hash(kToken));
  old.notification_url = "https://hooks.example.com/ipayout/webhooks/old";
  old.token_until = kNow + 60;
  const std::string old_token(40, 'o');
  map->put(token_hash(old_token), std::make_shared<const Endpoint>(old));
  cache_.replace(map);
  std::string old_path = path_for(old_token);
  head_.path = old_path;

  HeadCheck hc = check_head(head_, cache_, settings_, kNow + 59);
  ASSERT_FALSE(hc.response.has_value()) << hc.response->body;
  EXPECT_EQ(hc.endpoint->id, 7);
  EXPECT_EQ(hc.endpoint->notification_url, "https://hooks.example.com/ipayout/webhooks/old");

  // At the end of the grace: the same 404 as a token never issued.
  HeadCheck gone = check_head(head_, cache_, settings_, kNow + 60);
  ASSERT_TRUE(gone.response.has_value());
  std::string unknown = path_for(std::string(32, 'u'));
  head_.path = unknown;
  HttpResponse never = *check_head(head_, cache_, settings_, kNow).response;
  EXPECT_EQ(gone.response->status, 404);
  EXPECT_EQ(gone.response->body, never.body);
  EXPECT_EQ(gone.endpoint, nullptr);

  head_.path = path_;  // the current token has no end
  EXPECT_FALSE(check_head(head_, cache_, settings_, kNow + 1000000).response.has_value());
}

// ---------------------------------------------------------------------------
// check_required_header

TEST(CheckRequiredHeader, NoneConfiguredLetsEverythingThrough) {
  Endpoint e;
  EXPECT_FALSE(check_required_header(e, std::nullopt).has_value());
  EXPECT_FALSE(check_required_header(e, std::string_view("x")).has_value());
}

TEST(CheckRequiredHeader, MissingOrWrongIs401WithoutTheValue) {
  Endpoint e;
  e.required_header_name = "x-shared";
  e.required_header_param = fastcgi_param_name("x-shared");
  e.required_header_value = "s3cret-value";
  EXPECT_EQ(e.required_header_param, "HTTP_X_SHARED");
  EXPECT_FALSE(check_required_header(e, std::string_view("s3cret-value")).has_value());
  for (std::optional<std::string_view> got :
       {std::optional<std::string_view>(), std::optional<std::string_view>("s3cret-valuE"),
        std::optional<std::string_view>("s3cret-value "), std::optional<std::string_view>(""),
        std::optional<std::string_view>("s3cret")}) {
    auto r = check_required_header(e, got);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(error_fields(r->body).first, "required_header_invalid");
    EXPECT_EQ(r->body.find("s3cret"), std::string::npos) << r->body;
    EXPECT_EQ(r->body.find("x-shared"), std::string::npos) << r->body;
  }
}

TEST_F(CheckHeadTest, UnknownTokenWithWrongContentTypeIsStill404) {
  // The token decides first: a 415 would tell a prober the token exists.
  std::string unknown = path_for(std::string(32, 'u'));
  head_.path = unknown;
  head_.content_type = "text/plain";
  EXPECT_EQ(check_head(head_, cache_, settings_, kNow).response->status, 404);
}

TEST_F(CheckHeadTest, ContentLengthOverLimitIs413) {
  settings_.body_limit = 1000;
  head_.content_length = 1001;
  HeadCheck hc = check_head(head_, cache_, settings_, kNow);
  ASSERT_TRUE(hc.response.has_value());
  EXPECT_EQ(hc.response->status, 413);
  EXPECT_EQ(error_fields(hc.response->body).first, "payload_too_large");

  head_.content_length = 1000;  // exactly the limit is fine
  EXPECT_FALSE(check_head(head_, cache_, settings_, kNow).response.has_value());
}

TEST_F(CheckHeadTest, DefaultLimitIsOneMebibyte) {
  head_.content_length = 1048577;
  EXPECT_EQ(check_head(head_, cache_, settings_, kNow).response->status, 413);
  head_.content_length = 1048576;
  EXPECT_FALSE(check_head(head_, cache_, settings_, kNow).response.has_value());
}

TEST_F(CheckHeadTest, BadContentLengthIs400) {
  head_.content_length = std::nullopt;
  head_.bad_content_length = true;
  HeadCheck hc = check_head(head_, cache_, settings_, kNow);
  ASSERT_TRUE(hc.response.has_value());
  EXPECT_EQ(hc.response->status, 400);
  error_fields(hc.response->body);
}

// ---------------------------------------------------------------------------
// check_body

class CheckBodyTest : public ::testing::Test {
 protected:
  CheckBodyTest() : parser_(rules(), 1048576) {
    endpoint_.id = 42;
    endpoint_.name = "shop";
    endpoint_.key = std::string(kKey);
    endpoint_.notification_url = std::string(kUrl);
    endpoint_.policy = SignaturePolicy::kRequired;
    sign(kBody);
  }

  static std::vector<DedupRule> rules() {
    auto r = parse_dedup_rules("/eventId,/id,/data/id+/event");
    EXPECT_TRUE(r.ok());
    return r.ok() ? r.value() : std::vector<DedupRule>{};
  }

  // Sets the body and headers of a correctly signed request.
  void sign(std::string_view body, std::string_view ts = kTimestamp) {
    body_ = padded(body);
    timestamp_ = std::string(ts);
    signature_ = compute_signature(kKey, timestamp_, kUrl, body_);
    head_.method = "POST";
    head_.content_type = "application/json";
    head_.x_timestamp = timestamp_;
    head_.x_signature = signature_;
  }

  std::optional<HttpResponse> check(int64_t now = kNow) {
    record_ = EventRecord{};
    return check_body(head_, endpoint_, settings_, now, parser_, body_, record_);
  }

  Settings settings_;
  Endpoint endpoint_;
  EventParser parser_;
  RequestHead head_;
  std::string body_, timestamp_, signature_;
  EventRecord record_;
};

TEST_F(CheckBodyTest, GoodRequestFillsRecord) {
  auto r = check();
  EXPECT_FALSE(r.has_value()) << r->body;
  EXPECT_EQ(record_.endpoint_id, 42);
  EXPECT_EQ(record_.event, "PAYMENT.COMPLETED");
  EXPECT_EQ(record_.dedup_key, "/eventId=e-1");
  EXPECT_TRUE(record_.jsonb_compatible);
  ASSERT_NE(record_.signature, SignatureVerdict::kNotChecked);  // a verdict was recorded
  EXPECT_STREQ(to_string(record_.signature), "valid");
}

TEST_F(CheckBodyTest, WorkedExampleAccepted) {
  sign(R"({"event":"PAYMENT.COMPLETED"})");
  EXPECT_EQ(signature_, "3DXEf6hd96h9JRu7po9JPIRrjsFWvcVBk/mVBGTMk9g=");
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "valid");
  EXPECT_EQ(record_.dedup_key.rfind("sha256:", 0), 0u);
}

TEST_F(CheckBodyTest, BadSignatureRefusedUnderRequired) {
  signature_ = compute_signature("wrong-key", kTimestamp, kUrl, body_);
  head_.x_signature = signature_;
  auto r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(error_fields(r->body).first, "signature_invalid");
}

TEST_F(CheckBodyTest, BadSignatureRecordedUnderRecord) {
  endpoint_.policy = SignaturePolicy::kRecord;
  signature_ = compute_signature("wrong-key", kTimestamp, kUrl, body_);
  head_.x_signature = signature_;
  auto r = check();
  EXPECT_FALSE(r.has_value()) << r->body;
  EXPECT_EQ(record_.event, "PAYMENT.COMPLETED");
  ASSERT_NE(record_.signature, SignatureVerdict::kNotChecked);  // a verdict was recorded
  EXPECT_STREQ(to_string(record_.signature), "invalid");
}

TEST_F(CheckBodyTest, PolicyOffIsNotChecked) {
  endpoint_.policy = SignaturePolicy::kOff;
  head_.x_signature = std::string_view("garbage");
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "not_checked");

  head_.x_signature = std::nullopt;
  head_.x_timestamp = std::nullopt;
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "not_checked");

  sign(kBody);  // even a good signature is not looked at
  endpoint_.policy = SignaturePolicy::kOff;
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "not_checked");
}

TEST_F(CheckBodyTest, MissingSignatureIs401) {
  head_.x_signature = std::nullopt;
  auto r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(error_fields(r->body).first, "signature_missing");

  sign(kBody);
  head_.x_timestamp = std::nullopt;
  r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(error_fields(r->body).first, "signature_missing");
}

TEST_F(CheckBodyTest, MissingSignatureRecordedUnderRecord) {
  endpoint_.policy = SignaturePolicy::kRecord;
  head_.x_signature = std::nullopt;
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "missing");
}

TEST_F(CheckBodyTest, StaleTimestampIs401) {
  auto r = check(kNow + 301);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(error_fields(r->body).first, "timestamp_out_of_window");

  r = check(kNow - 301);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(error_fields(r->body).first, "timestamp_out_of_window");

  EXPECT_FALSE(check(kNow + 300).has_value());
}

TEST_F(CheckBodyTest, ReplayWindowSettingApplies) {
  settings_.replay_window = 10;
  EXPECT_FALSE(check(kNow + 10).has_value());
  auto r = check(kNow + 11);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
}

TEST_F(CheckBodyTest, StaleTimestampRecordedUnderRecord) {
  endpoint_.policy = SignaturePolicy::kRecord;
  EXPECT_FALSE(check(kNow + 3600).has_value());
  EXPECT_STREQ(to_string(record_.signature), "expired");
}

TEST_F(CheckBodyTest, UnparsedTimestampAcceptedUnderRequired) {
  sign(kBody, "Wed, 26 Nov 2025 10:05:30 GMT");
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "valid_unparsed_timestamp");
}

TEST_F(CheckBodyTest, BadJsonWithGoodSignatureIs400) {
  sign(R"({"event":"A")");
  auto r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(error_fields(r->body).first, "bad_json");

  sign(R"({"id":1})");
  r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(error_fields(r->body).first, "bad_event");

  sign("[]");
  r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 400);
}

TEST_F(CheckBodyTest, SignatureCheckedBeforeJson) {
  // Under "required" an unsigned body is refused before anyone parses it.
  sign(R"({"event":"A")");
  head_.x_signature = std::nullopt;
  auto r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
}

TEST_F(CheckBodyTest, SignedBodyIsJsonWhateverItsContentType) {
  for (std::string_view ct : {"text/plain", "", "application/x-www-form-urlencoded"}) {
    sign(kBody);
    head_.content_type = ct;
    auto r = check();
    EXPECT_FALSE(r.has_value()) << ct << ": " << r->body;
    EXPECT_STREQ(to_string(record_.signature), "valid");
    EXPECT_EQ(record_.event, "PAYMENT.COMPLETED");
  }
  // Under record, a matching key with an old timestamp still vouches for it.
  endpoint_.policy = SignaturePolicy::kRecord;
  head_.content_type = "text/plain";
  EXPECT_FALSE(check(kNow + 3600).has_value());
  EXPECT_STREQ(to_string(record_.signature), "expired");
}

TEST_F(CheckBodyTest, SignedNonJsonBodyIs400Not415) {
  sign("event=PAYMENT.COMPLETED");
  head_.content_type = "application/x-www-form-urlencoded";
  auto r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(error_fields(r->body).first, "bad_json");
}

TEST_F(CheckBodyTest, UnsignedBodyNeedsJsonContentType) {
  for (SignaturePolicy p : {SignaturePolicy::kRecord, SignaturePolicy::kOff}) {
    endpoint_.policy = p;
    sign(kBody);
    head_.content_type = "text/plain";
    head_.x_signature = std::nullopt;  // missing
    auto r = check();
    ASSERT_TRUE(r.has_value()) << to_string(p);
    EXPECT_EQ(r->status, 415);
    EXPECT_EQ(error_fields(r->body).first, "unsupported_media_type");

    signature_ = compute_signature("wrong-key", kTimestamp, kUrl, body_);
    head_.x_signature = signature_;  // invalid
    r = check();
    ASSERT_TRUE(r.has_value()) << to_string(p);
    EXPECT_EQ(r->status, 415);

    head_.content_type = "application/json; charset=utf-8";
    EXPECT_FALSE(check().has_value()) << to_string(p);
  }
  // Policy off never looks at the signature: even a good one does not vouch.
  endpoint_.policy = SignaturePolicy::kOff;
  sign(kBody);
  head_.content_type = "text/plain";
  ASSERT_TRUE(check().has_value());
  EXPECT_EQ(check()->status, 415);
}

TEST_F(CheckBodyTest, UnsignedNonJsonTypeUnderRequiredIs401) {
  // The signature is checked first: 401 says what is wrong.
  head_.content_type = "text/plain";
  head_.x_signature = std::nullopt;
  auto r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
}

TEST_F(CheckBodyTest, PreviousKeyVerifiesDuringItsGrace) {
  // The key was rotated: i-payout still signs with the old one.
  endpoint_.previous_key = std::string(kKey);
  endpoint_.previous_hmac = std::make_shared<const crypto::LazyHmacKey>(std::string(kKey));
  endpoint_.previous_key_until = kNow + 100;
  endpoint_.key = "the-new-key";
  endpoint_.hmac = std::make_shared<const crypto::LazyHmacKey>(endpoint_.key);
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "valid_previous_key");

  // Once the grace ends, the old key is just a wrong key.
  auto r = check(kNow + 100);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(error_fields(r->body).first, "signature_invalid");
  EXPECT_STREQ(to_string(record_.signature), "invalid");

  // The new key verifies as "valid", in the grace and after it.
  signature_ = compute_signature("the-new-key", kTimestamp, kUrl, body_);
  head_.x_signature = signature_;
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "valid");
  EXPECT_FALSE(check(kNow + 200).has_value());
  EXPECT_STREQ(to_string(record_.signature), "valid");
}

TEST_F(CheckBodyTest, PreviousKeyVerdictsKeepTheirTimestampMeaning) {
  endpoint_.previous_key = std::string(kKey);
  endpoint_.previous_key_until = kNow + 100000;  // prepared per call: no previous_hmac
  endpoint_.key = "the-new-key";
  endpoint_.hmac = std::make_shared<const crypto::LazyHmacKey>(endpoint_.key);
  sign(kBody, "Wed, 26 Nov 2025 10:05:30 GMT");
  EXPECT_FALSE(check().has_value());
  EXPECT_STREQ(to_string(record_.signature), "valid_unparsed_timestamp_previous_key");

  sign(kBody);
  auto r = check(kNow + 3600);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(error_fields(r->body).first, "timestamp_out_of_window");
  EXPECT_STREQ(to_string(record_.signature), "expired");
}

TEST(SignatureVerdicts, PreviousKeyVerdictsAreAcceptedAndMatched) {
  for (SignatureVerdict v : {SignatureVerdict::kValidPreviousKey,
                             SignatureVerdict::kValidUnparsedTimestampPreviousKey}) {
    EXPECT_TRUE(accepted_by(SignaturePolicy::kRequired, v)) << to_string(v);
    EXPECT_TRUE(signature_matched(v)) << to_string(v);
  }
  EXPECT_TRUE(signature_matched(SignatureVerdict::kExpired));
  EXPECT_FALSE(accepted_by(SignaturePolicy::kRequired, SignatureVerdict::kExpired));
  for (SignatureVerdict v :
       {SignatureVerdict::kInvalid, SignatureVerdict::kMissing, SignatureVerdict::kNotChecked}) {
    EXPECT_FALSE(signature_matched(v)) << to_string(v);
  }
}

TEST_F(CheckBodyTest, ErrorBodyDoesNotEchoRequestData) {
  sign(R"({"event":"SECRET-EVENT-NAME","x":tru})");
  auto r = check();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body.find("SECRET-EVENT-NAME"), std::string::npos) << r->body;
}

TEST_F(CheckBodyTest, JsonbIncompatibleBodyFlagged) {
  sign(R"({"event":"A","x":"\u0000"})");
  EXPECT_FALSE(check().has_value());
  EXPECT_FALSE(record_.jsonb_compatible);
}

// ---------------------------------------------------------------------------
// Error bodies and JSON strings

TEST(ErrorResponse, ValidJsonWithErrorAndMessage) {
  HttpResponse r = error_response(404, "not_found", "no such webhook endpoint");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.error_code, "not_found");
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.retry_after, 0);
  EXPECT_FALSE(r.allow_post);
  auto [code, message] = error_fields(r.body);
  EXPECT_EQ(code, "not_found");
  EXPECT_EQ(message, "no such webhook endpoint");
}

TEST(ErrorResponse, EscapesItsText) {
  HttpResponse r = error_response(400, "bad_json", "body is \"bad\" \\ here\nline\x01");
  auto [code, message] = error_fields(r.body);
  EXPECT_EQ(code, "bad_json");
  EXPECT_EQ(message, "body is \"bad\" \\ here\nline\x01");
}

TEST(ErrorResponse, EveryContractStatusHasAReason) {
  for (int status : {200, 400, 401, 404, 405, 413, 415, 503}) {
    EXPECT_STRNE(reason_phrase(status), "Status") << status;
  }
  EXPECT_STREQ(reason_phrase(404), "Not Found");
  EXPECT_STREQ(reason_phrase(405), "Method Not Allowed");
  EXPECT_STREQ(reason_phrase(413), "Payload Too Large");
  EXPECT_STREQ(reason_phrase(415), "Unsupported Media Type");
  EXPECT_STREQ(reason_phrase(503), "Service Unavailable");
}

TEST(AppendJsonString, QuotesAndBackslashes) {
  std::string out;
  append_json_string(out, R"(a"b\c)");
  EXPECT_EQ(out, R"("a\"b\\c")");
}

TEST(AppendJsonString, Appends) {
  std::string out = "x=";
  append_json_string(out, "y");
  EXPECT_EQ(out, "x=\"y\"");
  append_json_string(out, "");
  EXPECT_EQ(out, "x=\"y\"\"\"");
}

TEST(AppendJsonString, ControlCharacters) {
  std::string out;
  append_json_string(out, std::string("\n\r\t\x01\x1f\x7f\0z", 8));
  EXPECT_EQ(out, R"("\n\r\t\u0001\u001f\u007f\u0000z")");
  EXPECT_EQ(json_string_value(out), std::string("\n\r\t\x01\x1f\x7f\0z", 8));
}

TEST(AppendJsonString, ValidUtf8KeptAsIs) {
  std::string out;
  append_json_string(out, "Zo\xC3\xAB \xF0\x9F\x98\x80 \xE2\x82\xAC");
  EXPECT_EQ(out, "\"Zo\xC3\xAB \xF0\x9F\x98\x80 \xE2\x82\xAC\"");
}

TEST(AppendJsonString, InvalidUtf8Replaced) {
  std::string out;
  append_json_string(out,
                     "a\xff"
                     "b");
  EXPECT_EQ(out,
            "\"a\xEF\xBF\xBD"
            "b\"");
  EXPECT_EQ(json_string_value(out),
            "a\xEF\xBF\xBD"
            "b");

  for (std::string bad : {std::string("\xc3"), std::string("\xc0\xaf"), std::string("\xed\xa0\x80"),
                          std::string("\xf8\x88\x80\x80\x80"), std::string("x\x80y")}) {
    std::string o;
    append_json_string(o, bad);
    EXPECT_NE(json_string_value(o), "<invalid>") << "not valid JSON: " << o;
    EXPECT_TRUE(simdjson::validate_utf8(o.data(), o.size())) << o;
  }
}

TEST(AppendJsonString, InvalidByteDoesNotDestroyValidCharacters) {
  // http.h: "Invalid UTF-8 bytes become U+FFFD". Only the invalid byte is
  // replaced; the valid "ë" before it must survive.
  std::string out;
  append_json_string(out, "Zo\xC3\xAB\xff");
  EXPECT_EQ(out, "\"Zo\xC3\xAB\xEF\xBF\xBD\"");
}

// ---------------------------------------------------------------------------
// Success bodies and store outcomes

TEST(RenderSuccessBody, Default) {
  std::string body = render_success_body("", "accepted", 42);
  EXPECT_EQ(body, R"({"status":"accepted","id":42})");
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  ASSERT_EQ(parser.parse(body).get(doc), simdjson::SUCCESS);
  EXPECT_EQ(render_success_body("", "duplicate", 9007199254740993),
            R"({"status":"duplicate","id":9007199254740993})");
}

TEST(RenderSuccessBody, Template) {
  EXPECT_EQ(render_success_body("OK", "accepted", 42), "OK");
  EXPECT_EQ(render_success_body("{status} #{id}", "accepted", 42), "accepted #42");
  EXPECT_EQ(render_success_body(R"({"ok":true,"s":"{status}","n":{id}})", "duplicate", 7),
            R"({"ok":true,"s":"duplicate","n":7})");
  EXPECT_EQ(render_success_body("{id}{id}{status}{status}", "a", 1), "11aa");
  EXPECT_EQ(render_success_body("{stat} {i} {ID} {", "accepted", 3), "{stat} {i} {ID} {");
  EXPECT_EQ(render_success_body("{{id}}", "accepted", 3), "{3}");
}

class StoreResponseTest : public ::testing::Test {
 protected:
  StoreResponseTest() {
    endpoint_.id = 1;
    settings_.retry_after = 9;
  }
  Endpoint endpoint_;
  Settings settings_;
};

TEST_F(StoreResponseTest, AcceptedAndDuplicateDefaultBody) {
  HttpResponse a =
      store_response({StoreOutcome::kAccepted, 5, StoreFailure::kNone}, endpoint_, settings_);
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, R"({"status":"accepted","id":5})");
  EXPECT_EQ(a.content_type, "application/json");
  EXPECT_EQ(a.error_code, "");
  EXPECT_EQ(a.retry_after, 0);

  HttpResponse d =
      store_response({StoreOutcome::kDuplicate, 5, StoreFailure::kNone}, endpoint_, settings_);
  EXPECT_EQ(d.status, 200);
  EXPECT_EQ(d.body, R"({"status":"duplicate","id":5})");
  EXPECT_EQ(d.error_code, "");
}

TEST_F(StoreResponseTest, ConfiguredSuccessResponse) {
  endpoint_.success_status = 202;
  endpoint_.success_body = "OK {status}";
  HttpResponse a =
      store_response({StoreOutcome::kAccepted, 5, StoreFailure::kNone}, endpoint_, settings_);
  EXPECT_EQ(a.status, 202);
  EXPECT_EQ(a.body, "OK accepted");
  EXPECT_NE(a.content_type.find("text/plain"), std::string::npos) << a.content_type;

  HttpResponse d =
      store_response({StoreOutcome::kDuplicate, 5, StoreFailure::kNone}, endpoint_, settings_);
  EXPECT_EQ(d.status, 202);  // a duplicate must look like success to i-payout
  EXPECT_EQ(d.body, "OK duplicate");

  endpoint_.success_body = R"({"received":{id}})";
  HttpResponse j =
      store_response({StoreOutcome::kAccepted, 8, StoreFailure::kNone}, endpoint_, settings_);
  EXPECT_EQ(j.body, R"({"received":8})");
  EXPECT_EQ(j.content_type, "application/json");
}

TEST_F(StoreResponseTest, UnavailableIs503WithRetryAfter) {
  HttpResponse r = store_response({StoreOutcome::kUnavailable, 0, StoreFailure::kQueueFull},
                                  endpoint_, settings_);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.retry_after, 9);
  EXPECT_EQ(error_fields(r.body).first, "unavailable");
}

TEST_F(StoreResponseTest, RejectedIs400) {
  HttpResponse r = store_response({StoreOutcome::kRejected, 0, StoreFailure::kDataRefused},
                                  endpoint_, settings_);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.retry_after, 0);
  auto [code, message] = error_fields(r.body);
  EXPECT_EQ(code, "unstorable");
  EXPECT_FALSE(message.empty());
}

TEST_F(StoreResponseTest, DefaultStoreResultIsUnavailable) {
  EXPECT_EQ(store_response(StoreResult{}, endpoint_, settings_).status, 503);
}

}  // namespace
}  // namespace ipayout
