// Counters a human and a test can read, Prometheus text format. They live in
// one shared anonymous mapping made by the pool master before it forks, so
// every worker process counts into the same numbers and any worker can answer
// a scrape. Only lock-free std::atomic members: they work across processes.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "signature.h"

namespace ipayout::metrics {

// Maps the shared block (idempotent). Call in the master before forking; a
// process that never calls it counts into a private block (tests, tools).
void init();

// Which worker slot this process fills (0..kMaxWorkers-1), for per-worker gauges.
void set_worker_slot(int slot);
constexpr int kMaxWorkers = 64;

void count_request(int64_t endpoint_id, std::string_view endpoint_name, int status, double seconds);
void count_event(std::string_view event);
void count_duplicate(int64_t endpoint_id, std::string_view endpoint_name);
// kMissing, kInvalid or kExpired (the verdicts a policy refuses); others are not counted.
void count_signature_failure(SignatureVerdict verdict);
// A delivery refused for its endpoint's required header (missing or wrong).
void count_required_header_failure(int64_t endpoint_id, std::string_view endpoint_name);
void observe_batch(size_t events, double commit_seconds);
void count_reconnect();
void count_worker_restart();
void count_log_lines_dropped(uint64_t n);
void count_fastcgi_connection();
void set_queue_depth(size_t depth);
void set_db_connected(bool up);
void set_endpoints_loaded(size_t n);
// A reload of the endpoints: every row, or only the rows that changed.
enum class EndpointLoad { kFull, kIncremental };
void count_endpoint_load(EndpointLoad kind);

std::string render();  // the whole exposition, text format 0.0.4

}  // namespace ipayout::metrics
