// Original destination of an accepted connection: SO_ORIGINAL_DST (IPv4) / IP6T_SO_ORIGINAL_DST
// (IPv6) after an iptables REDIRECT, or the accepted socket's local address on a transparent
// (TPROXY) listener. One small class with one job, the way Envoy's original_dst listener filter is.
//
// "No original destination" is an ordinary outcome, not an error: a client that dialled the
// listener directly is turned away and counted. So is a destination that would lead straight back
// into one of our own listeners (a loop), which would otherwise recurse until the fd limit.
#pragma once

#include <vector>

#include "socket_address.h"

namespace splicegate {

struct SyscallResult {
  int rc = 0;
  int err = 0;
};

// The syscalls the resolver needs, behind a seam so unit tests drive every outcome with fakes.
class OriginalDstOps {
 public:
  virtual ~OriginalDstOps() = default;
  virtual SyscallResult originalDst(int fd, int family, SocketAddress& out) = 0;
  virtual SyscallResult localAddress(int fd, SocketAddress& out) = 0;
  // True when ip (port ignored) is assigned to this network namespace.
  virtual bool isLocalIp(const SocketAddress& ip) = 0;
};

class KernelOriginalDstOps : public OriginalDstOps {
 public:
  SyscallResult originalDst(int fd, int family, SocketAddress& out) override;
  SyscallResult localAddress(int fd, SocketAddress& out) override;
  bool isLocalIp(const SocketAddress& ip) override;
};

enum class OriginalDstOutcome {
  kFound,          // relay to `address`
  kNotRedirected,  // dialled directly (or no conntrack entry): nothing to relay to
  kLoop,           // would connect back into one of our own listeners
};

struct OriginalDstResult {
  OriginalDstOutcome outcome = OriginalDstOutcome::kNotRedirected;
  SocketAddress address;
  int err = 0;  // errno of a failed lookup, for diagnostics
};

class OriginalDstResolver {
 public:
  explicit OriginalDstResolver(OriginalDstOps& ops) : ops_(ops) {}

  // Every address splicegate listens on in this namespace (all listeners of all workers share them).
  void setListenerAddresses(std::vector<SocketAddress> addresses) { listeners_ = std::move(addresses); }

  OriginalDstResult resolve(int fd, int family, bool transparent) const;

 private:
  bool pointsAtOwnListener(const SocketAddress& dst) const;

  OriginalDstOps& ops_;
  std::vector<SocketAddress> listeners_;
};

}  // namespace splicegate
