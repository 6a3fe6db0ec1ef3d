// libFuzzer harness: FastCGI parameter and body handling through the real
// libfcgi. The input (format: fuzz_common.h) becomes a FastCGI record stream
// (BEGIN_REQUEST, PARAMS with the name-value pairs, STDIN with the body) written
// to a unix socket that FCGX_Accept_r accepts on, exactly as nginx's connection
// would be; then read_head, headers_json, check_head, read_body, check_body and
// write_response run as in handle_request (everything but the writer).
//
// Options line (letters, some followed by a number), shaping the record stream:
//   q r o    endpoint policy required / record / off
//   k        FCGI_KEEP_CONN          a f z  role authorizer / filter / 0
//   P<n> S<n> largest PARAMS / STDIN record content (default 65535)
//   D<n>     padding bytes per PARAMS and STDIN record with content (as nginx pads)
//   B        padding on BEGIN_REQUEST and on the empty end records too (nginx
//            never does: libfcgi 2.4.2 then loses the params or the body)
//   I<n>     request id (default 1)
//   L        4-byte lengths for every name and value
//   e E      no empty PARAMS / STDIN record at the end
//   g        an FCGI_GET_VALUES management record first
//   T<n>     cut the stream after n bytes
//   X<n>     flip every bit of byte n of the encoded name-value pairs (lengths
//            that lie), up to 8 times
//
// The record framing itself is always the harness's: libfcgi 2.4.2 aborts (an
// assert on a failed malloc) or leaks on some malformed framings, none of which
// nginx can produce, and a fuzzer that stops there finds nothing else. Streams
// whose name-value lengths would make it abort are skipped (see
// stream_aborts_libfcgi).
//
// The listening socket is the harness's own, on an abstract unix address
// (nothing on disk to clean up, whatever way libFuzzer exits), handed to
// FCGX_InitRequest as systemd or spawn-fcgi would hand one over.
//
// FCGX_Accept_r drops a connection whose records it cannot use and accepts the
// next one, so each input is followed by a well-formed "sentinel" connection
// (bound to an abstract address, which tells it apart): the harness never
// blocks on an accept that has nothing to accept. Both clients shut down their
// write side first, so every read in libfcgi ends in data or EOF.
//
// Invariants, for a well-formed stream: the params arrive in order and intact,
// read_body returns exactly the STDIN bytes (cut at Content-Length, kIncomplete
// or, for a stream cut before its end record, kReadError when fewer), with
// simdjson's padding as capacity; for every stream: no crash,
// no hang, headers_json is a JSON object, answers as in fuzz_request.
#include <fcgiapp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fcgi_io.h"
#include "fuzz_common.h"
#include "http.h"
#include "request.h"
#include "writer.h"

namespace {

using namespace ipayout;
using namespace ipayout::fuzz;

constexpr size_t kMaxStream = 64 * 1024;  // fits a unix socket's send buffer whole
constexpr uint8_t kBeginRequest = 1, kParams = 4, kStdin = 5, kGetValues = 9;

int g_listen = -1;
FCGX_Request g_req;
sockaddr_un g_listen_addr, g_sentinel_addr;
socklen_t g_listen_len = 0, g_sentinel_len = 0;

// An abstract unix address (leading NUL): unique per process, nothing on disk.
socklen_t abstract_address(sockaddr_un& addr, const std::string& name) {
  addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

struct Options {
  SignaturePolicy policy = SignaturePolicy::kRequired;
  bool keep_conn = false, long_lengths = false, no_params_end = false, no_stdin_end = false;
  bool get_values = false, pad_all = false;
  int role = 1;  // FCGI_RESPONDER
  size_t params_chunk = 65535, stdin_chunk = 65535, padding = 0;
  unsigned request_id = 1;
  size_t truncate = SIZE_MAX;
  std::vector<size_t> flips;

  bool well_formed() const {
    return role == 1 && request_id != 0 && !no_params_end && !pad_all && truncate == SIZE_MAX &&
           flips.empty();
  }
};

Options parse_options(std::string_view s) {
  Options o;
  o.policy = policy_from_options(s);
  for (size_t i = 0; i < s.size();) {
    char c = s[i++];
    size_t n = 0, digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && digits < 9) {
      n = n * 10 + static_cast<size_t>(s[i++] - '0');
      ++digits;
    }
    switch (c) {
      case 'k':
        o.keep_conn = true;
        break;
      case 'a':
        o.role = 2;
        break;
      case 'f':
        o.role = 3;
        break;
      case 'z':
        o.role = 0;
        break;
      case 'P':
        o.params_chunk = std::clamp<size_t>(n, 1, 65535);
        break;
      case 'S':
        o.stdin_chunk = std::clamp<size_t>(n, 1, 65535);
        break;
      case 'D':
        o.padding = n % 256;
        break;
      case 'I':
        o.request_id = static_cast<unsigned>(n % 65536);
        break;
      case 'L':
        o.long_lengths = true;
        break;
      case 'e':
        o.no_params_end = true;
        break;
      case 'E':
        o.no_stdin_end = true;
        break;
      case 'g':
        o.get_values = true;
        break;
      case 'T':
        o.truncate = n;
        break;
      case 'X':
        if (o.flips.size() < 8) o.flips.push_back(n);
        break;
      case 'B':
        o.pad_all = true;
        break;
      default:
        break;
    }
  }
  return o;
}

void put_record(std::string& out, uint8_t type, unsigned id, std::string_view content,
                size_t padding) {
  const char header[8] = {1,
                          static_cast<char>(type),
                          static_cast<char>(id >> 8),
                          static_cast<char>(id & 0xff),
                          static_cast<char>(content.size() >> 8),
                          static_cast<char>(content.size() & 0xff),
                          static_cast<char>(padding),
                          0};
  out.append(header, 8);
  out.append(content);
  out.append(padding, '\0');
}

// A stream's content as records of at most `chunk` bytes, then an empty one.
void put_stream(std::string& out, uint8_t type, unsigned id, std::string_view data, size_t chunk,
                size_t padding, size_t end_padding, bool end) {
  for (size_t pos = 0; pos < data.size(); pos += chunk) {
    put_record(out, type, id, data.substr(pos, chunk), padding);
  }
  if (end) put_record(out, type, id, {}, end_padding);
}

void put_length(std::string& out, size_t n, bool long_form) {
  if (n < 128 && !long_form) {
    out.push_back(static_cast<char>(n));
    return;
  }
  out.push_back(static_cast<char>(((n >> 24) & 0x7f) | 0x80));
  out.push_back(static_cast<char>((n >> 16) & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
}

std::string name_of(const std::string& param) {
  return param.substr(0, param.find('='));
}
std::string value_of(const std::string& param) {
  size_t eq = param.find('=');
  return eq == std::string::npos ? std::string() : param.substr(eq + 1);
}

std::string build_stream(const TextRequest& tr, const Options& o) {
  std::string out;
  if (o.get_values) {
    std::string pairs;
    for (const char* name : {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"}) {
      put_length(pairs, std::strlen(name), false);
      put_length(pairs, 0, false);
      pairs += name;
    }
    put_record(out, kGetValues, 0, pairs, 0);
  }
  const char begin[8] = {static_cast<char>(o.role >> 8),
                         static_cast<char>(o.role & 0xff),
                         static_cast<char>(o.keep_conn ? 1 : 0),
                         0,
                         0,
                         0,
                         0,
                         0};
  const size_t extra_padding = o.pad_all ? o.padding : 0;
  put_record(out, kBeginRequest, o.request_id, std::string_view(begin, 8), extra_padding);
  std::string pairs;
  for (const auto& p : tr.params) {
    std::string name = name_of(p), value = value_of(p);
    put_length(pairs, name.size(), o.long_lengths);
    put_length(pairs, value.size(), o.long_lengths);
    pairs += name;
    pairs += value;
  }
  for (size_t pos : o.flips) {
    if (pos < pairs.size()) pairs[pos] = static_cast<char>(~pairs[pos]);
  }
  put_stream(out, kParams, o.request_id, pairs, o.params_chunk, o.padding, extra_padding,
             !o.no_params_end);
  put_stream(out, kStdin, o.request_id, tr.body, o.stdin_chunk, o.padding, extra_padding,
             !o.no_stdin_end);
  if (o.truncate < out.size()) out.resize(o.truncate);
  return out;
}

// libfcgi 2.4.2's ReadParams allocates nameLen + valueLen + 2 (an int) before
// reading, and its Malloc asserts on failure: a 4-byte length near 2^31, or a
// length cut by the end of the params, aborts the process (libFuzzer also
// refuses a malloc over -rss_limit_mb). That is the library's, out of reach
// through nginx (which builds every record itself), and it would stop the run
// at once, so such streams are skipped. Conservative: the name-value pairs of
// every PARAMS or GET_VALUES record alone and of each request's PARAMS stream.
bool pairs_abort_libfcgi(std::string_view pairs) {
  size_t pos = 0;
  auto length = [&](size_t& n) {
    if (pos >= pairs.size()) return false;
    unsigned char b = static_cast<unsigned char>(pairs[pos]);
    if (b < 0x80) {
      n = b;
      pos += 1;
      return true;
    }
    if (pos + 4 > pairs.size()) return false;
    n = (static_cast<size_t>(b & 0x7f) << 24) |
        (static_cast<size_t>(static_cast<unsigned char>(pairs[pos + 1])) << 16) |
        (static_cast<size_t>(static_cast<unsigned char>(pairs[pos + 2])) << 8) |
        static_cast<size_t>(static_cast<unsigned char>(pairs[pos + 3]));
    pos += 4;
    return true;
  };
  while (pos < pairs.size()) {
    size_t name = 0, value = 0;
    if (!length(name) || !length(value)) return true;
    if (name + value > (size_t{16} << 20)) return true;
    pos += name + value;
  }
  return false;
}

bool stream_aborts_libfcgi(std::string_view stream) {
  std::map<std::pair<int, unsigned>, std::string> streams;
  for (size_t pos = 0; pos + 8 <= stream.size();) {
    const auto* h = reinterpret_cast<const unsigned char*>(stream.data() + pos);
    const int type = h[1];
    const unsigned id = (h[2] << 8) | h[3];
    const size_t len = (static_cast<size_t>(h[4]) << 8) | h[5];
    std::string_view content = stream.substr(pos + 8, len);
    if (type == kParams || type == kGetValues) {
      if (pairs_abort_libfcgi(content)) return true;
      streams[{type, id}].append(content);
    }
    pos += 8 + len + h[6];
  }
  for (const auto& [key, pairs] : streams) {
    if (pairs_abort_libfcgi(pairs)) return true;
  }
  return false;
}

// A connected client that has sent `stream` and shut down its write side.
int send_client(std::string_view stream, bool sentinel) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_REQUIRE(fd >= 0, "socket: %s", std::strerror(errno));
  if (sentinel) {
    FUZZ_REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&g_sentinel_addr), g_sentinel_len) == 0,
                 "bind sentinel: %s", std::strerror(errno));
  }
  FUZZ_REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&g_listen_addr), g_listen_len) == 0,
               "connect: %s", std::strerror(errno));
  for (size_t done = 0; done < stream.size();) {
    ssize_t n = write(fd, stream.data() + done, stream.size() - done);
    FUZZ_REQUIRE(n > 0, "write: %s", std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  return fd;
}

bool from_sentinel(int ipc_fd) {
  sockaddr_un peer{};
  socklen_t len = sizeof peer;
  if (getpeername(ipc_fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return false;
  return len == g_sentinel_len && std::memcmp(&peer, &g_sentinel_addr, len) == 0;
}

void check_error(const HttpResponse& r) {
  FUZZ_REQUIRE(is_error_body(r.body, r.error_code), "status %d: bad error body %s", r.status,
               r.body.c_str());
}

// handle_request without the writer; `expect` checks params and body when the
// stream was well formed.
void serve(FCGX_Request& req, const TextRequest* expect, bool stdin_cut, SignaturePolicy policy) {
  static EventParser parser(default_rules(), default_settings().body_limit);
  const Settings& settings = default_settings();

  if (expect) {
    char** p = req.envp;
    FUZZ_REQUIRE(p && *p && std::string_view(*p).rfind("FCGI_ROLE=", 0) == 0, "no FCGI_ROLE");
    ++p;
    for (const auto& sent : expect->params) {
      std::string want = name_of(sent) + "=" + value_of(sent);
      if (want.find('\0') != std::string::npos) break;  // C strings end there
      FUZZ_REQUIRE(*p && want == *p, "param %s arrived as %s", want.c_str(), *p ? *p : "(none)");
      ++p;
    }
  }

  const RequestHead head = read_head(req);
  const std::string headers = headers_json(req);
  FUZZ_REQUIRE(headers.front() == '{' && is_valid_json(headers), "headers_json: %s",
               headers.c_str());

  HeadCheck hc = check_head(head, endpoint_cache(policy), settings, kNow);
  std::optional<HttpResponse> response = std::move(hc.response);
  std::string body;
  const size_t padding = EventParser::padded_capacity(0);
  BodyStatus status = read_body(req, head.content_length, settings.body_limit, padding, body);
  FUZZ_REQUIRE(body.capacity() >= body.size() + padding || status != BodyStatus::kOk,
               "body without simdjson padding");
  if (expect && !head.bad_content_length) {
    std::string_view sent = expect->body;
    if (head.content_length && *head.content_length > settings.body_limit) {
      FUZZ_REQUIRE(status == BodyStatus::kTooLarge, "length over the limit not refused");
    } else if (head.content_length && *head.content_length > sent.size()) {
      FUZZ_REQUIRE(status == BodyStatus::kIncomplete || status == BodyStatus::kReadError,
                   "short body not noticed");
    } else if (status == BodyStatus::kReadError) {
      // Read past the data of a STDIN stream that has no end record: the
      // connection was cut, so the body may be incomplete (503, retried).
      FUZZ_REQUIRE(stdin_cut, "complete body refused as a read error");
    } else {
      FUZZ_REQUIRE(status == BodyStatus::kOk, "complete body refused");
      if (head.content_length) sent = sent.substr(0, *head.content_length);
      FUZZ_REQUIRE(body == sent, "body of %zu bytes arrived as %zu bytes", sent.size(),
                   body.size());
    }
  }
  if (!response && status == BodyStatus::kTooLarge) {
    response = error_response(413, "payload_too_large", "body too large");
  } else if (!response && status == BodyStatus::kIncomplete) {
    response = error_response(400, "bad_request", "body shorter than Content-Length");
  } else if (!response && status == BodyStatus::kReadError) {
    response = error_response(503, "unavailable", "request body could not be read");
  }
  if (!response) {
    EventRecord record;
    response = check_body(head, *hc.endpoint, settings, kNow, parser, body, record);
    if (!response) {
      FUZZ_REQUIRE(!record.event.empty() && !record.dedup_key.empty(), "event without key");
      StoreResult stored;
      stored.outcome = StoreOutcome::kAccepted;
      stored.id = 1;
      response = store_response(stored, *hc.endpoint, settings);
    }
  }
  if (response->status >= 400) check_error(*response);
  write_response(req, *response);
}

}  // namespace

// libfcgi 2.4.2 leaks 48 bytes when a management record (request id 0, e.g.
// FCGI_GET_VALUES) has malformed name-value pairs (option g with T cutting it).
// nginx sends no management records; the library has no symbols to narrow this
// to one function, hence the whole module.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libfcgi.so\n";
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);  // a peer that went away must not end the run
  FUZZ_REQUIRE(FCGX_Init() == 0, "FCGX_Init");
  const std::string pid = std::to_string(getpid());
  g_listen_len = abstract_address(g_listen_addr, "ipayout-fuzz-fcgi-" + pid);
  g_sentinel_len = abstract_address(g_sentinel_addr, "ipayout-fuzz-sentinel-" + pid);
  g_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_REQUIRE(g_listen >= 0 &&
                   bind(g_listen, reinterpret_cast<sockaddr*>(&g_listen_addr), g_listen_len) == 0 &&
                   listen(g_listen, 16) == 0,
               "listening socket: %s", std::strerror(errno));
  FUZZ_REQUIRE(FCGX_InitRequest(&g_req, g_listen, 0) == 0, "FCGX_InitRequest");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxStream / 2) return 0;  // the stream (params framing, padding) must fit
  const TextRequest tr = parse_text_request(data, size);
  const Options o = parse_options(tr.options);
  const std::string stream = build_stream(tr, o);
  if (stream.size() > kMaxStream || stream_aborts_libfcgi(stream)) return 0;

  // The sentinel: a minimal well-formed request.
  static const std::string sentinel = [] {
    TextRequest s;
    s.params = {"REQUEST_METHOD=GET"};
    return build_stream(s, Options{});
  }();

  const int client = send_client(stream, false);
  const int sentinel_client = send_client(sentinel, true);
  for (int served = 0;; ++served) {
    if (served == 3) {  // a kept connection with more requests: enough of it
      FCGX_Finish_r(&g_req);
      FCGX_Free(&g_req, 1);
    }
    FUZZ_REQUIRE(FCGX_Accept_r(&g_req) == 0, "FCGX_Accept_r failed");
    if (from_sentinel(g_req.ipcFd)) break;
    FUZZ_REQUIRE(served < 3, "the sentinel was not accepted after a closed connection");
    serve(g_req, served == 0 && o.well_formed() ? &tr : nullptr, o.no_stdin_end, o.policy);
  }
  FCGX_Finish_r(&g_req);
  close(client);
  close(sentinel_client);
  return 0;
}
