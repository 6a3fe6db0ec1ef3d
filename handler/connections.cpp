#include "connections.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "metrics.h"

namespace ipayout {
namespace {

// Accepted per wake-up: the other workers, woken for the same backlog, get
// their share instead of one process taking every new connection.
constexpr int kAcceptBurst = 16;

}  // namespace

Connections::Connections(int listen_fd) : listen_fd_(listen_fd) {}

Connections::~Connections() {
  if (thread_.joinable()) {
    drain(std::chrono::milliseconds(0));
    thread_.join();
  }
  for (int fd : idle_) close(fd);
  for (int fd : {wake_fd_, done_fd_, accept_epoll_, ready_epoll_}) {
    if (fd >= 0) close(fd);
  }
}

bool Connections::start() {
  int flags = fcntl(listen_fd_, F_GETFL);
  if (flags < 0 || fcntl(listen_fd_, F_SETFL, flags | O_NONBLOCK) < 0) return false;
  accept_epoll_ = epoll_create1(EPOLL_CLOEXEC);
  ready_epoll_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  done_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (accept_epoll_ < 0 || ready_epoll_ < 0 || wake_fd_ < 0 || done_fd_ < 0) return false;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  if (epoll_ctl(accept_epoll_, EPOLL_CTL_ADD, wake_fd_, &ev) < 0) return false;
  // Level-triggered and never read: once written, every epoll_wait returns it.
  ev.data.fd = done_fd_;
  if (epoll_ctl(ready_epoll_, EPOLL_CTL_ADD, done_fd_, &ev) < 0) return false;
  thread_ = std::thread([this] { run(); });
  return true;
}

int Connections::next() {
  for (;;) {
    epoll_event ev{};
    // Many request threads wait here at once; the kernel hands each report
    // of a one-shot descriptor to one of them.
    int n = epoll_wait(ready_epoll_, &ev, 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::critical("msg=\"epoll_wait failed\" error=\"{}\"", std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (n == 0) continue;
    const int fd = ev.data.fd;
    std::lock_guard<std::mutex> lk(mu_);
    if (fd == done_fd_) {
      // Drained: what is left in idle_ has a request waiting (close_idle).
      if (idle_.empty()) return -1;
      const int left = *idle_.begin();
      idle_.erase(idle_.begin());
      return left;
    }
    if (idle_.erase(fd)) return fd;  // else: stale, another thread or the drain took it
  }
}

void Connections::give_back(int fd) {
  std::lock_guard<std::mutex> lk(mu_);
  if (finished_) {
    close(fd);  // the drain is over: nobody would watch it
    return;
  }
  // Still registered since it was accepted (one-shot only disarmed it):
  // re-arm. A descriptor libfcgi closed left the set and never comes back here.
  watch(fd, EPOLL_CTL_MOD);
}

void Connections::watch(int fd, int op) {
  // One-shot: once readable, the descriptor is handed to one thread and not
  // reported again until it is given back.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  ev.data.fd = fd;
  // In idle_ before it is armed: a thread woken for it at once must find it
  // there (it waits for mu_, which the caller holds).
  idle_.insert(fd);
  if (epoll_ctl(ready_epoll_, op, fd, &ev) < 0) {
    spdlog::warn("msg=\"cannot watch a FastCGI connection, closing it\" error=\"{}\"",
                 std::strerror(errno));
    idle_.erase(fd);
    close(fd);
  }
}

void Connections::drain(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (draining_) return;
    draining_ = true;
    drain_deadline_ = std::chrono::steady_clock::now() + grace;
  }
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
    // The eventfd cannot be full after one write; the thread also polls.
  }
}

bool Connections::accept_new() {
  for (int i = 0; i < kAcceptBurst; ++i) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      // Watched like an idle connection: a thread takes it once its first
      // record is here, so a client that connects and sends nothing holds
      // no thread (libfcgi's reads block) and cannot hold up a drain.
      metrics::count_fastcgi_connection();
      // A TCP listener (listen = host:port): libfcgi writes an answer in
      // several records, which Nagle's algorithm would hold back. Unix
      // sockets refuse the option; nothing to do then.
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard<std::mutex> lk(mu_);
      watch(fd, EPOLL_CTL_ADD);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;  // another worker took it
    // EMFILE, ENFILE, ENOBUFS...: stop accepting for a moment (the listening
    // socket stays readable, it would wake us at once) but keep serving the
    // connections we have; nginx's new connection waits in the backlog.
    const auto now = std::chrono::steady_clock::now();
    ++accept_failures_;
    if (now - last_accept_warning_ > std::chrono::seconds(10)) {
      spdlog::error("msg=\"accept failed, pausing new connections\" error=\"{}\" failures={}",
                    std::strerror(errno), accept_failures_);
      last_accept_warning_ = now;
      accept_failures_ = 0;
    }
    return false;
  }
  return true;
}

void Connections::set_listening(bool on) {
  if (on == listening_) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;  // a new connection wakes one worker, not all
  ev.data.fd = listen_fd_;
  if (epoll_ctl(accept_epoll_, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, listen_fd_, &ev) == 0) {
    listening_ = on;
  }
}

void Connections::close_idle() {
  // At the drain deadline. A connection whose request has arrived (and not
  // yet been taken by a thread) is served, not closed: closing it would turn
  // a delivery nginx has already sent into a 502 (503 for i-payout) for no
  // reason. It stays in idle_; next() hands it out after the drain.
  for (auto it = idle_.begin(); it != idle_.end();) {
    char c;
    if (recv(*it, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
      ++it;
    } else {
      close(*it);
      it = idle_.erase(it);
    }
  }
}

void Connections::run() {
  using Clock = std::chrono::steady_clock;
  set_listening(true);
  Clock::time_point paused_until{};
  epoll_event events[16];
  for (;;) {
    int timeout_ms = -1;
    const auto now = Clock::now();
    auto wait_until = [&](Clock::time_point t) {
      int ms = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count() + 1);
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    };
    bool draining;
    {
      std::lock_guard<std::mutex> lk(mu_);
      draining = draining_;
      if (draining && now >= drain_deadline_) {
        set_listening(false);
        close_idle();
        finished_ = true;
        uint64_t one = 1;
        if (write(done_fd_, &one, sizeof one) < 0) {
          // An eventfd written once cannot be full.
        }
        return;
      }
      if (draining) wait_until(drain_deadline_);
    }
    if (draining) {
      set_listening(false);
    } else if (!listening_) {  // paused after an accept failure
      if (now >= paused_until) {
        set_listening(true);
      } else {
        wait_until(paused_until);
      }
    }
    int n = epoll_wait(accept_epoll_, events, 16, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::critical("msg=\"epoll_wait failed\" error=\"{}\"", std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t v;
        if (read(wake_fd_, &v, sizeof v) < 0) {
          // Nothing to do: the flag it announces is read under mu_ above.
        }
      } else if (fd == listen_fd_) {
        if (listening_ && !accept_new()) {
          set_listening(false);
          paused_until = Clock::now() + std::chrono::milliseconds(100);
        }
      }
    }
  }
}

}  // namespace ipayout
