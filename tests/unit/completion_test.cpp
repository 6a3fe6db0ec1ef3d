// Completion: one result from the writer to one waiting request, with a deadline.
#include "completion.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

namespace {

using ipayout::Completion;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

TEST(CompletionTest, SetBeforeTheWaitIsSeenAtOnce) {
  Completion<std::string> c;
  c.set("stored");
  const auto t0 = Clock::now();
  ASSERT_TRUE(c.wait_for(milliseconds(5000)));
  EXPECT_LT(Clock::now() - t0, milliseconds(1000));
  EXPECT_EQ(c.get(), "stored");
}

TEST(CompletionTest, ASleepingWaiterIsWokenBySet) {
  Completion<int> c;
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    c.set(42);
  });
  const auto t0 = Clock::now();
  ASSERT_TRUE(c.wait_for(milliseconds(10000)));
  // Woken by set(), not by the deadline.
  EXPECT_LT(Clock::now() - t0, milliseconds(5000));
  EXPECT_EQ(c.get(), 42);
  setter.join();
}

TEST(CompletionTest, TheDeadlineEndsTheWait) {
  Completion<int> c;
  const auto t0 = Clock::now();
  EXPECT_FALSE(c.wait_for(milliseconds(30)));
  EXPECT_GE(Clock::now() - t0, milliseconds(30));
  c.set(1);  // late: the writer may still finish an item whose request gave up
  EXPECT_TRUE(c.wait_for(milliseconds(0)));
}

TEST(CompletionTest, ManyHandOffsNeverLoseAWake) {
  // The race the three states guard: set() between the waiter's check and its sleep.
  for (int i = 0; i < 2000; ++i) {
    Completion<int> c;
    std::thread setter([&] { c.set(i); });
    ASSERT_TRUE(c.wait_for(milliseconds(10000))) << i;
    EXPECT_EQ(c.get(), i);
    setter.join();
  }
}

}  // namespace
