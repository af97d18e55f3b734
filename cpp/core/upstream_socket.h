// Opening an upstream socket the one way splicegate does it: non-blocking, close-on-exec,
// SO_MARK when configured (so our own traffic can be excluded from the redirect rule), no Nagle,
// connect started, and (when given a registration to fill) recorded in the process's own-socket
// registry so that a connect redirected straight back into our listener is recognised as a loop.
// Shared by relayed connections and the preconnect pool; both register their sockets.
#pragma once

#include <cerrno>
#include <cstdint>

#include "own_sockets.h"
#include "socket_address.h"
#include "unique_fd.h"

namespace splicegate {

enum class UpstreamOpen {
  kInProgress,     // connecting (or already connected): wait for EPOLLOUT
  kSocketFailed,   // socket(2) failed: out of fds or memory
  kMarkFailed,     // SO_MARK refused: connecting unmarked could loop, so we do not
  kConnectFailed,  // connect(2) failed at once (unreachable, refused on loopback, ...)
  kBindFailed,     // the original source could not be bound (family mismatch, no CAP_NET_ADMIN)
};

// An open upstream socket and its entry in the own-socket registry, which travel together (the
// preconnect pool hands both to the connection that takes the socket). The entry is declared after
// the fd so that it is removed before the fd closes: the kernel may give the 4-tuple to another
// socket once it is closed.
struct RegisteredUpstream {
  UniqueFd fd;
  OwnSockets::Registration registration;
  explicit operator bool() const { return static_cast<bool>(fd); }
};

// source: when not null, the socket binds to this IP first (port chosen by the kernel at connect,
// IP_BIND_ADDRESS_NO_PORT) with IP_TRANSPARENT/IPV6_TRANSPARENT, so it may be a foreign address:
// cluster.original_source. Its family must be the destination's.
// registration: when not null, filled with the socket's entry in OwnSockets::process() once connect()
// has chosen the local address (kInProgress only). It must live exactly as long as `out` is open.
UpstreamOpen openUpstream(const SocketAddress& destination, uint32_t mark, UniqueFd& out,
                          OwnSockets::Registration* registration = nullptr, const SocketAddress* source = nullptr);

// socket() failed for want of an fd (the process's or the system's limit), not for a bad request.
inline bool isOutOfFds(int err) { return err == EMFILE || err == ENFILE; }

// Sets IP_TRANSPARENT (IPv4) or IPV6_TRANSPARENT (IPv6) on fd; false with errno on failure.
bool setTransparent(int fd, int family);

}  // namespace splicegate
