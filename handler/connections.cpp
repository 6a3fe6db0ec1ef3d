#include "connections.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

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
  for (int fd : ready_) close(fd);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

bool Connections::start() {
  int flags = fcntl(listen_fd_, F_GETFL);
  if (flags < 0 || fcntl(listen_fd_, F_SETFL, flags | O_NONBLOCK) < 0) return false;
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ < 0 || wake_fd_ < 0) return false;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) < 0) return false;
  // Exclusive: a new connection wakes one worker process, not all of them.
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.fd = listen_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) < 0) return false;
  thread_ = std::thread([this] { run(); });
  return true;
}

int Connections::next() {
  std::unique_lock<std::mutex> lk(mu_);
  ready_cv_.wait(lk, [&] { return !ready_.empty() || finished_; });
  if (ready_.empty()) return -1;
  int fd = ready_.front();
  ready_.pop_front();
  return fd;
}

void Connections::give_back(int fd) {
  std::lock_guard<std::mutex> lk(mu_);
  if (finished_) {
    close(fd);  // the drain is over: nobody would watch it
    return;
  }
  watch(fd);
}

void Connections::watch(int fd) {
  // One-shot: once readable, the descriptor is handed to one thread and not
  // reported again until it is given back.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  ev.data.fd = fd;
  // MOD re-arms a descriptor epoll already knows; a new connection (or a
  // number reused after libfcgi closed the old one) needs ADD.
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) < 0 &&
      (errno != ENOENT || epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0)) {
    spdlog::warn("msg=\"cannot watch a FastCGI connection, closing it\" error=\"{}\"",
                 std::strerror(errno));
    close(fd);
    return;
  }
  idle_.insert(fd);
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

size_t Connections::idle() const {
  std::lock_guard<std::mutex> lk(mu_);
  return idle_.size();
}

void Connections::accept_new() {
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
      watch(fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // another worker took it
    // EMFILE, ENFILE, ENOBUFS...: wait rather than spin; nginx's connection
    // stays in the backlog meanwhile.
    spdlog::error("msg=\"accept failed\" error=\"{}\"", std::strerror(errno));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return;
  }
}

void Connections::run() {
  bool accepting = true;
  epoll_event events[64];
  for (;;) {
    int timeout_ms = -1;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (draining_) {
        if (accepting) {
          epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
          accepting = false;
        }
        auto left = drain_deadline_ - std::chrono::steady_clock::now();
        if (left <= std::chrono::steady_clock::duration::zero()) {
          // Idle connections held no request: nginx sees them close and
          // opens new ones to the workers that are still running.
          for (int fd : idle_) close(fd);
          idle_.clear();
          finished_ = true;
          ready_cv_.notify_all();
          return;
        }
        timeout_ms = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(left).count() + 1);
      }
    }
    int n = epoll_wait(epoll_fd_, events, 64, timeout_ms);
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
        if (accepting) accept_new();
      } else {
        // A request, or nginx closing it: either way a thread reads it (libfcgi
        // closes the descriptor when it finds the end of the stream).
        std::lock_guard<std::mutex> lk(mu_);
        if (idle_.erase(fd)) {
          ready_.push_back(fd);
          ready_cv_.notify_one();
        }
      }
    }
  }
}

}  // namespace ipayout
