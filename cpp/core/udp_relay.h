// UDP original destination under TPROXY (listeners[].protocol: udp, docs/ARCHITECTURE.md "UDP").
//
//   client ──► [TPROXY] ──► listening socket (IP_TRANSPARENT, IP_RECVORIGDSTADDR; shared by the
//                             │                process, each worker epolls its own dup)
//                             │ recvmmsg: datagram + client + original destination D
//                             ▼
//              session (client, D) ── connected upstream socket (SO_MARK) ──► D
//                             ▲                                                │
//   client ◄── reply socket bound to D (IP_TRANSPARENT, shared per D) ◄─ recvmmsg, sendmmsg
//
// One UdpRelay per worker owns that worker's UDP listeners (UdpListener), sessions (UdpSession,
// in a UdpSessionTable: idle timeout, LRU cap) and reply sockets. fds: one per session (its
// upstream socket) plus one per original destination with live sessions (the reply socket).
// Nothing here is freed inside an epoll batch: closed sessions wait in a graveyard until
// disposeClosed() (WorkerCore's disposal rule).
#pragma once

#include <sys/socket.h>

#include <memory>
#include <unordered_map>
#include <vector>

#include "core_options.h"
#include "event_loop.h"
#include "host_latency.h"
#include "original_dst.h"
#include "stats.h"
#include "sys_error.h"
#include "udp_session.h"
#include "unique_fd.h"
#include "worker_latency.h"

namespace splicegate {

class UdpRelay;

// socket(SOCK_DGRAM) + IPV6_V6ONLY + IP_TRANSPARENT + IP_RECVORIGDSTADDR (IPV6_*) + bind,
// non-blocking. No SO_REUSEADDR (on UDP it would let a second process bind the same port and take
// a share of the datagrams): an address in use fails with EADDRINUSE.
UniqueFd openUdpListenSocket(const ListenerOptions& options, SocketAddress* bound, SysError& err);

// What the relay asks of its worker: the destination policy, judged once per new session (a deny
// is counted in the policy's counters and the deny log by the worker).
class UdpRelayOwner {
 public:
  virtual bool allowUdpDestination(const ListenerOptions& listener, const SocketAddress& destination,
                                   const SocketAddress& client) = 0;
  // Whether an address is this host's (OriginalDstOps::isLocalIp: injectable for tests).
  virtual LocalIp isThisHost(const SocketAddress& address) = 0;

 protected:
  ~UdpRelayOwner() = default;
};

// One worker's share of a UDP listening socket: its own dup, registered with EPOLLEXCLUSIVE.
class UdpListener final : public EventHandler {
 public:
  static std::unique_ptr<UdpListener> attach(UdpRelay& relay, EventLoop& loop, const ListenerOptions& options,
                                             int sharedFd, SysError& err);
  ~UdpListener() { detach(); }
  void onEvents(uint32_t events) override;
  int fd() const { return fd_.get(); }
  const ListenerOptions& options() const { return options_; }
  const SocketAddress& boundAddress() const { return bound_; }
  // Leaves the epoll (explicitly: the process's fd keeps the registration's file alive) and closes
  // the dup. The object stays valid for the rest of the batch and ignores events.
  void detach();

 private:
  UdpListener(UdpRelay& relay, EventLoop& loop, ListenerOptions options, UniqueFd fd, SocketAddress bound)
      : relay_(relay), loop_(loop), options_(std::move(options)), fd_(std::move(fd)), bound_(bound) {}
  UdpRelay& relay_;
  EventLoop& loop_;
  ListenerOptions options_;
  UniqueFd fd_;
  SocketAddress bound_;
  bool watched_ = false;
};

// A transparent socket bound to one original destination, shared by every session to it in this
// worker; closed when the last of them goes.
struct UdpReplySocket {
  UniqueFd fd;
  size_t users = 0;
};

class UdpSession final : public UdpFlow, public EventHandler {
 public:
  UdpSession(UdpRelay& relay, const UdpFlowKey& key, UniqueFd upstream, UdpReplySocket* reply, HostRef host)
      : UdpFlow(key), relay_(relay), upstream_(std::move(upstream)), reply_(reply), host_(host) {}
  void onEvents(uint32_t events) override;
  int upstreamFd() const { return upstream_.get(); }
  bool closed() const { return !upstream_; }

 private:
  friend class UdpRelay;
  UdpRelay& relay_;
  UniqueFd upstream_;  // connected to the original destination; closing it leaves the epoll
  UdpReplySocket* reply_;
  HostRef host_;
  uint64_t firstSentUs_ = 0;  // first datagram sent upstream; 0 once the first reply is recorded
  bool replied_ = false;
};

class UdpRelay {
 public:
  UdpRelay(EventLoop& loop, Stats& stats, WorkerLatency& latency, const CoreOptions& options, UdpRelayOwner& owner);
  ~UdpRelay();
  UdpRelay(const UdpRelay&) = delete;
  UdpRelay& operator=(const UdpRelay&) = delete;

  SysError attach(const ListenerOptions& options, int sharedFd, SocketAddress* bound);
  // Leaves every UDP listener (inside a batch too: the objects are freed by disposeClosed).
  void stopListening();
  size_t listenerCount() const { return listeners_.size(); }
  size_t sessionCount() const { return table_.size(); }
  // Closes every session.
  void closeAll();
  // Housekeeping tick: closes the sessions idle for udp_session_timeout.
  void expire(uint64_t nowUs);
  // Frees what was closed; the worker calls it only outside a batch.
  void disposeClosed();

  // UdpListener: its socket is readable.
  void readClients(UdpListener& listener);
  // UdpSession: its upstream socket is readable (or has an error).
  void readUpstream(UdpSession& session);

  // Datagrams per recvmmsg, and recvmmsg calls per wakeup before yielding to the other fds (the
  // sockets are level-triggered: what is left is reported again).
  static constexpr unsigned kBatch = 32;
  static constexpr unsigned kRoundsPerWakeup = 4;
  static constexpr size_t kMaxDatagram = 65536;

 private:
  // One control buffer per slot: room for the original destination (IP_ORIGDSTADDR/IPV6_*).
  struct Control {
    alignas(cmsghdr) char bytes[CMSG_SPACE(sizeof(sockaddr_in6))];
  };
  void ensureBuffers();
  // Points slot i at its buffer (full size), its name and, for a listener, its control buffer.
  void prepareRecv(bool fromListener);
  // Sends out_[0, count) on fd (msg_name set when fd is not connected), counting what the kernel
  // refused as dropped. Returns the datagrams sent; adds their bytes to `bytes`.
  unsigned sendBatch(int fd, unsigned count, uint64_t& bytes);
  // The session for a client's datagram, created if new (policy, cap, sockets); null = dropped
  // (counted).
  UdpSession* sessionFor(const UdpListener& listener, const SocketAddress& client, const SocketAddress& destination);
  // A new session's sockets, registered, not yet in the table; null (err says why) if one of
  // them cannot be set up.
  UdpSession* openSession(const UdpFlowKey& key, int& err);
  void evictOldest();
  UdpReplySocket* acquireReply(const SocketAddress& destination);
  void releaseReply(UdpReplySocket* reply, const SocketAddress& destination);
  void close(UdpSession& s);
  // Sends slots [from, to) upstream on s's connected socket.
  void sendUpstream(UdpSession& s, unsigned from, unsigned to);
  bool isOwnListener(const SocketAddress& destination) const;

  EventLoop& loop_;
  Stats& stats_;
  WorkerLatency& latency_;
  const CoreOptions& options_;
  UdpRelayOwner& owner_;
  UdpSessionTable table_;
  std::vector<std::unique_ptr<UdpListener>> listeners_;
  std::vector<std::unique_ptr<UdpListener>> closedListeners_;  // detached; freed outside a batch
  std::vector<UdpSession*> closed_;  // freed outside a batch: a later event may still name them
  std::unordered_map<SocketAddress, UdpReplySocket, SocketAddressHash> replies_;
  // recvmmsg/sendmmsg slots (parallel arrays: the calls take a contiguous mmsghdr array) and their
  // datagram buffers, allocated with the first UDP listener.
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> iovs_;
  std::vector<sockaddr_storage> names_;
  std::vector<Control> controls_;
  std::unique_ptr<char[]> buffers_;
  std::vector<UdpSession*> slotSession_;
  // The slots of one send run, compacted (sendUpstream / readUpstream).
  std::vector<mmsghdr> out_;
};

}  // namespace splicegate
