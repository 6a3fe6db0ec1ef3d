// Which FastCGI connection a request thread serves next.
//
// One thread per worker process owns the listening socket and every idle
// connection (epoll). Request threads take a connection only when a request is
// waiting on it, and give it back after answering if nginx keeps it open
// (`fastcgi_keep_conn on` with `keepalive N` in the upstream). So libfcgi never
// blocks a request thread in accept() or on an idle kept-alive connection:
// any number of idle connections cost no thread, and a drain needs no signal
// to pull threads out of accept().
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>

namespace ipayout {

class Connections {
 public:
  explicit Connections(int listen_fd);
  ~Connections();
  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;

  // Sets the listening socket non-blocking (all workers share it: one that
  // lost the race for a connection must not block) and starts the thread.
  bool start();

  // Blocks until a connection has a request (or its end) waiting; returns its descriptor,
  // now owned by the caller. -1 once drained: nothing waiting, nothing left.
  int next();

  // After the answer, for a connection nginx keeps open: watch it again.
  void give_back(int fd);

  // Stops accepting. Idle connections get `grace` to bring one more request
  // (nginx may have just picked one from its cache), then are closed.
  void drain(std::chrono::milliseconds grace);

 private:
  void run();
  bool accept_new();            // false: accepting failed (descriptors exhausted...), pause
  void set_listening(bool on);  // only the connection thread
  void close_idle();            // with mu_ held
  void watch(int fd, int op);   // EPOLL_CTL_ADD (new) or _MOD (given back); mu_ held

  int listen_fd_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: drain() wakes the thread with it
  std::thread thread_;
  // Only the connection thread touches these.
  bool listening_ = false;  // the listening socket is in the epoll set
  int accept_failures_ = 0;
  std::chrono::steady_clock::time_point last_accept_warning_{};

  mutable std::mutex mu_;
  std::condition_variable ready_cv_;
  std::deque<int> ready_;         // a request is waiting on each
  std::unordered_set<int> idle_;  // watched by epoll, owned by no thread
  bool draining_ = false;
  bool finished_ = false;  // drained: every idle connection closed
  std::chrono::steady_clock::time_point drain_deadline_{};
};

}  // namespace ipayout
