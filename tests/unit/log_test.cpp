// The log line format: one record is one line, whatever the message holds.
#include "log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <sstream>
#include <string>

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
