// Loopback plumbing the core's test programs share: addresses, a fake "original destination", a
// listening server, a client socket, and a loop driver that runs a core by hand until a condition
// holds (the bound is a liveness limit, never a performance claim).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "test_harness.h"
#include "../core/original_dst.h"
#include "../core/socket_address.h"
#include "../core/unique_fd.h"
#include "../core/worker_core.h"

namespace splicegate::testing {

inline SocketAddress addr(const char* ip, uint16_t port) { return *SocketAddress::fromIp(ip, port); }

// Every accepted connection "originally" went to `target`.
struct FixedDestinationOps : OriginalDstOps {
  SocketAddress target;
  SyscallResult originalDst(int, int, SocketAddress& out) override {
    out = target;
    return {0, 0};
  }
  SyscallResult localAddress(int fd, SocketAddress& out) override {
    socklen_t len = SocketAddress::capacity();
    return {::getsockname(fd, out.sockaddrPtr(), &len), 0};
  }
  LocalIp isLocalIp(const SocketAddress&) override { return LocalIp::kNo; }
};

// A listening server on 127.0.0.1 (ephemeral port, written to `bound`).
inline UniqueFd listenOn(SocketAddress& bound, int backlog = 64) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto a = addr("127.0.0.1", 0);
  CHECK(::bind(fd.get(), a.sockaddrPtr(), a.length()) == 0);
  CHECK(::listen(fd.get(), backlog) == 0);
  socklen_t len = SocketAddress::capacity();
  ::getsockname(fd.get(), bound.sockaddrPtr(), &len);
  return fd;
}

inline UniqueFd connectTo(const SocketAddress& a) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  CHECK(::connect(fd.get(), a.sockaddrPtr(), a.length()) == 0);
  return fd;
}

// A client of a proxy under test, bound to (connectClient: connected from) 127.0.0.2, not 127.0.0.1.
// The tests' fake original destinations (FixedDestinationOps, stream_tests' LabOps) tell the proxy
// that every client was redirected from the test server, which the kernel never would:
// SO_ORIGINAL_DST is the address the client itself dialled, so a client's (address, original
// destination) is its own 4-tuple, unique on the host. Linux lets connects to different
// destinations share a local port, so a client from 127.0.0.1 can get the same port as one of the
// proxy's upstream sockets (which leave from 127.0.0.1 for the server); claiming the server as its
// destination, it then carries exactly the 4-tuple by which the proxy recognises its own upstream
// looped back, and is refused as a loop (loop_rejected). From 127.0.0.2 it never can.
inline void bindAsClient(int fd) {
  const SocketAddress from = addr("127.0.0.2", 0);
  CHECK(::bind(fd, from.sockaddrPtr(), from.length()) == 0);
}

inline UniqueFd connectClient(const SocketAddress& proxy) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  bindAsClient(fd.get());
  CHECK(::connect(fd.get(), proxy.sockaddrPtr(), proxy.length()) == 0);
  return fd;
}

inline bool writeAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// How a stream the test reads ended; kOpen: the caller's condition held while it was still open.
enum class End { kOpen, kEof, kReset, kError, kTimeout };

inline const char* endName(End e) {
  switch (e) {
    case End::kOpen: return "open";
    case End::kEof: return "EOF";
    case End::kReset: return "reset";
    case End::kError: return "error";
    case End::kTimeout: return "timeout";
  }
  return "?";
}

// Reads from fd into `out` until done(out) holds, the peer ends the stream, or the (liveness)
// deadline passes.
inline End readUntil(int fd, std::string& out, const std::function<bool(const std::string&)>& done,
                     int timeoutMs = 10000) {
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!done(out)) {
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, left) <= 0) return End::kTimeout;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return End::kEof;
    if (n < 0) return errno == ECONNRESET ? End::kReset : End::kError;
    out.append(buf, static_cast<size_t>(n));
  }
  return End::kOpen;
}

// Reads until the peer ends the stream (EOF or an error) or the deadline passes.
inline End readToEnd(int fd, std::string& out, int timeoutMs = 10000) {
  return readUntil(fd, out, [](const std::string&) { return false; }, timeoutMs);
}

// Runs the core's loop on this thread until pred holds; the tests that use it drive the core by
// hand so that they control what one epoll batch contains.
inline bool runUntil(WorkerCore& core, const std::function<bool()>& pred, int timeoutMs = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    core.runOnce(10);
  }
  return true;
}

// Dups fd 0 until no number below the newest dup is free; the newest (highest) is last.
inline std::vector<UniqueFd> fillFdHoles() {
  std::vector<UniqueFd> fillers;
  for (;;) {
    UniqueFd f(::fcntl(0, F_DUPFD_CLOEXEC, 0));
    CHECK(f);
    const int n = f.get();
    fillers.push_back(std::move(f));
    bool holes = false;
    for (int i = 0; i < n; ++i) {
      if (::fcntl(i, F_GETFD) < 0) holes = true;
    }
    if (!holes) return fillers;
  }
}

// Takes every free fd number up to one above the highest open fd: afterwards a limit of the last
// one's number leaves nothing free, and closing any earlier fd frees a number under it.
// (fillFdHoles stops at the first number with no hole below it, which may be under fds a test
// wants to see freed.)
inline std::vector<UniqueFd> fillEveryFdBelowTop() {
  int top = -1;
  {
    DIR* dir = opendir("/proc/self/fd");
    CHECK(dir != nullptr);
    while (const dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') top = std::max(top, std::atoi(entry->d_name));
    }
    closedir(dir);
  }
  std::vector<UniqueFd> fillers;
  for (;;) {
    UniqueFd f(::fcntl(0, F_DUPFD_CLOEXEC, 0));
    CHECK(f);
    const int n = f.get();
    fillers.push_back(std::move(f));
    if (n > top) return fillers;
  }
}

// Lowers the soft open-files limit to `soft` (no fd numbered `soft` or above can be opened) until
// restore() or the end of the scope. Under UBSan, a test using it may be reported ("member call
// ... invalid vptr", "memory cannot be printed") when run alone (SPLICEGATE_TEST_FILTER): the
// first vptr check of a type takes a slow path that opens a pipe to probe the memory, which fails
// with no fd free. Run whole, earlier tests have made those checks already.
class NofileLimit {
 public:
  explicit NofileLimit(rlim_t soft) {
    CHECK(::getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    rlimit low = saved_;
    low.rlim_cur = soft;
    CHECK(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  }
  NofileLimit(const NofileLimit&) = delete;
  NofileLimit& operator=(const NofileLimit&) = delete;
  ~NofileLimit() { restore(); }
  void restore() {
    if (!lowered_) return;
    lowered_ = false;
    CHECK(::setrlimit(RLIMIT_NOFILE, &saved_) == 0);
  }

 private:
  rlimit saved_{};
  bool lowered_ = true;
};

}  // namespace splicegate::testing
