#include "upstream_socket.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

namespace splicegate {

UpstreamOpen openUpstream(const SocketAddress& destination, uint32_t mark, UniqueFd& out) {
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
  int rc;
  do {
    rc = ::connect(fd.get(), destination.sockaddrPtr(), destination.length());
  } while (rc < 0 && errno == EINTR);
  out = std::move(fd);
  if (rc < 0 && errno != EINPROGRESS) return UpstreamOpen::kConnectFailed;
  return UpstreamOpen::kInProgress;
}

}  // namespace splicegate
