// The log line format: one record is one line, whatever the message holds.
#include "log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

std::string logged(const std::string& message) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  spdlog::logger logger("test", sink);
  logger.set_formatter(ipayout::line_formatter());
  logger.info("{}", message);
  logger.flush();
  return out.str();
}

TEST(LogTest, LogfmtPrefixWithThisProcessPid) {
  std::string line = logged("msg=hello");
  EXPECT_EQ(line.rfind("ts=", 0), 0u) << line;
  EXPECT_NE(line.find(" level=info pid=" + std::to_string(getpid()) + " msg=hello\n"),
            std::string::npos)
      << line;
}

TEST(LogTest, AMultiLineMessageStaysOneLine) {
  // As libpq reports a missing relation: text, newline, position, newline.
  std::string line = logged(
      "msg=\"loading endpoints failed\" error=\"ERROR:  relation does not exist\nLINE 1: "
      "SELECT\r\n\tx\x01\x7f\"");
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;  // only the line's own end
  EXPECT_NE(line.find("exist\\nLINE 1: SELECT\\r\\n\\tx\\x01\\x7f\""), std::string::npos) << line;
}

TEST(LogTest, Utf8PassesUnchanged) {
  std::string line = logged("endpoint=caf\xc3\xa9");
  EXPECT_NE(line.find("endpoint=caf\xc3\xa9\n"), std::string::npos) << line;
}

}  // namespace

// The worker's logging: lines gather in a buffer that one thread writes to
// stderr. Here stderr is a pipe this test reads (or does not read).
namespace {

class StderrPipe {
 public:
  StderrPipe() {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    read_fd_ = fds[0];
    saved_ = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
  }
  void start_reading() {
    reader_ = std::thread([this] {
      char buf[65536];
      for (ssize_t n; (n = read(read_fd_, buf, sizeof buf)) > 0;) text_.append(buf, n);
    });
  }
  // Restores stderr (the pipe's last writer goes) and returns what was read.
  std::string finish() {
    fflush(stderr);
    dup2(saved_, STDERR_FILENO);
    close(saved_);
    if (!reader_.joinable()) start_reading();
    reader_.join();
    close(read_fd_);
    return text_;
  }

 private:
  int read_fd_ = -1;
  int saved_ = -1;
  std::thread reader_;
  std::string text_;
};

std::vector<int> line_numbers(const std::string& text) {
  std::vector<int> out;
  for (size_t at = text.find(" n="); at != std::string::npos; at = text.find(" n=", at + 1)) {
    out.push_back(std::stoi(text.substr(at + 3)));
  }
  return out;
}

TEST(BufferedLogTest, EveryLineArrivesInOrderByTheFinish) {
  StderrPipe err;
  err.start_reading();
  ipayout::setup_logging("info");
  ipayout::use_async_logging();
  const size_t dropped_before = ipayout::dropped_log_lines();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 500; ++i) spdlog::info("msg=line n={}", t * 500 + i);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ipayout::dropped_log_lines(), dropped_before);
  ipayout::finish_logging();
  std::vector<int> n = line_numbers(err.finish());
  ASSERT_EQ(n.size(), 2000u);
  // Each thread's lines in its own order (the threads interleave).
  std::vector<int> last(4, -1);
  for (int v : n) {
    EXPECT_GT(v, last[v / 500]) << v;
    last[v / 500] = v;
  }
}

TEST(BufferedLogTest, AStalledStderrDropsLinesAndNeverBlocksTheCaller) {
  StderrPipe err;  // nobody reads it until the end: the pipe fills (64 KB), then the buffer
  ipayout::setup_logging("info");
  ipayout::use_async_logging();
  const size_t dropped_before = ipayout::dropped_log_lines();
  const std::string pad(100, 'x');
  constexpr int kLines = 60000;  // about 8 MB: four times the buffer
  for (int i = 0; i < kLines; ++i) spdlog::info("msg=line n={} pad={}", i, pad);
  const size_t dropped = ipayout::dropped_log_lines() - dropped_before;
  EXPECT_GT(dropped, 0u);
  err.start_reading();
  ipayout::finish_logging();
  std::vector<int> n = line_numbers(err.finish());
  EXPECT_EQ(n.size() + dropped, static_cast<size_t>(kLines));
  ASSERT_FALSE(n.empty());
  EXPECT_EQ(n.front(), 0);  // the newest lines are dropped, the first ones kept
  for (size_t i = 1; i < n.size(); ++i) ASSERT_GT(n[i], n[i - 1]);
}

}  // namespace
