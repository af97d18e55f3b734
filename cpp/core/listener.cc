#include "listener.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "worker_core.h"

namespace splicegate {

namespace {

bool setIntOption(int fd, int level, int name, int value) {
  return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

}  // namespace

std::unique_ptr<Listener> Listener::open(WorkerCore& core, const ListenerOptions& options, SysError& err) {
  const SocketAddress& addr = options.address;
  const std::string where = options.name + " " + addr.toString();
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    err = SysError::fromErrno("socket", where);
    return nullptr;
  }
  if (!setIntOption(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1) ||
      !setIntOption(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1)) {
    err = SysError::fromErrno("setsockopt", where + " (SO_REUSEPORT)");
    return nullptr;
  }
  if (addr.family() == AF_INET6 && !setIntOption(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1)) {
    // "[::]" serves IPv6 only, so an IPv4 listener on the same port can coexist and each family's
    // original destination is read with its own socket option.
    err = SysError::fromErrno("setsockopt", where + " (IPV6_V6ONLY)");
    return nullptr;
  }
  if (options.transparent) {
    const int level = addr.family() == AF_INET6 ? SOL_IPV6 : SOL_IP;
    const int name = addr.family() == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;
    if (!setIntOption(fd.get(), level, name, 1)) {
      err = SysError::fromErrno("setsockopt", where + " (IP_TRANSPARENT needs CAP_NET_ADMIN)");
      return nullptr;
    }
  }
  // Accepted sockets inherit TCP_NODELAY: relayed bytes go out as they arrive, never held by Nagle.
  setIntOption(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1);
  if (::bind(fd.get(), addr.sockaddrPtr(), addr.length()) < 0) {
    err = SysError::fromErrno("bind", where);
    return nullptr;
  }
  if (::listen(fd.get(), options.backlog) < 0) {
    err = SysError::fromErrno("listen", where);
    return nullptr;
  }
  SocketAddress bound;
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(fd.get(), bound.sockaddrPtr(), &len) < 0) {
    err = SysError::fromErrno("getsockname", where);
    return nullptr;
  }
  auto listener = std::unique_ptr<Listener>(new Listener(core, options, std::move(fd), bound));
  // Level-triggered: an accept batch may stop early (budget) and epoll reports the rest again.
  if (SysError e = core.loop().add(listener->fd(), EPOLLIN, listener.get())) {
    err = e;
    return nullptr;
  }
  return listener;
}

void Listener::onEvents(uint32_t) { core_.acceptFrom(*this); }

void Listener::pause() {
  if (paused_) return;
  paused_ = true;
  core_.loop().modify(fd_.get(), 0, this);
}

void Listener::resumeIfPaused() {
  if (!paused_) return;
  paused_ = false;
  core_.loop().modify(fd_.get(), EPOLLIN, this);
}

}  // namespace splicegate
