// Benchmark prototypes, NOT product code: what the prototype relays (proto_relay_epoll.cc,
// proto_relay_uring.cc, proto_relay_hybrid.cc) share, so that they differ only in the I/O
// interface. They exist to measure, in the benchmark lab, what io_uring could win per core over
// epoll for a transparent copy relay (issue 12 §3, bench/results/attempts.md attempts 8 and 9)
// before anyone builds a third `tuning.driver` into the core. IPv4 only (the lab is IPv4), one
// thread, no config. Contenders proto-epoll / proto-uring / proto-hybrid of
// `npm run bench -- --only ...`; what they measured: bench/results/attempts.md, attempts 8 and 9.

#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>  // SO_ORIGINAL_DST
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace proto {

/** One buffer per direction, as splicegate's copy path uses. */
constexpr size_t kBufferBytes = 16 * 1024;

/** Owns one file descriptor; closes it when destroyed. */
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  /** Gives the descriptor up without closing it (io_uring closes it by IORING_OP_CLOSE). */
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "proto relay: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

/** "a.b.c.d:port" -> sockaddr_in; exits on a malformed argument. */
inline sockaddr_in parseAddress(const char* text) {
  std::string s(text);
  size_t colon = s.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (colon == std::string::npos || inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.sin_addr) != 1) {
    std::fprintf(stderr, "proto relay: expected IPv4 address:port, got %s\n", text);
    std::exit(2);
  }
  long port = std::strtol(s.c_str() + colon + 1, nullptr, 10);
  if (port <= 0 || port > 65535) {
    std::fprintf(stderr, "proto relay: bad port in %s\n", text);
    std::exit(2);
  }
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

inline void setInt(int fd, int level, int name, int value) {
  (void)::setsockopt(fd, level, name, &value, sizeof value);
}

/**
 * The listening socket. TCP_NODELAY on it is inherited by accepted sockets (as splicegate does:
 * relayed bytes go out as they arrive). `nonblocking`: the epoll relay accepts in a loop until
 * EAGAIN; io_uring needs no O_NONBLOCK (it tries without blocking and arms a poll itself).
 */
inline Fd listenOn(const sockaddr_in& addr, bool nonblocking) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
  if (!fd.valid()) die("socket");
  setInt(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
  setInt(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (::listen(fd.get(), 4096) != 0) die("listen");
  return fd;
}

/**
 * The original destination of a REDIRECTed connection. false: not redirected, or it was addressed
 * to this relay's own port (connecting there would loop back into the relay).
 */
inline bool originalDst(int fd, uint16_t listenPortBe, sockaddr_in* out) {
  socklen_t len = sizeof *out;
  if (::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, &len) != 0 || len != sizeof *out) return false;
  return out->sin_family == AF_INET && out->sin_port != listenPortBe;
}

/** A TCP socket for the upstream connection, with TCP_NODELAY like the accepted one. */
inline Fd upstreamSocket(bool nonblocking) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
  if (fd.valid()) setInt(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1);
  return fd;
}

/** Makes the next close() send a TCP reset instead of a FIN. */
inline void lingerZero(int fd) {
  linger l{1, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

/** The bench harness waits for this line before it sends traffic. */
inline void announceReady(const sockaddr_in& addr, const char* how) {
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof ip);
  std::printf("READY %s:%u %s\n", ip, ntohs(addr.sin_port), how);
  std::fflush(stdout);
}


/** One direction of the epoll relays' copy path (proto_relay_epoll.cc, proto_relay_hybrid.cc). */
struct Direction {
  char buf[kBufferBytes];
  uint32_t start = 0;
  uint32_t end = 0;
  bool eof = false;     // its source returned 0
  bool passed = false;  // EOF passed on to its destination (shutdown, or the final close)
};

enum class Step { kOk, kDone, kError };

/**
 * Moves direction `d` of `c` (0: client -> upstream, 1: upstream -> client) as far as readiness
 * allows: send what is buffered, pass EOF on once flushed, else recv; a short recv proves the
 * socket drained (splicegate's rule). Shared by the two epoll relays so they differ only in how
 * connections are set up and torn down. Conn has fd[2], readable/writable/rdhup[2] and dir[2].
 */
template <class Conn>
inline Step pump(Conn* c, int d) {
  Direction& b = c->dir[d];
  const int src = d;
  const int dst = 1 - d;
  for (;;) {
    if (b.start < b.end) {
      if (!c->writable[dst]) return Step::kOk;
      ssize_t n = ::send(c->fd[dst].get(), b.buf + b.start, b.end - b.start, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          c->writable[dst] = false;
          return Step::kOk;
        }
        return Step::kError;
      }
      b.start += static_cast<uint32_t>(n);
      if (b.start < b.end) {
        c->writable[dst] = false;  // the socket buffer is full: wait for EPOLLOUT
        return Step::kOk;
      }
      b.start = b.end = 0;
      continue;
    }
    if (b.eof) {
      if (b.passed) return Step::kOk;
      // Both directions at EOF: the caller closes both, and that close sends this FIN.
      if (c->dir[1 - d].passed) return Step::kDone;
      if (::shutdown(c->fd[dst].get(), SHUT_WR) != 0) return Step::kError;
      b.passed = true;
      return Step::kOk;
    }
    if (!c->readable[src]) return Step::kOk;
    ssize_t n = ::recv(c->fd[src].get(), b.buf, kBufferBytes, 0);
    if (n > 0) {
      b.end = static_cast<uint32_t>(n);
      if (static_cast<size_t>(n) < kBufferBytes && !c->rdhup[src]) c->readable[src] = false;
      continue;
    }
    if (n == 0) {
      b.eof = true;
      c->readable[src] = false;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      c->readable[src] = false;
      return Step::kOk;
    }
    return Step::kError;
  }
}

}  // namespace proto
