#include "log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace ipayout {
namespace {

// %* : the message with its control characters escaped (see line_formatter).
class OneLineMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u != 0x7f) {
        dest.push_back(c);
        continue;
      }
      const char* esc = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : nullptr;
      if (esc != nullptr) {
        dest.append(esc, esc + 2);
      } else {
        const char hex[4] = {'\\', 'x', kHex[u >> 4], kHex[u & 15]};
        dest.append(hex, hex + 4);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<OneLineMessage>();
  }
};

// logfmt: ts=... level=... pid=... then the message's own key=value pairs.
// The pid is written into the pattern when the logger is made (after fork, in
// a worker): spdlog's %P would ask the kernel for it on every line.
std::string pattern() {
  return "ts=%Y-%m-%dT%H:%M:%S.%e%z level=%l pid=" + std::to_string(getpid()) + " %*";
}
// About 8k request lines: what may gather while the journal does not read.
constexpr size_t kBufferBytes = 2 << 20;
// Written at once, without waiting for the interval, past this much.
constexpr size_t kFlushBytes = 64 << 10;
// The most a line waits in the buffer while the journal keeps up.
constexpr std::chrono::milliseconds kFlushInterval{10};

// The worker's sink: lines gather in a buffer, one thread writes them to
// stderr. Callers never block on stderr, only on the buffer's lock.
class BufferedStderrSink final : public spdlog::sinks::sink {
 public:
  BufferedStderrSink() : formatter_(line_formatter()), thread_([this] { run(); }) {}
  ~BufferedStderrSink() override { stop(); }

  void log(const spdlog::details::log_msg& msg) override {
    bool wake = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      // Formatted under the lock: pattern_formatter caches the time and is
      // not safe to share between threads.
      line_.clear();
      formatter_->format(msg, line_);
      if (buffer_.size() + line_.size() > kBufferBytes) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      buffer_.append(line_.data(), line_.size());
      // Wake the thread if it sleeps until the first line, or if it should
      // not wait out its interval; otherwise it comes by itself.
      if (idle_ || (buffer_.size() >= kFlushBytes && buffer_.size() - line_.size() < kFlushBytes)) {
        idle_ = false;
        wake = true;
      }
    }
    if (wake) cv_.notify_one();
  }
  void flush() override {
    std::string out;
    {
      std::lock_guard<std::mutex> lk(mu_);
      out.swap(buffer_);
    }
    write_all(out);
  }
  void set_pattern(const std::string&) override {}  // always line_formatter()
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}

  size_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

  // Writes what is buffered and ends the thread.
  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
    flush();
  }

 private:
  static void write_all(const std::string& out) {
    for (size_t done = 0; done < out.size();) {
      ssize_t n = write(STDERR_FILENO, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // stderr is gone: nothing else could take the lines
      done += static_cast<size_t>(n);
    }
  }

  void run() {
    std::string out;
    std::unique_lock<std::mutex> lk(mu_);
    while (!stopping_) {
      idle_ = true;
      cv_.wait(lk, [&] { return stopping_ || !buffer_.empty(); });
      idle_ = false;
      // Let the lines of the next few milliseconds join this write.
      cv_.wait_for(lk, kFlushInterval, [&] { return stopping_ || buffer_.size() >= kFlushBytes; });
      out.swap(buffer_);
      lk.unlock();
      write_all(out);
      out.clear();
      lk.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<spdlog::formatter> formatter_;
  spdlog::memory_buf_t line_;  // scratch, under mu_
  std::string buffer_;
  bool idle_ = false;  // the thread waits for a first line (needs a wake)
  bool stopping_ = false;
  std::atomic<size_t> dropped_{0};
  std::thread thread_;  // last: started once the members above exist
};

std::shared_ptr<BufferedStderrSink> g_sink;

// Every logger this process makes: the same pattern; `flush_each` for the
// synchronous ones (the async one writes each line as its thread takes it).
void install(std::shared_ptr<spdlog::logger> logger, spdlog::level::level_enum level,
             bool flush_each) {
  logger->set_formatter(line_formatter());
  logger->set_level(level);
  if (flush_each) logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

// Synchronous, on stderr (journald keeps it under systemd).
std::shared_ptr<spdlog::logger> stderr_logger(const char* name) {
  return std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::stderr_sink_mt>());
}

}  // namespace

std::unique_ptr<spdlog::formatter> line_formatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<OneLineMessage>('*').set_pattern(pattern());
  return f;
}

void setup_logging(const std::string& level) {
  install(stderr_logger("ipayout"), spdlog::level::from_str(level), true);
}

void use_async_logging() {
  // What the synchronous logger wrote so far is out before the first buffered line.
  spdlog::default_logger()->flush();
  g_sink = std::make_shared<BufferedStderrSink>();
  install(std::make_shared<spdlog::logger>("ipayout-buffered", g_sink),
          spdlog::default_logger()->level(), false);
}

size_t dropped_log_lines() {
  return g_sink ? g_sink->dropped() : 0;
}

void finish_logging() {
  // Back to a synchronous logger, then every buffered line is written and
  // the sink's thread ends.
  install(stderr_logger("ipayout-exit"), spdlog::default_logger()->level(), true);
  if (g_sink) g_sink->stop();
}

}  // namespace ipayout
