#include "metrics.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstring>
#include <new>

#include "http.h"

namespace ipayout::metrics {
namespace {

static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared counters need lock-free atomics");

constexpr int kEndpointSlots = 256;  // more endpoints than this share the "other" slot
constexpr int kEventSlots = 256;     // more event names than this share "other"
constexpr int kMaxStatus = 600;

// The signature failures counted, in the order of their counters; the label
// is the verdict's own name (to_string).
constexpr SignatureVerdict kSignatureFailures[] = {
    SignatureVerdict::kMissing, SignatureVerdict::kInvalid, SignatureVerdict::kExpired};
constexpr int kSignatureFailureN = sizeof kSignatureFailures / sizeof kSignatureFailures[0];

// Histogram bucket upper bounds.
constexpr double kBatchBuckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
constexpr double kSecondsBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1,    0.25,  0.5,    1,     2.5,  5,     10};
constexpr int kBatchN = sizeof kBatchBuckets / sizeof kBatchBuckets[0];
constexpr int kSecondsN = sizeof kSecondsBuckets / sizeof kSecondsBuckets[0];

template <int N>
struct Histogram {
  std::atomic<uint64_t> buckets[N + 1];  // last one is +Inf
  std::atomic<uint64_t> count;
  std::atomic<uint64_t> sum_micro;  // sum in millionths of the unit

  void observe(const double (&bounds)[N], double v) {
    int i = 0;
    while (i < N && v > bounds[i]) ++i;
    buckets[i].fetch_add(1, std::memory_order_relaxed);
    count.fetch_add(1, std::memory_order_relaxed);
    sum_micro.fetch_add(static_cast<uint64_t>(v * 1e6), std::memory_order_relaxed);
  }
};

// A slot is claimed by CAS on `key` (0 = free), then its name is written and
// `ready` set; readers skip slots that are not ready.
struct EndpointSlot {
  std::atomic<int64_t> key;
  std::atomic<bool> ready;
  char name[64];
  std::atomic<uint64_t> by_status[kMaxStatus];
  std::atomic<uint64_t> duplicates;
  std::atomic<uint64_t> required_header_failures;
};

struct EventSlot {
  std::atomic<uint64_t> key;  // FNV-1a of the name, never 0
  std::atomic<bool> ready;
  char name[256];
  std::atomic<uint64_t> count;
};

struct Block {
  EndpointSlot endpoints[kEndpointSlots + 1];  // [kEndpointSlots] = other / none
  EventSlot events[kEventSlots + 1];           // [kEventSlots] = other
  std::atomic<uint64_t> signature_failures[kSignatureFailureN];
  Histogram<kBatchN> batch_size;
  Histogram<kSecondsN> commit_seconds;
  Histogram<kSecondsN> request_seconds;
  std::atomic<uint64_t> reconnects;
  std::atomic<uint64_t> worker_restarts;
  std::atomic<uint64_t> log_lines_dropped;
  std::atomic<uint64_t> fastcgi_connections;
  std::atomic<uint64_t> endpoint_loads[2];  // by EndpointLoad
  std::atomic<int64_t> queue_depth[kMaxWorkers];
  std::atomic<int64_t> db_connected[kMaxWorkers];  // -1 = slot unused
  std::atomic<int64_t> endpoints_loaded[kMaxWorkers];
};

Block* g_block = nullptr;
int g_slot = 0;

Block* block() {
  if (!g_block) init();
  return g_block;
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h ? h : 1;
}

void copy_name(char* dst, size_t cap, std::string_view src) {
  size_t n = std::min(cap - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

template <typename Slot, typename Key>
Slot* claim(Slot* slots, int n, Key key, std::string_view name) {
  const size_t start = static_cast<size_t>(key) % static_cast<size_t>(n);
  for (int probe = 0; probe < n; ++probe) {
    Slot& s = slots[(start + static_cast<size_t>(probe)) % static_cast<size_t>(n)];
    Key cur = s.key.load(std::memory_order_acquire);
    if (cur == key) return &s;
    if (cur == 0) {
      Key expected = 0;
      if (s.key.compare_exchange_strong(expected, key)) {
        copy_name(s.name, sizeof s.name, name);
        s.ready.store(true, std::memory_order_release);
        return &s;
      }
      if (expected == key) return &s;
    }
  }
  return &slots[n];  // full: the overflow slot
}

EndpointSlot* endpoint_slot(int64_t id, std::string_view name) {
  Block* b = block();
  if (id <= 0) return &b->endpoints[kEndpointSlots];
  return claim(b->endpoints, kEndpointSlots, id, name);
}

void append_label(std::string& out, std::string_view value) {
  // Prometheus label values escape \, " and newline; append_json_string does
  // that and also keeps the value valid UTF-8.
  append_json_string(out, value);
}

template <int N>
void render_histogram(std::string& out, const char* name, const char* help, const Histogram<N>& h,
                      const double (&bounds)[N]) {
  char line[160];
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (int i = 0; i <= N; ++i) {
    cumulative += h.buckets[i].load(std::memory_order_relaxed);
    if (i < N) {
      std::snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
                    static_cast<unsigned long long>(cumulative));
    } else {
      std::snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %llu\n", name,
                    static_cast<unsigned long long>(cumulative));
    }
    out += line;
  }
  std::snprintf(line, sizeof line, "%s_sum %.6f\n%s_count %llu\n", name,
                static_cast<double>(h.sum_micro.load()) / 1e6, name,
                static_cast<unsigned long long>(h.count.load()));
  out += line;
}

}  // namespace

void init() {
  if (g_block) return;
  void* p = mmap(nullptr, sizeof(Block), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    static Block private_block;  // still counts, just not across processes
    g_block = &private_block;
  } else {
    g_block = new (p) Block();  // zero-initialised by mmap; placement-new starts lifetimes
  }
  for (auto& c : g_block->db_connected) c.store(-1);
}

void set_worker_slot(int slot) {
  g_slot = slot >= 0 && slot < kMaxWorkers ? slot : 0;
}

void count_request(int64_t endpoint_id, std::string_view endpoint_name, int status,
                   double seconds) {
  EndpointSlot* s = endpoint_slot(endpoint_id, endpoint_name);
  if (status >= 0 && status < kMaxStatus)
    s->by_status[status].fetch_add(1, std::memory_order_relaxed);
  block()->request_seconds.observe(kSecondsBuckets, seconds);
}

void count_event(std::string_view event) {
  Block* b = block();
  claim(b->events, kEventSlots, fnv1a(event), event)->count.fetch_add(1, std::memory_order_relaxed);
}

void count_duplicate(int64_t endpoint_id, std::string_view endpoint_name) {
  endpoint_slot(endpoint_id, endpoint_name)->duplicates.fetch_add(1, std::memory_order_relaxed);
}

void count_required_header_failure(int64_t endpoint_id, std::string_view endpoint_name) {
  endpoint_slot(endpoint_id, endpoint_name)
      ->required_header_failures.fetch_add(1, std::memory_order_relaxed);
}

void count_signature_failure(SignatureVerdict verdict) {
  for (int i = 0; i < kSignatureFailureN; ++i) {
    if (kSignatureFailures[i] == verdict) {
      block()->signature_failures[i].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
}

void observe_batch(size_t events, double commit_seconds) {
  block()->batch_size.observe(kBatchBuckets, static_cast<double>(events));
  block()->commit_seconds.observe(kSecondsBuckets, commit_seconds);
}

void count_reconnect() {
  block()->reconnects.fetch_add(1, std::memory_order_relaxed);
}
void count_worker_restart() {
  block()->worker_restarts.fetch_add(1, std::memory_order_relaxed);
}

void count_fastcgi_connection() {
  block()->fastcgi_connections.fetch_add(1, std::memory_order_relaxed);
}

void count_log_lines_dropped(uint64_t n) {
  if (n) block()->log_lines_dropped.fetch_add(n, std::memory_order_relaxed);
}
void set_queue_depth(size_t depth) {
  block()->queue_depth[g_slot].store(static_cast<int64_t>(depth), std::memory_order_relaxed);
}
void set_db_connected(bool up) {
  block()->db_connected[g_slot].store(up ? 1 : 0);
}
void set_endpoints_loaded(size_t n) {
  block()->endpoints_loaded[g_slot].store(static_cast<int64_t>(n), std::memory_order_relaxed);
}

void count_endpoint_load(EndpointLoad kind) {
  block()->endpoint_loads[static_cast<int>(kind)].fetch_add(1, std::memory_order_relaxed);
}

std::string render() {
  Block* b = block();
  std::string out;
  out.reserve(16384);
  char num[64];
  auto value = [&](uint64_t v) {
    std::snprintf(num, sizeof num, " %llu\n", static_cast<unsigned long long>(v));
    out += num;
  };

  out +=
      "# HELP ipayout_requests_total Webhook requests answered, by endpoint and HTTP status.\n"
      "# TYPE ipayout_requests_total counter\n";
  for (int i = 0; i <= kEndpointSlots; ++i) {
    const EndpointSlot& s = b->endpoints[i];
    bool other = i == kEndpointSlots;
    if (!other && !s.ready.load(std::memory_order_acquire)) continue;
    for (int status = 0; status < kMaxStatus; ++status) {
      uint64_t v = s.by_status[status].load(std::memory_order_relaxed);
      if (!v) continue;
      out += "ipayout_requests_total{endpoint=";
      append_label(out, other ? "" : s.name);
      out += ",status=\"" + std::to_string(status) + "\"}";
      value(v);
    }
  }
  out +=
      "# HELP ipayout_duplicates_total Deliveries answered as duplicates, by endpoint.\n"
      "# TYPE ipayout_duplicates_total counter\n";
  for (int i = 0; i < kEndpointSlots; ++i) {
    const EndpointSlot& s = b->endpoints[i];
    if (!s.ready.load(std::memory_order_acquire)) continue;
    out += "ipayout_duplicates_total{endpoint=";
    append_label(out, s.name);
    out += "}";
    value(s.duplicates.load(std::memory_order_relaxed));
  }
  out +=
      "# HELP ipayout_required_header_failures_total Deliveries refused (401) because the "
      "endpoint's required header was missing or wrong, by endpoint.\n"
      "# TYPE ipayout_required_header_failures_total counter\n";
  for (int i = 0; i < kEndpointSlots; ++i) {
    const EndpointSlot& s = b->endpoints[i];
    if (!s.ready.load(std::memory_order_acquire)) continue;
    out += "ipayout_required_header_failures_total{endpoint=";
    append_label(out, s.name);
    out += "}";
    value(s.required_header_failures.load(std::memory_order_relaxed));
  }
  out +=
      "# HELP ipayout_events_total Events stored, by event name (\"\" = names beyond the first "
      "256).\n# TYPE ipayout_events_total counter\n";
  for (int i = 0; i <= kEventSlots; ++i) {
    const EventSlot& s = b->events[i];
    bool other = i == kEventSlots;
    if (!other && !s.ready.load(std::memory_order_acquire)) continue;
    uint64_t v = s.count.load(std::memory_order_relaxed);
    if (other && !v) continue;
    out += "ipayout_events_total{event=";
    append_label(out, other ? "" : s.name);
    out += "}";
    value(v);
  }
  out +=
      "# HELP ipayout_signature_failures_total Requests whose signature did not verify, by "
      "reason.\n# TYPE ipayout_signature_failures_total counter\n";
  for (int i = 0; i < kSignatureFailureN; ++i) {
    out += std::string("ipayout_signature_failures_total{reason=\"") +
           to_string(kSignatureFailures[i]) + "\"}";
    value(b->signature_failures[i].load());
  }
  render_histogram(out, "ipayout_batch_size", "Events per group commit.", b->batch_size,
                   kBatchBuckets);
  render_histogram(out, "ipayout_commit_duration_seconds", "Time to insert and commit one batch.",
                   b->commit_seconds, kSecondsBuckets);
  render_histogram(out, "ipayout_request_duration_seconds",
                   "Time from reading a request to its answer, in the worker.", b->request_seconds,
                   kSecondsBuckets);
  out +=
      "# HELP ipayout_db_reconnects_total Database connections the writers opened.\n"
      "# TYPE ipayout_db_reconnects_total counter\nipayout_db_reconnects_total";
  value(b->reconnects.load());
  out +=
      "# HELP ipayout_worker_restarts_total Worker processes replaced after dying.\n"
      "# TYPE ipayout_worker_restarts_total counter\nipayout_worker_restarts_total";
  value(b->worker_restarts.load());
  out +=
      "# HELP ipayout_log_lines_dropped_total Log lines dropped because the log buffer was full "
      "(the journal or stderr reader fell behind; requests were not held up).\n"
      "# TYPE ipayout_log_lines_dropped_total counter\nipayout_log_lines_dropped_total";
  value(b->log_lines_dropped.load());
  out +=
      "# HELP ipayout_fastcgi_connections_total FastCGI connections accepted from nginx (with "
      "upstream keepalive, far fewer than requests).\n"
      "# TYPE ipayout_fastcgi_connections_total counter\nipayout_fastcgi_connections_total";
  value(b->fastcgi_connections.load());
  out +=
      "# HELP ipayout_endpoint_loads_total Endpoint reloads: kind=\"full\" read every row (first "
      "load, SIGHUP, a new connection, or a change the worker could not be sure of), "
      "kind=\"incremental\" only the rows that changed.\n"
      "# TYPE ipayout_endpoint_loads_total counter\n"
      "ipayout_endpoint_loads_total{kind=\"full\"}";
  value(b->endpoint_loads[static_cast<int>(EndpointLoad::kFull)].load());
  out += "ipayout_endpoint_loads_total{kind=\"incremental\"}";
  value(b->endpoint_loads[static_cast<int>(EndpointLoad::kIncremental)].load());
  out +=
      "# HELP ipayout_writer_queue_depth Events waiting for a commit, by worker.\n"
      "# TYPE ipayout_writer_queue_depth gauge\n";
  std::string connected =
      "# HELP ipayout_db_connected Whether a worker's writer has a database connection.\n"
      "# TYPE ipayout_db_connected gauge\n";
  std::string loaded =
      "# HELP ipayout_endpoints_loaded Enabled endpoints a worker knows.\n"
      "# TYPE ipayout_endpoints_loaded gauge\n";
  for (int i = 0; i < kMaxWorkers; ++i) {
    int64_t up = b->db_connected[i].load();
    if (up < 0) continue;
    std::string label = "{worker=\"" + std::to_string(i) + "\"}";
    out += "ipayout_writer_queue_depth" + label;
    value(static_cast<uint64_t>(b->queue_depth[i].load()));
    connected += "ipayout_db_connected" + label + " " + std::to_string(up) + "\n";
    loaded += "ipayout_endpoints_loaded" + label + " " +
              std::to_string(b->endpoints_loaded[i].load()) + "\n";
  }
  out += connected;
  out += loaded;
  return out;
}

}  // namespace ipayout::metrics
