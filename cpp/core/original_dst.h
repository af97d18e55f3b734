// Original destination of an accepted connection: SO_ORIGINAL_DST (IPv4) / IP6T_SO_ORIGINAL_DST
// (IPv6) after an iptables REDIRECT, or the accepted socket's local address on a transparent
// (TPROXY) listener. One small class with one job, the way Envoy's original_dst listener filter is.
//
// "No original destination" is an ordinary outcome, not an error: a client that dialled the
// listener directly is turned away and counted. So is a destination that would lead straight back
// into one of our own listeners, or a connection that is one of our own upstream connects
// redirected back to us (a loop), which would otherwise recurse until the fd limit.
#pragma once

#include <cerrno>
#include <cstdint>
#include <vector>

#include "own_sockets.h"
#include "socket_address.h"

namespace splicegate {

struct SyscallResult {
  int rc = 0;
  int err = 0;
};

// Whether an IP is assigned to this network namespace. kUnknown (the probe itself failed, e.g.
// EMFILE) is answered as "ours" by the resolver: refusing one connection is cheap, relaying one
// that loops is not.
enum class LocalIp : uint8_t { kNo, kYes, kUnknown };

// The syscalls the resolver needs, behind a seam so unit tests drive every outcome with fakes.
class OriginalDstOps {
 public:
  virtual ~OriginalDstOps() = default;
  virtual SyscallResult originalDst(int fd, int family, SocketAddress& out) = 0;
  virtual SyscallResult localAddress(int fd, SocketAddress& out) = 0;
  // ip's port is ignored.
  virtual LocalIp isLocalIp(const SocketAddress& ip) = 0;
  // The connected peer (getpeername). A failure skips the own-socket loop check; the default,
  // for fakes that do not model peers, always fails.
  virtual SyscallResult peerAddress(int fd, SocketAddress& out) { return {-1, ENOTSUP}; }
};

class KernelOriginalDstOps : public OriginalDstOps {
 public:
  SyscallResult originalDst(int fd, int family, SocketAddress& out) override;
  SyscallResult localAddress(int fd, SocketAddress& out) override;
  LocalIp isLocalIp(const SocketAddress& ip) override;
  SyscallResult peerAddress(int fd, SocketAddress& out) override;
};

enum class OriginalDstOutcome {
  kFound,          // relay to `address`
  kNotRedirected,  // dialled directly (or no conntrack entry): nothing to relay to
  kLoop,           // would connect back into one of our own listeners, or is one of our own
                   // upstream connects redirected back to us
};

struct OriginalDstResult {
  OriginalDstOutcome outcome = OriginalDstOutcome::kNotRedirected;
  SocketAddress address;
  int err = 0;  // errno of a failed lookup, for diagnostics
};

class OriginalDstResolver {
 public:
  // own: the upstream sockets to recognise when they come back (the process-wide registry unless a
  // test gives its own).
  explicit OriginalDstResolver(OriginalDstOps& ops, const OwnSockets& own = OwnSockets::process())
      : ops_(ops), own_(own) {}

  // Every address splicegate listens on in this namespace (all listeners of all workers share them).
  void setListenerAddresses(std::vector<SocketAddress> addresses) { listeners_ = std::move(addresses); }

  // knownPeer: the client's address when the caller already has it (accept4 returns it), so the
  // own-socket loop check needs no getpeername; nullptr asks the socket.
  OriginalDstResult resolve(int fd, int family, bool transparent, const SocketAddress* knownPeer = nullptr) const;
  // dst is one of our listeners (or a local wildcard listener's port): connecting would loop.
  bool pointsAtOwnListener(const SocketAddress& dst) const;

 private:
  bool isOwnUpstream(int fd, const SocketAddress& dst, const SocketAddress* knownPeer) const;

  OriginalDstOps& ops_;
  const OwnSockets& own_;
  std::vector<SocketAddress> listeners_;
};

}  // namespace splicegate
