#include "original_dst.h"

#include <arpa/inet.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "local_routes.h"
#include "unique_fd.h"

namespace splicegate {

namespace {

// Bound on the re-checks of a loopback connection while one of our connects is unrecorded.
constexpr int kRecheckYields = 8;

bool isLoopback(const SocketAddress& a) {
  if (a.family() == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in*>(a.sockaddrPtr())->sin_addr.s_addr) >> 24) == 127;
  }
  if (a.family() == AF_INET6) {
    const in6_addr& ip = reinterpret_cast<const sockaddr_in6*>(a.sockaddrPtr())->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&ip) ||
           (IN6_IS_ADDR_V4MAPPED(&ip) && ip.s6_addr[12] == 127);
  }
  return false;
}

// Where a connect() to dst arrives, as "is it one of our listeners" must see it: an IPv6 socket
// connects an IPv4-mapped address (::ffff:a.b.c.d) over IPv4, and Linux connects the unspecified
// address to loopback (0.0.0.0 to 127.0.0.1, :: to ::1). Without this a routing header, CONNECT
// target or PROXY header could name a listener in another spelling and loop back in.
SocketAddress arrivalAddress(const SocketAddress& dst) {
  SocketAddress out = dst;
  if (dst.family() == AF_INET6) {
    const in6_addr& ip = reinterpret_cast<const sockaddr_in6*>(dst.sockaddrPtr())->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&ip)) {
      uint32_t v4 = 0;
      std::memcpy(&v4, ip.s6_addr + 12, sizeof v4);
      out = SocketAddress::fromIpv4(ntohl(v4), dst.port());
    } else if (IN6_IS_ADDR_UNSPECIFIED(&ip)) {
      sockaddr_in6 loop{};
      loop.sin6_family = AF_INET6;
      loop.sin6_addr = in6addr_loopback;
      loop.sin6_port = htons(dst.port());
      out = SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&loop), sizeof loop);
    }
  }
  if (out.family() == AF_INET && out.isAnyAddress()) out = SocketAddress::fromIpv4(INADDR_LOOPBACK, out.port());
  return out;
}

}  // namespace

SyscallResult KernelOriginalDstOps::originalDst(int fd, int family, SocketAddress& out) {
  socklen_t len = SocketAddress::capacity();
  const int level = family == AF_INET6 ? SOL_IPV6 : SOL_IP;
  const int option = family == AF_INET6 ? IP6T_SO_ORIGINAL_DST : SO_ORIGINAL_DST;
  const int rc = ::getsockopt(fd, level, option, out.sockaddrPtr(), &len);
  return {rc, rc < 0 ? errno : 0};
}

SyscallResult KernelOriginalDstOps::localAddress(int fd, SocketAddress& out) {
  socklen_t len = SocketAddress::capacity();
  const int rc = ::getsockname(fd, out.sockaddrPtr(), &len);
  return {rc, rc < 0 ? errno : 0};
}

SyscallResult KernelOriginalDstOps::peerAddress(int fd, SocketAddress& out) {
  socklen_t len = SocketAddress::capacity();
  const int rc = ::getpeername(fd, out.sockaddrPtr(), &len);
  return {rc, rc < 0 ? errno : 0};
}

namespace {

// 127/8, ::1, and 127/8 mapped into IPv6.
bool isLoopbackIp(const SocketAddress& ip) {
  if (ip.family() == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in*>(ip.sockaddrPtr())->sin_addr.s_addr) >> 24) == 127;
  }
  if (ip.family() != AF_INET6) return false;
  const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(ip.sockaddrPtr())->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
}

}  // namespace

LocalIp KernelOriginalDstOps::isLocalIp(const SocketAddress& ip) {
  // Loopback: every 127/8 address is this host's, though the kernel picks 127.0.0.1 as the source
  // for most of them (below); the unspecified address is connected to as loopback.
  if (isLoopbackIp(ip) || ip.isAnyAddress()) return LocalIp::kYes;
  // The kernel's own routing decision, without a cached interface list that could go stale:
  // whether its route to ip is of type local (RTM_GETROUTE). That covers every address of an
  // AnyIP range, for which the kernel picks another source (::1 for an IPv6 range on lo, the
  // route's `src` for an IPv4 one), so the source-address probe below would call it remote, and
  // a connect to it reaches our wildcard listener all the same. Asked rarely: a destination on
  // one of our wildcard listeners' ports, or a UDP destination the first time the worker replies
  // from it.
  uint8_t raw[16] = {};
  ip.copyIpTo(raw);
  int routeErr = 0;
  switch (routeKindOf(ip.family(), raw, routeErr)) {
    case RouteKind::kLocal:
      return LocalIp::kYes;
    case RouteKind::kNotLocal:
      return LocalIp::kNo;
    case RouteKind::kFailed:
      break;  // netlink unusable here (or EMFILE): the older source-address probe below
  }
  // A datagram socket "connected" to an address of this host takes that very address as its
  // source (for an interface address); to anywhere else, the outgoing interface's. (A bind probe
  // would say "local" for everything under net.ipv4.ip_nonlocal_bind.) No packet is sent.
  SocketAddress probe = ip;
  probe.setPort(9);
  UniqueFd sock(::socket(probe.family(), SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!sock) return LocalIp::kUnknown;  // EMFILE/ENFILE/ENOMEM: no answer, not "remote"
  if (::connect(sock.get(), probe.sockaddrPtr(), probe.length()) < 0) {
    // No route at all: certainly not an address of this host (those always have a local route).
    return errno == ENETUNREACH || errno == EHOSTUNREACH ? LocalIp::kNo : LocalIp::kUnknown;
  }
  SocketAddress source;
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(sock.get(), source.sockaddrPtr(), &len) < 0) return LocalIp::kUnknown;
  return source.sameIp(ip) ? LocalIp::kYes : LocalIp::kNo;
}

OriginalDstResult OriginalDstResolver::resolve(int fd, int family, bool transparent, const SocketAddress* knownPeer) const {
  OriginalDstResult result;
  const SyscallResult lookup = transparent ? ops_.localAddress(fd, result.address)
                                           : ops_.originalDst(fd, family, result.address);
  if (lookup.rc < 0) {
    // ENOENT: conntrack has no entry, i.e. the connection was never NATed to us.
    result.outcome = OriginalDstOutcome::kNotRedirected;
    result.err = lookup.err;
    return result;
  }
  if (!pointsAtOwnListener(result.address)) {
    result.outcome = isOwnUpstream(fd, result.address, knownPeer) ? OriginalDstOutcome::kLoop : OriginalDstOutcome::kFound;
    return result;
  }
  // The destination is one of our own listening addresses. Either the client dialled us directly
  // (then conntrack reports the untranslated address, equal to the local one) or a rule redirected
  // a connection for another of our addresses to us: relaying it would connect to ourselves.
  SocketAddress local;
  if (transparent || ops_.localAddress(fd, local).rc < 0 || local == result.address) {
    result.outcome = OriginalDstOutcome::kNotRedirected;
  } else {
    result.outcome = OriginalDstOutcome::kLoop;
  }
  return result;
}

bool OriginalDstResolver::pointsAtOwnListener(const SocketAddress& target) const {
  const SocketAddress dst = arrivalAddress(target);
  for (const SocketAddress& listener : listeners_) {
    if (listener.family() != dst.family() || listener.port() != dst.port()) continue;
    if (!listener.isAnyAddress()) {
      if (listener.sameIp(dst)) return true;
      continue;
    }
    if (ops_.isLocalIp(dst) != LocalIp::kNo) return true;  // unknown fails closed
  }
  return false;
}

bool OriginalDstResolver::isOwnUpstream(int fd, const SocketAddress& dst, const SocketAddress* knownPeer) const {
  if (own_.size() == 0 && own_.connectsInFlight() == 0) return false;  // nothing of ours out there
  SocketAddress peer;
  if (knownPeer != nullptr) {
    peer = *knownPeer;  // from accept4: one getpeername per connection fewer once any upstream is open
  } else if (ops_.peerAddress(fd, peer).rc < 0) {
    return false;
  }
  if (own_.contains(peer, dst)) return true;
  // A connect redirected on this host arrives on loopback (REDIRECT in OUTPUT maps to 127.0.0.1 /
  // ::1) and its handshake is done before connect() returns, so the acceptor can run before the
  // connecting thread records the socket, often by preempting it. While some connect is still
  // unrecorded, yield (it gets the CPU if we took it) and look again, a bounded number of times.
  // Connections from other hosts never arrive on loopback and never wait.
  if (own_.connectsInFlight() == 0) return false;
  SocketAddress local;
  if (ops_.localAddress(fd, local).rc < 0 || !isLoopback(local)) return false;
  for (int i = 0; i < kRecheckYields && own_.connectsInFlight() > 0; ++i) {
    ::sched_yield();
    if (own_.contains(peer, dst)) return true;
  }
  return false;
}

}  // namespace splicegate
