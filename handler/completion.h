// One result handed from one thread (the writer) to one waiting thread (a
// request), with a deadline. A raw futex: the wait and the wake are one
// system call each, and the wake is skipped when nobody sleeps. std::promise
// and std::future cost an allocation of their shared state and, measured
// under load, about three futex calls per request instead of two.
//
// Invariant: set() is called at most once; get() is read only after wait()
// returned true (set()'s release store happens-before it).
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <utility>

namespace ipayout {

template <typename T>
class Completion {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word");

 public:
  // The setter's side. Never blocks.
  void set(T value) {
    value_ = std::move(value);
    if (state_.exchange(kDone, std::memory_order_acq_rel) == kSleeping) {
      syscall(SYS_futex, &state_, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
    }
  }

  // The waiter's side: true once set() ran, false if `timeout` passed first.
  bool wait_for(std::chrono::milliseconds timeout) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      uint32_t s = state_.load(std::memory_order_acquire);
      if (s == kDone) return true;
      if (s == kPending &&
          !state_.compare_exchange_strong(s, kSleeping, std::memory_order_acq_rel)) {
        continue;  // set() ran in between (s is now kDone)
      }
      const auto left = deadline - Clock::now();
      if (left <= Clock::duration::zero()) return state_.load(std::memory_order_acquire) == kDone;
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
      // Sleeps only while the state is still kSleeping; returns at once
      // (EAGAIN) if set() got there first, or on a wake, a signal, the timeout.
      syscall(SYS_futex, &state_, FUTEX_WAIT_PRIVATE, kSleeping, &ts, nullptr, 0);
    }
  }

  const T& get() const { return value_; }

 private:
  static constexpr uint32_t kPending = 0;
  static constexpr uint32_t kSleeping = 1;  // the waiter is (about to be) in FUTEX_WAIT
  static constexpr uint32_t kDone = 2;
  std::atomic<uint32_t> state_{kPending};
  T value_{};
};

}  // namespace ipayout
