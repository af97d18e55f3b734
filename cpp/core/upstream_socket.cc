#include "upstream_socket.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <optional>

namespace splicegate {

UpstreamOpen openUpstream(const SocketAddress& destination, uint32_t mark, UniqueFd& out,
                          OwnSockets::Registration* registration) {
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
