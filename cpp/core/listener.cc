#include "listener.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

#include "socket_options.h"
#include "worker_core.h"

namespace splicegate {

namespace {

std::string describe(const ListenerOptions& options) { return options.name + " " + options.address.toString(); }

}  // namespace

UniqueFd openListenSocket(const ListenerOptions& options, SocketAddress* bound, SysError& err) {
  const SocketAddress& addr = options.address;
  const std::string where = describe(options);
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    err = SysError::fromErrno("socket", where);
    return {};
  }
  // SO_REUSEADDR only lets a restarted process bind over connections left in TIME_WAIT; unlike
  // SO_REUSEPORT it never lets a second process listen on the same address.
  if (!setIntOption(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1)) {
    err = SysError::fromErrno("setsockopt", where + " (SO_REUSEADDR)");
    return {};
  }
  if (addr.family() == AF_INET6 && !setIntOption(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1)) {
    // "[::]" serves IPv6 only, so an IPv4 listener on the same port can coexist and each family's
    // original destination is read with its own socket option.
    err = SysError::fromErrno("setsockopt", where + " (IPV6_V6ONLY)");
    return {};
  }
  if (options.transparent) {
    const int level = addr.family() == AF_INET6 ? SOL_IPV6 : SOL_IP;
    const int name = addr.family() == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;
    if (!setIntOption(fd.get(), level, name, 1)) {
      err = SysError::fromErrno("setsockopt", where + " (IP_TRANSPARENT needs CAP_NET_ADMIN)");
      return {};
    }
  }
  // Accepted sockets inherit TCP_NODELAY: relayed bytes go out as they arrive, never held by Nagle.
  setIntOption(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1);
  if (::bind(fd.get(), addr.sockaddrPtr(), addr.length()) < 0) {
    err = SysError::fromErrno("bind", where);
    return {};
  }
  if (::listen(fd.get(), options.backlog) < 0) {
    err = SysError::fromErrno("listen", where);
    return {};
  }
  SocketAddress local;
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(fd.get(), local.sockaddrPtr(), &len) < 0) {
    err = SysError::fromErrno("getsockname", where);
    return {};
  }
  if (bound) *bound = local;
  return fd;
}

SysError inspectSocket(int fd, SocketInfo& out) {
  out = SocketInfo{};
  if (::fcntl(fd, F_GETFD) < 0) return SysError::fromErrno("fcntl", "fd " + std::to_string(fd));
  socklen_t len = sizeof out.type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &out.type, &len) < 0) return SysError::fromErrno("getsockopt", "fd " + std::to_string(fd));
  out.family = getIntOption(fd, SOL_SOCKET, SO_DOMAIN);
  out.listening = getIntOption(fd, SOL_SOCKET, SO_ACCEPTCONN) == 1;
  if (out.family == AF_INET || out.family == AF_INET6) {
    socklen_t alen = SocketAddress::capacity();
    if (::getsockname(fd, out.local.sockaddrPtr(), &alen) < 0) return SysError::fromErrno("getsockname", "fd " + std::to_string(fd));
  }
  return {};
}

UniqueFd adoptListenSocket(int fd, const ListenerOptions& options, SocketAddress* bound, SysError& err) {
  const std::string where = describe(options) + " (passed fd " + std::to_string(fd) + ")";
  SocketInfo info;
  if (SysError e = inspectSocket(fd, info)) {
    err = SysError{e.syscall, e.err, where};
    return {};
  }
  const auto refuse = [&](const std::string& why) {
    err = SysError{"adopt", EINVAL, where + ": " + why};
    return UniqueFd{};
  };
  if (info.type != SOCK_STREAM) return refuse("not a stream socket");
  if (info.family != AF_INET && info.family != AF_INET6) return refuse("not an IPv4 or IPv6 socket");
  if (!info.listening) return refuse("not listening");
  if (!(info.local == options.address)) return refuse("bound to " + info.local.toString());
  if (info.family == AF_INET6 && getIntOption(fd, IPPROTO_IPV6, IPV6_V6ONLY) != 1) {
    // Dual-stack would take IPv4 clients as mapped addresses, whose original destination is read
    // with the IPv6 option and fails: the unit must say BindIPv6Only=ipv6-only.
    return refuse("not IPv6-only (BindIPv6Only=ipv6-only in the .socket unit)");
  }
  if (options.transparent) {
    const int level = info.family == AF_INET6 ? SOL_IPV6 : SOL_IP;
    const int name = info.family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;
    if (getIntOption(fd, level, name) != 1 && !setIntOption(fd, level, name, 1)) {
      err = SysError::fromErrno("setsockopt", where + " (IP_TRANSPARENT needs CAP_NET_ADMIN, or Transparent=yes in the .socket unit)");
      return {};
    }
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    err = SysError::fromErrno("fcntl", where + " (O_NONBLOCK)");
    return {};
  }
  const int fdFlags = ::fcntl(fd, F_GETFD);
  if (fdFlags < 0 || ::fcntl(fd, F_SETFD, fdFlags | FD_CLOEXEC) < 0) {
    err = SysError::fromErrno("fcntl", where + " (FD_CLOEXEC)");
    return {};
  }
  setIntOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  // On a listening socket listen() only updates the accept queue's limit: nothing queued is lost.
  if (::listen(fd, options.backlog) < 0) {
    err = SysError::fromErrno("listen", where);
    return {};
  }
  if (bound) *bound = info.local;
  return UniqueFd(fd);
}

std::unique_ptr<Listener> Listener::attach(WorkerCore& core, const ListenerOptions& options, int sharedFd,
                                           SysError& err) {
  const std::string where = describe(options);
  UniqueFd fd(::fcntl(sharedFd, F_DUPFD_CLOEXEC, 0));
  if (!fd) {
    err = SysError::fromErrno("dup", where);
    return nullptr;
  }
  // The fd arrives as a number from another thread: make sure it still is the listening socket it
  // was meant to be (non-blocking, so accept never stalls the loop), not whatever reused the number.
  SocketAddress local;
  socklen_t len = SocketAddress::capacity();
  const int flags = ::fcntl(fd.get(), F_GETFL);
  const bool ok = getIntOption(fd.get(), SOL_SOCKET, SO_ACCEPTCONN) == 1 && flags >= 0 && (flags & O_NONBLOCK) &&
                  ::getsockname(fd.get(), local.sockaddrPtr(), &len) == 0 &&
                  local.family() == options.address.family() &&
                  (options.address.port() == 0 || local.port() == options.address.port());
  if (!ok) {
    err = SysError{"attach", EBADF, where + " (fd " + std::to_string(sharedFd) + " is not its listening socket)"};
    return nullptr;
  }
  auto listener = std::unique_ptr<Listener>(new Listener(core, options, std::move(fd), local));
  if (SysError e = listener->watch()) {
    err = e;
    return nullptr;
  }
  return listener;
}

Listener::~Listener() { detach(); }

SysError Listener::watch() {
  // Level-triggered: an accept batch may stop early (budget) and epoll reports the rest again.
  SysError e = core_.context().loop.add(fd_.get(), EPOLLIN | EPOLLEXCLUSIVE, this);
  watched_ = !e;
  return e;
}

void Listener::unwatch() {
  // Explicit: the registration belongs to the open file description, which the process's own fd
  // keeps alive, so closing our dup alone would leave epoll reporting events for a freed Listener.
  if (watched_) core_.context().loop.remove(fd_.get());
  watched_ = false;
}

void Listener::detach() {
  if (!fd_) return;
  unwatch();
  fd_.reset();
}

void Listener::onEvents(uint32_t) {
  if (fd_ && watched_) core_.acceptFrom(*this);
}

// EPOLL_CTL_MOD is refused (EINVAL) on an EPOLLEXCLUSIVE registration, so pausing leaves the epoll
// and resuming joins it again.
void Listener::pause() {
  if (paused_ || !fd_) return;
  paused_ = true;
  unwatch();
}

void Listener::resumeIfPaused() {
  if (!paused_ || !fd_) return;
  if (!watch()) paused_ = false;  // else: still paused, the next tick tries again
}

}  // namespace splicegate
