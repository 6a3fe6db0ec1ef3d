// Which FastCGI connection a request thread serves next.
//
// One thread per worker process owns the listening socket: it accepts and
// registers each new connection in the "ready" epoll set (one-shot). The
// request threads themselves wait on that set (leader/followers): the kernel
// wakes one of them when a request arrives on an idle connection, with no
// hand-off through another thread (that hop cost two context switches and
// about three futex calls per request). A request thread gives the connection
// back after answering if nginx keeps it open (`fastcgi_keep_conn on` with
// `keepalive N` in the upstream). So libfcgi never blocks a request thread in
// accept() or on an idle kept-alive connection: any number of idle
// connections cost no thread, and a drain needs no signal to pull threads out
// of accept().
//
// Invariant: a descriptor is owned by exactly one of: `idle_` (watched,
// armed), one request thread (taken: erased from `idle_` under mu_), or nobody
// (closed). Whoever erases it from `idle_` owns it; an epoll report of a
// descriptor that is no longer in `idle_` is stale and ignored.
#pragma once

#include <chrono>
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
  int accept_epoll_ = -1;  // the listening socket and wake_fd_: the connection thread's
  int ready_epoll_ = -1;   // idle connections and done_fd_: the request threads'
  int wake_fd_ = -1;       // eventfd: drain() wakes the connection thread with it
  int done_fd_ = -1;       // eventfd, written once when drained: wakes every request thread
  std::thread thread_;
  // Only the connection thread touches these.
  bool listening_ = false;  // the listening socket is in the epoll set
  int accept_failures_ = 0;
  std::chrono::steady_clock::time_point last_accept_warning_{};

  mutable std::mutex mu_;
  std::unordered_set<int> idle_;  // watched by ready_epoll_, owned by no thread
  bool draining_ = false;
  // Drained: idle connections with nothing to read are closed; those with a
  // request stay in idle_ until a thread takes them, then next() returns -1.
  bool finished_ = false;
  std::chrono::steady_clock::time_point drain_deadline_{};
};

}  // namespace ipayout
