// EventParser: the whole body validated as JSON, the `event` name and the
// de-duplication key; parse_dedup_rules for the dedup_pointers setting.
#include "event.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "crypto.h"

namespace ipayout {
namespace {

constexpr std::string_view kDefaultRules = "/eventId,/id,/data/id+/event";
constexpr size_t kMaxBody = 1048576;

// A copy of `s` with the padding simdjson needs past its end (EventParser::parse
// requires it, as the request path's body buffer provides).
std::string padded(std::string_view s) {
  std::string out;
  out.reserve(EventParser::padded_capacity(s.size()));  // size + padded_capacity(0)
  out.assign(s.data(), s.size());
  return out;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string sha256_hex(std::string_view s) {
  return crypto::hex(crypto::sha256(s));
}

bool is_hex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

class EventParserTest : public ::testing::Test {
 protected:
  EventParserTest() : parser_(rules(kDefaultRules), kMaxBody) {}

  static std::vector<DedupRule> rules(std::string_view setting) {
    auto r = parse_dedup_rules(setting);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? r.value() : std::vector<DedupRule>{};
  }

  Result<ParsedEvent> parse(std::string_view body) { return parser_.parse(padded(body)); }

  // The parsed event, failing the test when the body is refused.
  ParsedEvent ok(std::string_view body) {
    auto r = parse(body);
    EXPECT_TRUE(r.ok()) << "refused: " << (r.ok() ? "" : r.error().code + ": " + r.error().message)
                        << "\nbody: " << body.substr(0, 200);
    return r.ok() ? r.value() : ParsedEvent{};
  }

  // The error code, or "ok" when the body was accepted.
  std::string error_code(std::string_view body) {
    auto r = parse(body);
    return r.ok() ? "ok" : r.error().code;
  }

  EventParser parser_;
};

// ---------------------------------------------------------------------------
// Fixtures

TEST_F(EventParserTest, EveryFixtureParses) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(FIXTURES_DIR)) {
    if (entry.path().extension() != ".json") continue;
    ++count;
    std::string body = read_file(entry.path());
    auto r = parse(body);
    ASSERT_TRUE(r.ok()) << entry.path() << ": " << r.error().code << ": " << r.error().message;
    EXPECT_FALSE(r->event.empty()) << entry.path();
    EXPECT_TRUE(r->jsonb_compatible) << entry.path();
  }
  EXPECT_GE(count, 15);  // tests/fixtures: every documented event family
}

TEST_F(EventParserTest, FixturesGiveEventNameAndEventIdKey) {
  const std::map<std::string, std::pair<std::string, std::string>> expected = {
      {"customer_created.json",
       {"CUSTOMER.CREATED", "/eventId=5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"}},
      {"payment_status_updated.json",
       {"PAYMENT.STATUS.UPDATED", "/eventId=3e0b6c1d-52a7-4f0e-9b8c-71d2e4a5f690"}},
      {"transfer_created.json",
       {"TRANSFER.CREATED", "/eventId=6f7a8b9c-0d1e-4f2a-9b3c-5d6e7f8091a2"}},
      {"large_payment_batch.json", {"PAYMENT.STATUS.UPDATED", "/eventId=batch-2026-11-30-0001"}},
  };
  for (const auto& [file, want] : expected) {
    std::string body = read_file(std::filesystem::path(FIXTURES_DIR) / file);
    ASSERT_FALSE(body.empty()) << file;
    ParsedEvent e = ok(body);
    EXPECT_EQ(e.event, want.first) << file;
    EXPECT_EQ(e.dedup_key, want.second) << file;
  }
}

TEST_F(EventParserTest, MinimalFixtureFallsBackToBodyHash) {
  std::string body =
      read_file(std::filesystem::path(FIXTURES_DIR) / "minimal_payment_completed.json");
  ASSERT_FALSE(body.empty());
  ParsedEvent e = ok(body);
  EXPECT_EQ(e.event, "PAYMENT.COMPLETED");
  // Hash of the raw bytes as stored (the file ends with a newline); value from sha256sum.
  EXPECT_EQ(e.dedup_key, "sha256:aa6708c06e723ef7432093c5ccb0f3957587ad661420dd90a8887b83029700e1");
}

TEST_F(EventParserTest, MinimalBodyFallsBackToBodyHash) {
  ParsedEvent e = ok(R"({"event":"PAYMENT.COMPLETED"})");
  EXPECT_EQ(e.event, "PAYMENT.COMPLETED");
  EXPECT_EQ(e.dedup_key, "sha256:62a48fa26f4b477662e22bda8d0643b83170609ded6709fbffe11853e1a9e605");
  // The raw body, not a re-serialisation: whitespace changes the key.
  EXPECT_NE(ok(R"({ "event": "PAYMENT.COMPLETED" })").dedup_key, e.dedup_key);
}

// ---------------------------------------------------------------------------
// De-duplication key

TEST_F(EventParserTest, DedupRulesTriedInOrder) {
  EXPECT_EQ(ok(R"({"event":"A","id":"i","data":{"id":"d"},"eventId":"e"})").dedup_key,
            "/eventId=e");
  EXPECT_EQ(ok(R"({"event":"A","id":"i","data":{"id":"d"}})").dedup_key, "/id=i");
  std::string combined = ok(R"({"event":"A","data":{"id":"d"}})").dedup_key;
  const std::string prefix = "/data/id+/event#sha256:";
  ASSERT_EQ(combined.rfind(prefix, 0), 0u) << combined;
  EXPECT_TRUE(is_hex64(combined.substr(prefix.size()))) << combined;
}

TEST_F(EventParserTest, NumericIdsAsWritten) {
  EXPECT_EQ(ok(R"({"event":"A","id":123})").dedup_key, "/id=123");
  EXPECT_EQ(ok(R"({"event":"A","id":123 })").dedup_key, "/id=123");
  EXPECT_EQ(ok(R"({"event":"A","eventId":-1.5e3})").dedup_key, "/eventId=-1.5e3");
  // Beyond 64 bits is still valid JSON and still an id.
  EXPECT_EQ(ok(R"({"event":"A","id":123456789012345678901234567890})").dedup_key,
            "/id=123456789012345678901234567890");
}

TEST_F(EventParserTest, StringAndNumberIdsShareAKey) {
  // The key format does not tell "123" from 123: the same id either way.
  EXPECT_EQ(ok(R"({"event":"A","id":"123"})").dedup_key, ok(R"({"event":"A","id":123})").dedup_key);
}

TEST_F(EventParserTest, NonScalarIdsAreSkipped) {
  EXPECT_EQ(ok(R"({"event":"A","eventId":{"x":1},"id":"y"})").dedup_key, "/id=y");
  EXPECT_EQ(ok(R"({"event":"A","eventId":[1],"id":"y"})").dedup_key, "/id=y");
  EXPECT_EQ(ok(R"({"event":"A","eventId":null,"id":"y"})").dedup_key, "/id=y");
  EXPECT_EQ(ok(R"({"event":"A","eventId":true,"id":"y"})").dedup_key, "/id=y");
}

TEST_F(EventParserTest, CombinedRuleIsUnambiguous) {
  std::string k1 = ok(R"({"event":"c","data":{"id":"ab"}})").dedup_key;
  std::string k2 = ok(R"({"event":"bc","data":{"id":"a"}})").dedup_key;
  EXPECT_EQ(k1.rfind("/data/id+/event#sha256:", 0), 0u) << k1;
  EXPECT_EQ(k2.rfind("/data/id+/event#sha256:", 0), 0u) << k2;
  EXPECT_NE(k1, k2);
  // The same values give the same key (that is what makes it a dedup key).
  EXPECT_EQ(ok(R"({"data":{"id":"ab","x":1},"event":"c"})").dedup_key, k1);
  // And a different event with the same data id is a different event.
  EXPECT_NE(ok(R"({"event":"d","data":{"id":"ab"}})").dedup_key, k1);
}

TEST_F(EventParserTest, CombinedRuleNeedsEveryPointer) {
  // /data/id absent: falls back to the body hash.
  std::string body = R"({"event":"A","data":{"other":"d"}})";
  EXPECT_EQ(ok(body).dedup_key, "sha256:" + sha256_hex(body));
}

TEST_F(EventParserTest, KeyWithControlCharsIsHashed) {
  ParsedEvent e = ok(R"({"event":"A","eventId":"a\nb"})");
  const std::string prefix = "/eventId#sha256:";
  ASSERT_EQ(e.dedup_key.rfind(prefix, 0), 0u) << e.dedup_key;
  EXPECT_TRUE(is_hex64(e.dedup_key.substr(prefix.size()))) << e.dedup_key;
  EXPECT_NE(ok(R"({"event":"A","eventId":"a\tb"})").dedup_key, e.dedup_key);
  EXPECT_EQ(ok(R"({"event":"A","eventId":"a\u007fb"})").dedup_key.rfind(prefix, 0), 0u);
}

TEST_F(EventParserTest, LongKeyIsHashed) {
  const std::string v256(256, 'k'), v257(257, 'k');
  EXPECT_EQ(ok(R"({"event":"A","eventId":")" + v256 + "\"}").dedup_key, "/eventId=" + v256);
  std::string hashed = ok(R"({"event":"A","eventId":")" + v257 + "\"}").dedup_key;
  const std::string prefix = "/eventId#sha256:";
  ASSERT_EQ(hashed.rfind(prefix, 0), 0u) << hashed;
  EXPECT_TRUE(is_hex64(hashed.substr(prefix.size())));
  // Two long ids that share a prefix still differ.
  EXPECT_NE(ok(R"({"event":"A","eventId":")" + v257 + "x\"}").dedup_key, hashed);
}

TEST_F(EventParserTest, RulePrefixPreventsCollisions) {
  std::string a = ok(R"({"event":"A","eventId":"x"})").dedup_key;
  std::string b = ok(R"({"event":"A","id":"x"})").dedup_key;
  EXPECT_EQ(a, "/eventId=x");
  EXPECT_EQ(b, "/id=x");
  EXPECT_NE(a, b);
}

TEST_F(EventParserTest, UnicodeIdKeptAsUtf8) {
  EXPECT_EQ(ok(R"({"event":"A","eventId":"Zo\u00eb"})").dedup_key, "/eventId=Zo\xC3\xAB");
}

TEST(EventParserRules, CustomRules) {
  auto r = parse_dedup_rules("/a/b");
  ASSERT_TRUE(r.ok());
  EventParser parser(r.value(), kMaxBody);
  auto e = parser.parse(padded(R"({"event":"A","a":{"b":"x"},"eventId":"y"})"));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->dedup_key, "/a/b=x");
}

TEST(EventParserRules, NoRulesMeansBodyHash) {
  auto r = parse_dedup_rules("");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
  EventParser parser(r.value(), kMaxBody);
  const std::string body = R"({"event":"A","eventId":"y"})";
  auto e = parser.parse(padded(body));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->dedup_key, "sha256:" + sha256_hex(body));
}

TEST(ParseDedupRules, DefaultSetting) {
  auto r = parse_dedup_rules(kDefaultRules);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].text, "/eventId");
  EXPECT_EQ((*r)[0].pointers, std::vector<std::string>({"/eventId"}));
  EXPECT_EQ((*r)[1].text, "/id");
  EXPECT_EQ((*r)[1].pointers, std::vector<std::string>({"/id"}));
  EXPECT_EQ((*r)[2].text, "/data/id+/event");
  EXPECT_EQ((*r)[2].pointers, std::vector<std::string>({"/data/id", "/event"}));
}

TEST(ParseDedupRules, SpacesTrimmed) {
  auto r = parse_dedup_rules("  /eventId ,   /id,/data/id+/event  ");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].text, "/eventId");
  EXPECT_EQ((*r)[0].pointers, std::vector<std::string>({"/eventId"}));
  EXPECT_EQ((*r)[1].text, "/id");
  EXPECT_EQ((*r)[2].text, "/data/id+/event");
  EXPECT_EQ((*r)[2].pointers, std::vector<std::string>({"/data/id", "/event"}));
}

TEST(ParseDedupRules, EmptyAlternativesSkipped) {
  auto r = parse_dedup_rules(",/a,, ,/b,");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].text, "/a");
  EXPECT_EQ((*r)[1].text, "/b");
}

TEST(ParseDedupRules, InvalidPointerRefused) {
  for (std::string_view bad : {"eventId", "/eventId,id", "/data/id+event", "/a++/b", "/a+"}) {
    auto r = parse_dedup_rules(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, "invalid_setting") << bad;
    EXPECT_NE(r.error().message.find("dedup_pointers"), std::string::npos) << r.error().message;
  }
}

// ---------------------------------------------------------------------------
// Refused bodies

TEST_F(EventParserTest, EmptyAndWhitespaceBodies) {
  EXPECT_EQ(error_code(""), "bad_json");
  EXPECT_EQ(error_code(" "), "bad_json");
  EXPECT_EQ(error_code(" \n\t\r "), "bad_json");
}

TEST_F(EventParserTest, TruncatedJson) {
  EXPECT_EQ(error_code(R"({"event":"A")"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A)"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":)"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","data":{"id":1})"), "bad_json");
  EXPECT_EQ(error_code("{"), "bad_json");
}

TEST_F(EventParserTest, NotAnObject) {
  EXPECT_EQ(error_code(R"([{"event":"A"}])"), "bad_json");
  EXPECT_EQ(error_code("[]"), "bad_json");
  EXPECT_EQ(error_code(R"("event")"), "bad_json");
  EXPECT_EQ(error_code("42"), "bad_json");
  EXPECT_EQ(error_code("null"), "bad_json");
  EXPECT_EQ(error_code("true"), "bad_json");
}

TEST_F(EventParserTest, NoEventField) {
  EXPECT_EQ(error_code("{}"), "bad_event");
  EXPECT_EQ(error_code(R"({"Event":"A"})"), "bad_event");
  EXPECT_EQ(error_code(R"({"data":{"event":"A"}})"), "bad_event");  // only top level counts
}

TEST_F(EventParserTest, EventNotAString) {
  EXPECT_EQ(error_code(R"({"event":1})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":null})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":{"name":"A"}})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":["A"]})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":true})"), "bad_event");
}

TEST_F(EventParserTest, EventNameLimits) {
  EXPECT_EQ(error_code(R"({"event":""})"), "bad_event");
  const std::string n255(kMaxEventNameBytes, 'E'), n256(kMaxEventNameBytes + 1, 'E');
  EXPECT_EQ(ok(R"({"event":")" + n255 + "\"}").event, n255);
  EXPECT_EQ(error_code(R"({"event":")" + n256 + "\"}"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":"A\u0001"})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":"A\nB"})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":"A\u007f"})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":"\u0000"})"), "bad_event");
}

TEST_F(EventParserTest, EventNameUnescaped) {
  EXPECT_EQ(ok(R"({"event":"A\/B"})").event, "A/B");
  EXPECT_EQ(ok(R"({"event":"PAYMENT\u002eCOMPLETED"})").event, "PAYMENT.COMPLETED");
  // An escaped key is still the key "event".
  EXPECT_EQ(ok(R"({"ev\u0065nt":"A"})").event, "A");
}

TEST_F(EventParserTest, DuplicateEventKeysRefused) {
  EXPECT_EQ(error_code(R"({"event":"A","event":"B"})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":"A","event":"A"})"), "bad_event");
  EXPECT_EQ(error_code(R"({"event":"A","ev\u0065nt":"B"})"), "bad_event");
}

TEST_F(EventParserTest, DuplicateOtherKeysAccepted) {
  EXPECT_EQ(ok(R"({"event":"A","x":1,"x":2})").event, "A");
  EXPECT_EQ(ok(R"({"event":"A","data":{"k":1,"k":"two"}})").event, "A");
}

TEST_F(EventParserTest, TrailingContentRefused) {
  EXPECT_EQ(error_code("{} {}"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A"} {})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A"} x)"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A"},)"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A"}])"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A"}})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A"}1)"), "bad_json");
}

TEST_F(EventParserTest, TrailingWhitespaceAccepted) {
  EXPECT_EQ(ok("{\"event\":\"A\"}\n").event, "A");
  EXPECT_EQ(ok(" \r\n{\"event\":\"A\"} \t\r\n").event, "A");
}

TEST_F(EventParserTest, InvalidUtf8Refused) {
  EXPECT_EQ(error_code("{\"event\":\"A\",\"x\":\"\xff\"}"), "bad_json");
  EXPECT_EQ(error_code("{\"event\":\"A\xff\"}"), "bad_json");
  EXPECT_EQ(error_code("{\"event\":\"A\",\"\xc3\":1}"), "bad_json");          // truncated sequence
  EXPECT_EQ(error_code("{\"event\":\"A\",\"x\":\"\xc0\xaf\"}"), "bad_json");  // overlong '/'
  EXPECT_EQ(error_code("{\"event\":\"A\",\"x\":\"\xed\xa0\x80\"}"), "bad_json");  // raw surrogate
}

TEST_F(EventParserTest, RawNulRefused) {
  EXPECT_EQ(error_code(std::string("{\"event\":\"A\"}\0", 14)), "bad_json");
  EXPECT_EQ(error_code(std::string("{\"event\":\"A\0B\"}", 15)), "bad_json");
  EXPECT_EQ(error_code(std::string("{\"event\":\"A\",\"x\":\"\0\"}", 21)), "bad_json");
  EXPECT_EQ(error_code(std::string("\0{\"event\":\"A\"}", 14)), "bad_json");
}

TEST_F(EventParserTest, RawControlCharInStringRefused) {
  EXPECT_EQ(error_code("{\"event\":\"A\",\"x\":\"a\x01"
                       "b\"}"),
            "bad_json");
  EXPECT_EQ(error_code("{\"event\":\"A\",\"x\":\"a\nb\"}"), "bad_json");
  EXPECT_EQ(error_code("{\"event\":\"A\",\"x\":\"a\tb\"}"), "bad_json");
  EXPECT_EQ(error_code("{\"event\":\"A\",\"x\x1f\":1}"), "bad_json");
  EXPECT_EQ(error_code("{\"event\":\"A\x01\"}"), "bad_json");
}

TEST_F(EventParserTest, BadEscapesRefused) {
  EXPECT_EQ(error_code(R"({"event":"A","x":"\x41"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":"\a"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":"\u12"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":"\uzzzz"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A\q"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x\q":1})"), "bad_json");
}

TEST_F(EventParserTest, LoneSurrogateRefused) {
  EXPECT_EQ(error_code(R"({"event":"A","x":"\ud800"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":"\udc00"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":"\ud800x"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":"\ud800\u0041"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"\ud800"})"), "bad_json");
}

std::string nested_arrays(int depth) {
  return R"({"event":"A","x":)" + std::string(depth, '[') + std::string(depth, ']') + "}";
}

TEST_F(EventParserTest, DeepNestingRefused) {
  EXPECT_EQ(error_code(nested_arrays(2000)), "bad_json");
  std::string objects = R"({"event":"A","x":)";
  for (int i = 0; i < 2000; ++i) objects += R"({"a":)";
  objects += "1" + std::string(2000, '}') + "}";
  EXPECT_EQ(error_code(objects), "bad_json");
}

// Death-test style so that a crash (stack overflow in a recursive walk) fails this
// test in a child process instead of killing the whole test binary.
using EventParserDeathTest = EventParserTest;

TEST_F(EventParserDeathTest, VeryDeepNestingWithinBodyLimitRefusedWithoutCrash) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // 400000 levels is an 800 kB body: under the 1 MiB body limit, so nginx and
  // the worker's own limit both let it through to the parser.
  const std::string body = padded(nested_arrays(400000));
  ASSERT_LT(body.size(), kMaxBody);
  EXPECT_EXIT(
      {
        auto r = parser_.parse(body);
        std::exit(!r.ok() && r.error().code == "bad_json" ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(EventParserTest, ModerateNestingAccepted) {
  EXPECT_EQ(ok(nested_arrays(1000)).event, "A");
}

TEST_F(EventParserTest, InvalidLiteralsRefused) {
  for (std::string_view lit : {"tru", "nul", "fals", "True", "NULL", "truex", "nulls", "t", "n",
                               "undefined", "NaN", "Infinity"}) {
    EXPECT_EQ(error_code(R"({"event":"A","x":)" + std::string(lit) + "}"), "bad_json") << lit;
    EXPECT_EQ(error_code(R"({"event":"A","x":[)" + std::string(lit) + "]}"), "bad_json") << lit;
  }
}

TEST_F(EventParserTest, ValidLiteralsAccepted) {
  EXPECT_EQ(ok(R"({"event":"A","t":true,"f":false,"n":null,"a":[true,false,null]})").event, "A");
}

TEST_F(EventParserTest, InvalidNumbersRefused) {
  for (std::string_view num : {"01", "1.", "-", ".5", "1e", "1e+", "+1", "-01", "00", "1.e5",
                               "0x10", "1_000", "--1", "1.2.3", "-.5", "1E", "0.", "- 1"}) {
    EXPECT_EQ(error_code(R"({"event":"A","x":)" + std::string(num) + "}"), "bad_json") << num;
    EXPECT_EQ(error_code(R"({"event":"A","x":[)" + std::string(num) + "]}"), "bad_json") << num;
  }
}

TEST_F(EventParserTest, HugeNumbersAccepted) {
  // Valid JSON, and jsonb stores them as numeric: refusing them would drop events.
  for (std::string_view num : {"1e400", "-1e400", "1e-400", "123456789012345678901234567890123",
                               "-123456789012345678901234567890123", "18446744073709551616", "0",
                               "-0", "0.0", "1E+2", "1e-2", "-0.5e10", "2.5"}) {
    EXPECT_EQ(error_code(R"({"event":"A","x":)" + std::string(num) + "}"), "ok") << num;
    EXPECT_EQ(error_code(R"({"event":"A","x":[)" + std::string(num) + ",1]}"), "ok") << num;
  }
}

TEST_F(EventParserTest, WholeDocumentValidated) {
  // On Demand parses lazily; the parser must still look at every value.
  EXPECT_EQ(error_code(R"({"event":"A","data":{"a":[1,2,}]}})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","data":{"a" 1}})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","data":{"a":1,}})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A",})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A" "x":1})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":'y'})"), "bad_json");
  EXPECT_EQ(error_code(R"({event:"A"})"), "bad_json");
  EXPECT_EQ(error_code(R"({"x":[1,2,tru],"event":"A"})"), "bad_json");
}

TEST_F(EventParserTest, MismatchedBracketsRefused) {
  EXPECT_EQ(error_code(R"({"event":"A","x":[1 2]})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":[1,]})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":[,1]})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":[1]]})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":[[1]})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":[1}})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":{"a"}})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":{1:2}})"), "bad_json");
}

TEST_F(EventParserTest, ByteOrderMarkRefused) {
  // RFC 8259 forbids sending one, and PostgreSQL's json input refuses it.
  EXPECT_EQ(error_code("\xEF\xBB\xBF{\"event\":\"A\"}"), "bad_json");
}

TEST_F(EventParserTest, ErrorsAfterEventStillRefused) {
  EXPECT_EQ(error_code(R"({"event":"A","z":01})"), "bad_json");
}

TEST_F(EventParserTest, BodyOverParserCapacityRefused) {
  EventParser small(rules(kDefaultRules), 64);
  std::string body = R"({"event":"A","x":")" + std::string(100, 'x') + "\"}";
  auto r = small.parse(padded(body));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "bad_json");
}

// ---------------------------------------------------------------------------
// jsonb compatibility and Unicode

TEST_F(EventParserTest, JsonbIncompatibleNulEscape) {
  EXPECT_FALSE(ok(R"({"event":"A","x":"a\u0000b"})").jsonb_compatible);
  EXPECT_FALSE(ok(R"({"event":"A","k\u0000":1})").jsonb_compatible);
  EXPECT_FALSE(ok(R"({"event":"A","data":{"list":["\u0000"]}})").jsonb_compatible);
  EXPECT_FALSE(ok(R"({"event":"A","data":{"\u0000":null}})").jsonb_compatible);
  EXPECT_FALSE(ok(R"({"\u0000":1,"event":"A"})").jsonb_compatible);
}

TEST_F(EventParserTest, JsonbCompatibleOtherwise) {
  EXPECT_TRUE(ok(R"({"event":"A"})").jsonb_compatible);
  EXPECT_TRUE(ok(R"({"event":"A","x":"a\u0001b","y":"\\u0000"})").jsonb_compatible);
  EXPECT_TRUE(ok(R"({"event":"A","x":"0","n":0,"z":null})").jsonb_compatible);
}

TEST_F(EventParserTest, UnicodeAccepted) {
  EXPECT_EQ(ok("{\"event\":\"A\",\"name\":\"Zo\xC3\xAB\"}").event, "A");
  EXPECT_EQ(ok("{\"event\":\"A\",\"e\":\"\xF0\x9F\x98\x80\"}").event, "A");  // raw emoji
  EXPECT_EQ(ok(R"({"event":"A","e":"\ud83d\ude00"})").event, "A");           // escaped pair
  EXPECT_EQ(ok(R"({"event":"A","e":"\uD83D\uDE00"})").event, "A");
  EXPECT_EQ(ok("{\"event\":\"A\",\"Zo\xC3\xAB\":1}").event, "A");  // in a key
  // Non-ASCII event names are valid too (never reject an unknown event name).
  EXPECT_EQ(ok("{\"event\":\"ZO\xC3\x8B.\xF0\x9F\x98\x80\"}").event, "ZO\xC3\x8B.\xF0\x9F\x98\x80");
  EXPECT_EQ(ok(R"({"event":"\ud83d\ude00"})").event, "\xF0\x9F\x98\x80");
}

TEST_F(EventParserTest, ParserReusableAfterErrors) {
  EXPECT_EQ(error_code("{"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A","x":[[[1]]})"), "bad_json");
  EXPECT_EQ(error_code(R"({"event":"A"} {})"), "bad_json");
  EXPECT_EQ(error_code("{\"event\":\"\xff\"}"), "bad_json");
  EXPECT_EQ(ok(R"({"event":"B","id":7})").dedup_key, "/id=7");
}

}  // namespace
}  // namespace ipayout
