#include "udp_relay.h"

#include <fcntl.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include "socket_options.h"
#include "upstream_socket.h"

namespace splicegate {

namespace {

std::string describe(const ListenerOptions& options) { return options.name + " udp " + options.address.toString(); }

// The listening socket's receive buffer (the kernel doubles it for its bookkeeping).
constexpr int kListenerReceiveBuffer = 4 << 20;

// The original destination TPROXY recorded for a datagram, from its control messages.
bool originalDestination(const msghdr& hdr, SocketAddress& out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&hdr); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&hdr), c)) {
    socklen_t len = 0;
    if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) len = sizeof(sockaddr_in);
    else if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR) len = sizeof(sockaddr_in6);
    else continue;
    if (c->cmsg_len < CMSG_LEN(len)) return false;
    sockaddr_storage ss{};
    std::memcpy(&ss, CMSG_DATA(c), len);  // CMSG_DATA need not be aligned for sockaddr_in6
    out = SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
    return out.family() == AF_INET || out.family() == AF_INET6;
  }
  return false;
}

}  // namespace

UniqueFd openUdpListenSocket(const ListenerOptions& options, SocketAddress* bound, SysError& err) {
  const SocketAddress& addr = options.address;
  const std::string where = describe(options);
  const bool v6 = addr.family() == AF_INET6;
  UniqueFd fd(::socket(addr.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    err = SysError::fromErrno("socket", where);
    return {};
  }
  if (v6 && !setIntOption(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1)) {
    err = SysError::fromErrno("setsockopt", where + " (IPV6_V6ONLY)");
    return {};
  }
  // TPROXY hands a datagram only to a transparent socket; without the original destination in a
  // control message the datagram could not be relayed at all.
  if (!setTransparent(fd.get(), addr.family())) {
    err = SysError::fromErrno("setsockopt", where + " (IP_TRANSPARENT needs CAP_NET_ADMIN)");
    return {};
  }
  if (!setIntOption(fd.get(), v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_RECVORIGDSTADDR : IP_RECVORIGDSTADDR, 1)) {
    err = SysError::fromErrno("setsockopt", where + (v6 ? " (IPV6_RECVORIGDSTADDR)" : " (IP_RECVORIGDSTADDR)"));
    return {};
  }
  // Every client's datagrams queue in this one buffer while the worker is busy; the default
  // (net.core.rmem_default, ~200 KiB: about 90 full-size Ethernet datagrams) overflows on the
  // first scheduling hiccup. CAP_NET_ADMIN, which IP_TRANSPARENT needed, lets us go past rmem_max.
  if (!setIntOption(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, kListenerReceiveBuffer)) {
    setIntOption(fd.get(), SOL_SOCKET, SO_RCVBUF, kListenerReceiveBuffer);  // capped at rmem_max
  }
  if (::bind(fd.get(), addr.sockaddrPtr(), addr.length()) < 0) {
    err = SysError::fromErrno("bind", where);
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

std::unique_ptr<UdpListener> UdpListener::attach(UdpRelay& relay, EventLoop& loop, const ListenerOptions& options,
                                                 int sharedFd, SysError& err) {
  const std::string where = describe(options);
  UniqueFd fd(::fcntl(sharedFd, F_DUPFD_CLOEXEC, 0));
  if (!fd) {
    err = SysError::fromErrno("dup", where);
    return nullptr;
  }
  // The number came from another thread: check it still is the datagram socket it was meant to be.
  SocketAddress local;
  socklen_t len = SocketAddress::capacity();
  const int flags = ::fcntl(fd.get(), F_GETFL);
  const bool ok = getIntOption(fd.get(), SOL_SOCKET, SO_TYPE) == SOCK_DGRAM && flags >= 0 && (flags & O_NONBLOCK) &&
                  ::getsockname(fd.get(), local.sockaddrPtr(), &len) == 0 &&
                  local.family() == options.address.family() &&
                  (options.address.port() == 0 || local.port() == options.address.port());
  if (!ok) {
    err = SysError{"attach", EBADF, where + " (fd " + std::to_string(sharedFd) + " is not its datagram socket)"};
    return nullptr;
  }
  auto listener = std::unique_ptr<UdpListener>(new UdpListener(relay, loop, options, std::move(fd), local));
  // Level-triggered: a wakeup reads a bounded number of batches and epoll reports the rest again.
  if (SysError e = loop.add(listener->fd(), EPOLLIN | EPOLLEXCLUSIVE, listener.get())) {
    err = e;
    return nullptr;
  }
  listener->watched_ = true;
  return listener;
}

void UdpListener::detach() {
  if (!fd_) return;
  if (watched_) loop_.remove(fd_.get());
  watched_ = false;
  fd_.reset();
}

void UdpListener::onEvents(uint32_t) {
  if (fd_ && watched_) relay_.readClients(*this);
}

void UdpSession::onEvents(uint32_t) {
  if (!closed()) relay_.readUpstream(*this);
}

UdpRelay::UdpRelay(EventLoop& loop, Stats& stats, WorkerLatency& latency, const CoreOptions& options, UdpRelayOwner& owner)
    : loop_(loop), stats_(stats), latency_(latency), options_(options), owner_(owner), table_(options.udpMaxSessions) {}

UdpRelay::~UdpRelay() {
  listeners_.clear();
  closedListeners_.clear();
  closeAll();
  disposeClosed();
}

void UdpRelay::ensureBuffers() {
  if (buffers_) return;
  buffers_.reset(new char[kBatch * kMaxDatagram]);
  msgs_.resize(kBatch);
  iovs_.resize(kBatch);
  names_.resize(kBatch);
  controls_.resize(kBatch);
  slotSession_.resize(kBatch);
  out_.resize(kBatch);
}

SysError UdpRelay::attach(const ListenerOptions& options, int sharedFd, SocketAddress* bound) {
  SysError err;
  std::unique_ptr<UdpListener> listener = UdpListener::attach(*this, loop_, options, sharedFd, err);
  if (!listener) return err;
  ensureBuffers();
  if (bound) *bound = listener->boundAddress();
  listeners_.push_back(std::move(listener));
  return {};
}

void UdpRelay::stopListening() {
  for (auto& l : listeners_) {
    l->detach();
    closedListeners_.push_back(std::move(l));
  }
  listeners_.clear();
}

void UdpRelay::closeAll() {
  while (UdpFlow* f = table_.oldest()) close(static_cast<UdpSession&>(*f));
}

void UdpRelay::expire(uint64_t nowUs) {
  const uint64_t timeoutUs = static_cast<uint64_t>(options_.udpSessionTimeoutMs) * 1000;
  while (UdpFlow* f = table_.nextExpired(nowUs, timeoutUs)) {
    stats_.add(Stat::udp_sessions_expired);
    close(static_cast<UdpSession&>(*f));
  }
}

void UdpRelay::disposeClosed() {
  for (UdpSession* s : closed_) delete s;
  closed_.clear();
  closedListeners_.clear();
}

void UdpRelay::close(UdpSession& s) {
  if (s.closed()) return;
  table_.remove(&s);
  loop_.remove(s.upstream_.get());
  s.upstream_.reset();
  releaseReply(s.reply_, s.key().destination);
  s.reply_ = nullptr;
  stats_.set(Stat::udp_sessions_active, table_.size());
  closed_.push_back(&s);
}

void UdpRelay::prepareRecv(bool fromListener) {
  for (unsigned i = 0; i < kBatch; ++i) {
    iovs_[i].iov_base = buffers_.get() + static_cast<size_t>(i) * kMaxDatagram;
    iovs_[i].iov_len = kMaxDatagram;
    msghdr& h = msgs_[i].msg_hdr;
    h = msghdr{};
    h.msg_iov = &iovs_[i];
    h.msg_iovlen = 1;
    if (fromListener) {
      h.msg_name = &names_[i];
      h.msg_namelen = sizeof(sockaddr_storage);
      h.msg_control = controls_[i].bytes;
      h.msg_controllen = sizeof controls_[i].bytes;
    }
    msgs_[i].msg_len = 0;
  }
}

bool UdpRelay::isOwnListener(const SocketAddress& destination) const {
  for (const auto& l : listeners_) {
    const SocketAddress& b = l->boundAddress();
    if (b.family() != destination.family() || b.port() != destination.port()) continue;
    if (b.sameIp(destination)) return true;
    // A wildcard listener takes its port on every local address; "is it local" is asked only on
    // this rare path (same port), and an unanswerable question counts as "ours".
    if (b.isAnyAddress() && owner_.isThisHost(destination) != LocalIp::kNo) return true;
  }
  return false;
}

UdpReplySocket* UdpRelay::acquireReply(const SocketAddress& destination) {
  auto it = replies_.find(destination);
  if (it != replies_.end()) {
    ++it->second.users;
    return &it->second;
  }
  // Bound to D, the socket would share D with whatever service of this host is bound there, and
  // a datagram socket bound later with SO_REUSEADDR gets that service's datagrams (the relayed
  // ones included): a destination of this host is not relayed (policy.deny_special, the default,
  // denies it before this; this holds with it off). Asked once per destination, not per session.
  if (owner_.isThisHost(destination) != LocalIp::kNo) {
    errno = EADDRNOTAVAIL;  // not a shortage of fds: no session is evicted for it (sessionFor)
    return nullptr;
  }
  UniqueFd fd(::socket(destination.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return nullptr;
  // Other workers, and the next config generation, bind the same foreign address: SO_REUSEADDR.
  // Nothing is received on it (TPROXY assigns the client's datagrams to the listener, and the
  // address is not this host's), so sharing the address takes nothing from anyone.
  if (!setIntOption(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1)) return nullptr;
  if (destination.family() == AF_INET6 && !setIntOption(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 1)) return nullptr;
  if (!setTransparent(fd.get(), destination.family())) return nullptr;
  if (::bind(fd.get(), destination.sockaddrPtr(), destination.length()) < 0) return nullptr;
  UdpReplySocket& entry = replies_[destination];
  entry.fd = std::move(fd);
  entry.users = 1;
  return &entry;
}

void UdpRelay::releaseReply(UdpReplySocket* reply, const SocketAddress& destination) {
  if (!reply || --reply->users > 0) return;
  replies_.erase(destination);  // closes the socket
}

UdpSession* UdpRelay::sessionFor(const UdpListener& listener, const SocketAddress& client, const SocketAddress& destination) {
  const UdpFlowKey key{client, destination};
  if (UdpFlow* f = table_.find(key)) return static_cast<UdpSession*>(f);
  // Not redirected: sent to the listener itself (or looped back to it). Nothing to relay to.
  // Counted as a UDP drop only: no_original_dst is the sum of the TCP listeners' own counters.
  if (isOwnListener(destination)) {
    stats_.add(Stat::udp_dropped_error);
    return nullptr;
  }
  if (!owner_.allowUdpDestination(listener.options(), destination, client)) {
    stats_.add(Stat::udp_dropped_policy);
    return nullptr;
  }
  // Room is made only for a session that exists: a flow whose sockets cannot be set up (connect
  // refused, its reply address taken) must not close a live session for nothing. Out of fds with a
  // full table, the session idle longest gives its fds up first (then the attempt is repeated).
  int err = 0;
  UdpSession* s = openSession(key, err);
  if (!s && table_.full() && (err == EMFILE || err == ENFILE)) {
    evictOldest();
    s = openSession(key, err);
  }
  if (!s) {
    stats_.add(Stat::udp_dropped_error);
    return nullptr;
  }
  // The session idle longest makes room: a busy flow is never refused for an idle one.
  if (table_.full()) evictOldest();
  table_.insert(s, loop_.nowUs());
  stats_.add(Stat::udp_sessions_total);
  stats_.set(Stat::udp_sessions_active, table_.size());
  return s;
}

void UdpRelay::evictOldest() {
  stats_.add(Stat::udp_sessions_evicted);
  close(static_cast<UdpSession&>(*table_.oldest()));
}

UdpSession* UdpRelay::openSession(const UdpFlowKey& key, int& err) {
  const SocketAddress& destination = key.destination;
  UniqueFd upstream(::socket(destination.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!upstream) {
    err = errno;  // out of fds (EMFILE/ENFILE) or memory
    return nullptr;
  }
  // Marked like every upstream socket, so the redirect rules can exclude our own traffic.
  if (options_.upstreamMark != 0 && !setIntOption(upstream.get(), SOL_SOCKET, SO_MARK, static_cast<int>(options_.upstreamMark))) {
    err = errno;
    return nullptr;
  }
  // Connected: the kernel filters replies to this flow's destination, and sendmmsg needs no names.
  if (::connect(upstream.get(), destination.sockaddrPtr(), destination.length()) < 0) {
    err = errno;
    return nullptr;
  }
  UdpReplySocket* reply = acquireReply(destination);
  if (!reply) {
    err = errno;
    return nullptr;
  }
  const HostRef host = options_.recordLatency ? latency_.attach(destination) : HostRef{};
  auto* s = new UdpSession(*this, key, std::move(upstream), reply, host);
  if (SysError e = loop_.add(s->upstreamFd(), EPOLLIN, s)) {
    releaseReply(reply, destination);
    delete s;  // never registered: no event can name it
    err = e.err;
    return nullptr;
  }
  return s;
}

unsigned UdpRelay::sendBatch(int fd, unsigned count, uint64_t& bytes) {
  unsigned pos = 0;
  unsigned delivered = 0;
  bool retried = false;
  while (pos < count) {
    const int r = ::sendmmsg(fd, out_.data() + pos, count - pos, MSG_DONTWAIT);
    if (r > 0) {
      for (int i = 0; i < r; ++i) bytes += out_[pos + i].msg_hdr.msg_iov->iov_len;
      pos += static_cast<unsigned>(r);
      delivered += static_cast<unsigned>(r);
      continue;
    }
    const int err = r < 0 ? errno : EAGAIN;
    if (err == EINTR) continue;
    if (err == ECONNREFUSED && !retried) {
      // An ICMP error for an earlier datagram, reported on this send: this one was not sent.
      retried = true;
      continue;
    }
    if (err == EAGAIN || err == ENOBUFS) {
      // The socket's send buffer is full: UDP may drop, and the rest of the run would fail the same.
      stats_.add(Stat::udp_dropped_overflow, count - pos);
      break;
    }
    stats_.add(Stat::udp_dropped_error);  // this datagram only (EMSGSIZE, unreachable, ...)
    ++pos;
  }
  return delivered;
}

void UdpRelay::sendUpstream(UdpSession& s, unsigned from, unsigned to) {
  if (s.closed()) {
    // Evicted later in the same batch to make room for another flow: its datagrams go nowhere.
    stats_.add(Stat::udp_dropped_overflow, to - from);
    return;
  }
  for (unsigned i = from; i < to; ++i) {
    iovs_[i].iov_len = msgs_[i].msg_len;
    out_[i - from] = mmsghdr{};
    out_[i - from].msg_hdr.msg_iov = &iovs_[i];
    out_[i - from].msg_hdr.msg_iovlen = 1;
  }
  if (s.firstSentUs_ == 0 && !s.replied_) s.firstSentUs_ = EventLoop::monotonicUs();
  uint64_t bytes = 0;
  stats_.add(Stat::udp_datagrams_upstream, sendBatch(s.upstreamFd(), to - from, bytes));
}

void UdpRelay::readClients(UdpListener& listener) {
  for (unsigned round = 0; round < kRoundsPerWakeup; ++round) {
    prepareRecv(true);
    const int n = ::recvmmsg(listener.fd(), msgs_.data(), kBatch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // EAGAIN: drained. Anything else: the next wakeup tries again.
    }
    const uint64_t now = loop_.nowUs();
    for (int i = 0; i < n; ++i) {
      slotSession_[i] = nullptr;
      const msghdr& h = msgs_[i].msg_hdr;
      // Every datagram read from a client counts in, whatever becomes of it (dropped ones too).
      stats_.add(Stat::udp_datagrams_in);
      stats_.add(Stat::udp_bytes_in, msgs_[i].msg_len);
      SocketAddress destination;
      if ((h.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || !originalDestination(h, destination)) {
        stats_.add(Stat::udp_dropped_error);
        continue;
      }
      const SocketAddress client = SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&names_[i]), h.msg_namelen);
      UdpSession* s = sessionFor(listener, client, destination);
      if (!s) continue;
      table_.touch(s, now);
      slotSession_[i] = s;
    }
    // Consecutive datagrams of one flow go upstream in one sendmmsg.
    for (int i = 0; i < n;) {
      UdpSession* s = slotSession_[i];
      int j = i + 1;
      while (j < n && slotSession_[j] == s) ++j;
      if (s) sendUpstream(*s, static_cast<unsigned>(i), static_cast<unsigned>(j));
      i = j;
    }
    if (static_cast<unsigned>(n) < kBatch) return;
  }
}

void UdpRelay::readUpstream(UdpSession& s) {
  const SocketAddress& client = s.key().client;
  for (unsigned round = 0; round < kRoundsPerWakeup && !s.closed(); ++round) {
    prepareRecv(false);
    const int n = ::recvmmsg(s.upstreamFd(), msgs_.data(), kBatch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno == EAGAIN) return;
      // EINTR, or an ICMP error (ECONNREFUSED, ...) for an earlier datagram: reading it cleared
      // it; the destination may still answer later datagrams.
      continue;
    }
    const uint64_t now = loop_.nowUs();
    if (!s.replied_ && n > 0) {
      s.replied_ = true;
      // Time to the first reply goes into the ttfb histograms (docs/LATENCY.md).
      if (options_.recordLatency && s.firstSentUs_ != 0) {
        latency_.record(s.host_, LatencyMetric::kTtfb, EventLoop::monotonicUs() - s.firstSentUs_);
      }
    }
    table_.touch(&s, now);
    unsigned count = 0;
    for (int i = 0; i < n; ++i) {
      if (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) {
        stats_.add(Stat::udp_dropped_error);
        continue;
      }
      iovs_[i].iov_len = msgs_[i].msg_len;
      mmsghdr& m = out_[count++];
      m = mmsghdr{};
      m.msg_hdr.msg_iov = &iovs_[i];
      m.msg_hdr.msg_iovlen = 1;
      m.msg_hdr.msg_name = const_cast<sockaddr*>(client.sockaddrPtr());
      m.msg_hdr.msg_namelen = client.length();
    }
    // From the original destination's address: the client sees the server it addressed answer.
    uint64_t bytes = 0;
    stats_.add(Stat::udp_datagrams_out, count > 0 ? sendBatch(s.reply_->fd.get(), count, bytes) : 0);
    stats_.add(Stat::udp_bytes_out, bytes);
    if (static_cast<unsigned>(n) < kBatch) return;
  }
}

}  // namespace splicegate
