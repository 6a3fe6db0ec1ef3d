// LD_PRELOAD shim for the edge tests: binds every IPv4 socket the program
// connects to the address in IPAYOUT_BIND_SOURCE first, so that a tool without
// a source-address option (slowhttptest) plays a client at another loopback
// address (127.0.0.0/8 is all ours). Connections then come from that address,
// which nginx's per-address limits see. Without the variable it does nothing.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdlib>

extern "C" int connect(int fd, const struct sockaddr* addr, socklen_t len) {
  using connect_fn = int (*)(int, const struct sockaddr*, socklen_t);
  static const auto real = reinterpret_cast<connect_fn>(dlsym(RTLD_NEXT, "connect"));
  const char* source = std::getenv("IPAYOUT_BIND_SOURCE");
  if (source != nullptr && addr != nullptr && addr->sa_family == AF_INET) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    // A failed bind leaves the default source address; the tests check the
    // address nginx logged, so that cannot pass unnoticed.
    if (inet_pton(AF_INET, source, &local.sin_addr) == 1) {
      (void)bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local);
    }
  }
  return real(fd, addr, len);
}
