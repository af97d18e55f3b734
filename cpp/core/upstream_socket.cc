#include "upstream_socket.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <optional>

namespace splicegate {

bool setTransparent(int fd, int family) {
  const int one = 1;
  if (family == AF_INET6) return ::setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one) == 0;
  return ::setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) == 0;
}

UpstreamOpen openUpstream(const SocketAddress& destination, uint32_t mark, UniqueFd& out,
                          OwnSockets::Registration* registration, const SocketAddress* source) {
  UniqueFd fd(::socket(destination.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return UpstreamOpen::kSocketFailed;
  if (mark != 0) {
    const int value = static_cast<int>(mark);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &value, sizeof value) < 0) {
      out = std::move(fd);  // the caller counts it as an upstream socket that failed
      return UpstreamOpen::kMarkFailed;
    }
  }
  const int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (source) {
    // The client's IP, any port: without IP_BIND_ADDRESS_NO_PORT bind would reserve a port for the
    // IP alone; with it, connect picks one that is free for this exact 4-tuple.
    SocketAddress local = *source;
    local.setPort(0);
    if (local.family() != destination.family() || !setTransparent(fd.get(), local.family()) ||
        ::setsockopt(fd.get(), SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0 ||
        ::bind(fd.get(), local.sockaddrPtr(), local.length()) < 0) {
      out = std::move(fd);
      return UpstreamOpen::kBindFailed;
    }
  }
  // Counted as in flight until recorded: an acceptor that misses the entry meanwhile looks again.
  std::optional<OwnSockets::ConnectInFlight> inFlight;
  if (registration) inFlight.emplace(OwnSockets::process());
  int rc;
  do {
    rc = ::connect(fd.get(), destination.sockaddrPtr(), destination.length());
  } while (rc < 0 && errno == EINTR);
  const int connectErr = rc < 0 ? errno : 0;
  out = std::move(fd);
  if (rc < 0 && connectErr != EINPROGRESS) return UpstreamOpen::kConnectFailed;
  // Only now is the local port known. Recorded before this thread returns to its event loop, so a
  // looped connection that the same worker accepts always finds the entry.
  if (registration) *registration = OwnSockets::process().add(out.get(), destination);
  return UpstreamOpen::kInProgress;
}

}  // namespace splicegate
