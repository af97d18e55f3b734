#include "worker_core.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "local_routes.h"
#include "proxy_protocol.h"
#include "upstream_socket.h"

namespace splicegate {

namespace {

// Housekeeping period: connect-timeout resolution, paused-accept retry, gauges.
constexpr long kTickNs = 50L * 1000 * 1000;
// The tick's period at rest (canRest): the idle sweep's period, so resting changes no deadline
// that relayed connections, the host cache or the policy refresh have.
constexpr time_t kRestTickSeconds = 1;
// The shortest pool idle_timeout that still lets the tick rest while connections sit in the pool:
// the rest tick's second is then at most a tenth of it.
constexpr uint32_t kPoolRestMinMs = 10'000;
constexpr uint64_t kIdleSweepUs = 1000 * 1000;
// How often the per-host latency table re-picks its busiest hosts.
constexpr uint64_t kLatencyRebalanceUs = 5 * 1000 * 1000;
// How often the policies re-read this host's addresses (getifaddrs) even without a netlink notice
// (onAddressChange re-reads at once on every change; this covers notices lost to ENOBUFS).
constexpr uint64_t kPolicyRefreshUs = 5 * 1000 * 1000;
// Idle upstream connections given up each time the worker finds itself out of fds: more than the
// one fd asked for, since the workers share the fd table (another's accept4 may take what this one
// frees) and the spare and paused listeners need fds too; few enough that a short shortage keeps
// most of a large pool. Each shortage met again (the next socket(), accept4 or tick retry) gives up
// the next oldest.
constexpr size_t kFdShedBatch = 32;
// Deny events kept between two drains (about a second apart); more are dropped and counted.
constexpr size_t kEventCapacity = 256;

// A connection waits in the listening socket's queue (poll needs no fd; the queue is shared with
// the other workers, so it may be gone by the accept4 after).
bool clientWaiting(int listenFd) {
  pollfd p{listenFd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

// How a redirected connection's original destination is learnt on this listener.
DestinationSource redirectSourceOf(const ListenerOptions& lo) {
  return lo.transparent ? DestinationSource::kTproxy : DestinationSource::kSoOriginalDst;
}

uint64_t wallTimeMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// Copy buffers kept for reuse when they come back.
constexpr size_t kMaxIdleBuffers = 256;

// The copy-buffer bound when the options leave it at 0: 64 MiB per worker (4096 x 16 KiB), or
// 1/64 of physical memory on a small machine, and never fewer than 16 buffers.
size_t copyBufferCap(const CoreOptions& o) {
  if (o.maxCopyBuffers > 0) return o.maxCopyBuffers;
  uint64_t budget = uint64_t{64} << 20;
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long pageSize = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && pageSize > 0) budget = std::min(budget, static_cast<uint64_t>(pages) * static_cast<uint64_t>(pageSize) / 64);
  return std::max<size_t>(16, static_cast<size_t>(budget / std::max<size_t>(1, o.copyBufferSize)));
}

}  // namespace

std::unique_ptr<WorkerCore> WorkerCore::create(const CoreOptions& options, SysError& err) {
  return create(options, std::make_unique<KernelOriginalDstOps>(), err);
}

std::unique_ptr<WorkerCore> WorkerCore::create(const CoreOptions& options, std::unique_ptr<OriginalDstOps> ops,
                                               SysError& err) {
  std::unique_ptr<EventLoop> loop = EventLoop::create(err);
  if (!loop) return nullptr;
  std::unique_ptr<WorkerCore> core(new WorkerCore(options, std::move(loop), std::move(ops)));
  err = core->init();
  if (err) return nullptr;
  return core;
}

WorkerCore::WorkerCore(const CoreOptions& options, std::unique_ptr<EventLoop> loop,
                       std::unique_ptr<OriginalDstOps> ops)
    : options_(options),
      loop_(std::move(loop)),
      dstOps_(std::move(ops)),
      resolver_(*dstOps_),
      pipes_(options.maxPipes, options.maxIdlePipes, options.pipeSize),
      buffers_(options.copyBufferSize, copyBufferCap(options), kMaxIdleBuffers),
      hosts_(HostLimits{options.maxHosts, options.maxConnectionsPerHost, options.maxPendingPerHost}, options.sharedHostCounts),
      context_{*loop_, stats_, pipes_, buffers_, hosts_, latency_, options_, *this},
      warm_(context_),
      httpPool_(options.httpPoolMaxIdlePerHost, static_cast<uint64_t>(options.httpPoolIdleTimeoutMs) * 1000, hosts_, stats_,
                options.httpPoolMaxIdle),
      policies_(options.policies),
      udp_(*loop_, stats_, latency_, options_, *this),
      events_(kEventCapacity),
      accessLog_(options.accessLogSample > 0 ? options.accessLogCapacity : 0),
      accessSampler_(options.accessLogSample, static_cast<uint64_t>(EventLoop::monotonicUs()) ^ reinterpret_cast<uintptr_t>(this)) {
  hosts_.setEraseHook([this](const Host& host) { warm_.dropHost(host); });
}

SysError WorkerCore::init() {
  if (options_.upstreamMark != 0) {
    // Fail at start, not per connection, when SO_MARK is not permitted (needs CAP_NET_ADMIN).
    UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int mark = static_cast<int>(options_.upstreamMark);
    if (!probe || ::setsockopt(probe.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
      return SysError::fromErrno("setsockopt", "SO_MARK for cluster.upstream_mark (needs CAP_NET_ADMIN)");
    }
  }
  if (options_.originalSource) {
    // Same for binding upstream sockets to client addresses (IP_TRANSPARENT needs CAP_NET_ADMIN).
    UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe || !setTransparent(probe.get(), AF_INET)) {
      return SysError::fromErrno("setsockopt", "IP_TRANSPARENT for cluster.original_source (needs CAP_NET_ADMIN)");
    }
  }
  tick_.core = this;
  tick_.handle = &WorkerCore::onTick;
  tick_.fd.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!tick_.fd) return SysError::fromErrno("timerfd_create");
  if (!setTickPeriod(false)) return SysError::fromErrno("timerfd_settime");
  if (SysError e = loop_->add(tick_.fd.get(), EPOLLIN, &tick_)) return e;

  kick_.core = this;
  kick_.handle = &WorkerCore::onKick;
  kick_.fd.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!kick_.fd) return SysError::fromErrno("eventfd");
  if (SysError e = loop_->add(kick_.fd.get(), EPOLLIN, &kick_)) return e;
  lastIdleSweepUs_ = loop_->nowUs();
  if (!policies_.empty()) {
    // Told of every address added or removed on this host and of every change to the local
    // routing table (netlink), so the "this host" list is re-read before a connection to a new
    // address or AnyIP range can be judged: the kernel queues the notice
    // when the address is added, ahead of any connection to it, and the loop takes events in
    // order (only an accept burst already under way can judge one first: docs/POLICY.md).
    // Opened before the first read, so no change between the two is missed. The periodic
    // re-read stays as the fallback should notices be lost (ENOBUFS) or netlink be unavailable.
    addressWatch_.core = this;
    addressWatch_.handle = &WorkerCore::onAddressChange;
    addressWatch_.fd.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!addressWatch_.fd) return SysError::fromErrno("socket", "netlink address watch");
    sockaddr_nl groups{};
    groups.nl_family = AF_NETLINK;
    // Route groups too: an AnyIP range comes and goes as a route in table local, not as an address.
    groups.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
    if (::bind(addressWatch_.fd.get(), reinterpret_cast<const sockaddr*>(&groups), sizeof groups) < 0) {
      return SysError::fromErrno("bind", "netlink address watch");
    }
    if (SysError e = loop_->add(addressWatch_.fd.get(), EPOLLIN, &addressWatch_)) return e;
  }
  // Fail at start rather than run with an empty "this host" list: local services would be open.
  if (SysError e = policies_.refreshLocalAddresses()) return e;
  lastPolicyRefreshUs_ = loop_->nowUs();
  spareFd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!spareFd_) return SysError::fromErrno("eventfd", "spare fd");
  return {};
}

WorkerCore::~WorkerCore() {
  listeners_.clear();
  closedListeners_.clear();
  closeAllConnections(CloseReason::kDrained);  // outside any batch: frees at once
}

SysError WorkerCore::attachListener(const ListenerOptions& options, int listenFd, SocketAddress* bound) {
  if (options.policy >= std::max<size_t>(policies_.size(), 1)) {
    errno = EINVAL;
    return SysError::fromErrno("attachListener", options.name + ": policy index out of range");
  }
  if (options.udp) {
    // UDP listeners live in the UdpRelay; they are not in listenerAddresses_, which is about TCP
    // connections looping back (the relay checks its own listeners' addresses).
    if (SysError e = udp_.attach(options, listenFd, bound)) return e;
    stats_.set(Stat::listeners_active, listenerCount());
    return {};
  }
  SysError err;
  std::unique_ptr<Listener> listener = Listener::attach(*this, options, listenFd, err);
  if (!listener) return err;
  if (bound) *bound = listener->boundAddress();
  listenerAddresses_.push_back(listener->boundAddress());
  listener->nameIndex = static_cast<uint32_t>(listenerNames_.size());
  listenerNames_.push_back(options.name);
  listenerStats_.push_back(std::make_unique<ListenerStats>());
  resolver_.setListenerAddresses(listenerAddresses_);
  listeners_.push_back(std::move(listener));
  stats_.set(Stat::listeners_active, listenerCount());
  return {};
}

void WorkerCore::stopAccepting() {
  // Posted from JS, this runs inside a batch whose later events may name a listener: detach now
  // (no more accepts); the Listener objects are freed at the end of runOnce.
  for (auto& listener : listeners_) {
    listener->detach();
    closedListeners_.push_back(std::move(listener));
  }
  listeners_.clear();
  udp_.stopListening();
  stats_.set(Stat::listeners_active, 0);
  // HTTP connections end at a request boundary from now on (a relayed stream has none to use).
  // close() inside the batch only unlinks: the session is freed after it (disposeClosed).
  sessions_.forEachSafe([](HttpSession* s) { s->drain(); });
  // listenerAddresses_ stays: a late redirected connection to them is still a loop.
}

void WorkerCore::closeAllConnections(CloseReason reason) {
  connections_.forEachSafe([reason](Connection* c) { c->close(reason); });
  sessions_.forEachSafe([reason](HttpSession* s) { s->close(reason); });
  udp_.closeAll();
  closeIdleUpstreams();
  // Posted through LoopThread this runs inside a batch (the wake handler is an event of it), and
  // a later event of that batch may name one of these connections: disposeClosed() waits then.
  disposeClosed();
}

void WorkerCore::runOnce(int timeoutMs) {
  dispatching_ = true;
  loop_->waitAndDispatch(timeoutMs);
  runReadyQueue();
  wakeHolderWaiters();
  kickIfReady();
  dispatching_ = false;
  disposeClosed();
  // Whatever this batch started (a connect, a PROXY handshake, an HTTP request) gets the busy
  // tick before its deadline could pass unseen.
  if (resting_ && !canRest()) setTickPeriod(false);
}

bool WorkerCore::canRest() const {
  if (!restAllowed_ || !spareFd_) return false;
  if (!connecting_.empty() || !handshaking_.empty() || !fdWaiters_.empty() || !holderWaiters_.empty()) return false;
  if (!ready_.empty() || !sessions_.empty() || !readySessions_.empty() || !holderWaitingSessions_.empty()) return false;
  if (!warm_.empty() || udp_.sessionCount() != 0) return false;
  // Pooled HTTP connections expire on the tick: at rest up to a second late, which only an
  // idle_timeout under kPoolRestMinMs would feel (the default is 60 s).
  if (httpPool_.idleCount() != 0 && options_.httpPoolIdleTimeoutMs < kPoolRestMinMs) return false;
  for (const auto& listener : listeners_) {
    if (listener->paused()) return false;
  }
  return true;
}

bool WorkerCore::setTickPeriod(bool rest) {
  itimerspec spec{};
  if (rest) {
    spec.it_interval.tv_sec = kRestTickSeconds;
    spec.it_value.tv_sec = kRestTickSeconds;
  } else {
    spec.it_interval.tv_nsec = kTickNs;
    spec.it_value.tv_nsec = kTickNs;
  }
  if (::timerfd_settime(tick_.fd.get(), 0, &spec, nullptr) != 0) return false;
  resting_ = rest;
  return true;
}

void WorkerCore::keepTicking() {
  restAllowed_ = false;
  if (resting_) setTickPeriod(false);
}

void WorkerCore::acceptFrom(Listener& listener) {
  for (int i = 0; i < options_.acceptBatch; ++i) {
    if (listener.paused()) return;  // the last accepted connection ran out of resources
    if (pauseIfFull(listener)) return;
    SocketAddress peer;
    socklen_t peerLength = SocketAddress::capacity();
    const int fd = ::accept4(listener.fd(), peer.sockaddrPtr(), &peerLength, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      acceptOne(listener, UniqueFd(fd), peer);
      if (listener.paused()) return;  // out of fds at the upstream socket (releaseSpareFd)
      continue;
    }
    switch (errno) {
      case EAGAIN:
        return;
      case EINTR:
      case ECONNABORTED:
        continue;
      case EMFILE:
      case ENFILE:
        // Out of fds: idle upstream connections give theirs up, and the accept is tried again. Only
        // for a client that is there: accept4 takes its fd before it looks at the queue, so the
        // call that would have said EAGAIN after the last client says EMFILE instead.
        if (clientWaiting(listener.fd()) && shedIdleUpstreams() > 0) continue;
        [[fallthrough]];
      case ENOBUFS:
      case ENOMEM:
        // Out of fds: the connection waits in the backlog. Stop polling this listener until the
        // next tick instead of spinning on a level-triggered event we cannot serve.
        stats_.add(Stat::downstream_cx_accept_paused);
        listener.pause();
        return;
      default:
        stats_.add(Stat::downstream_cx_accept_error);
        return;
    }
  }
  pauseIfFull(listener);
}

void WorkerCore::pauseAccepting() {
  // A connection got its client fd but not its upstream socket (or epoll room): out of fds. The
  // next accept would take the fd just freed and fail the same way, resetting every waiting client
  // in turn; instead they wait in the backlog until the tick, as when accept4 itself runs out.
  bool paused = false;
  for (auto& listener : listeners_) {
    if (listener->paused()) continue;
    listener->pause();
    paused = true;
  }
  if (paused) stats_.add(Stat::downstream_cx_accept_paused);
}

bool WorkerCore::pauseIfFull(Listener& listener) {
  if (connections_.size() + sessions_.size() < options_.maxDownstreamConnections) return false;
  // This worker's share is full. The accept queue is shared: leave the socket to the workers with
  // room (an EPOLLEXCLUSIVE wakeup only reaches workers still registered) and rejoin at the tick
  // after a connection closed. With every worker full, clients wait in the listen backlog, as
  // with HAProxy's maxconn, instead of being refused while another worker may have room.
  stats_.add(Stat::downstream_cx_overflow);
  listenerStats_[listener.nameIndex]->add(ListenerStat::downstream_cx_overflow);
  listener.pause();
  return true;
}

void WorkerCore::acceptOne(Listener& listener, UniqueFd fd, const SocketAddress& peer) {
  stats_.add(Stat::downstream_cx_total);
  ListenerStats& ls = *listenerStats_[listener.nameIndex];
  ls.add(ListenerStat::downstream_cx_total);
  const ListenerOptions& lo = listener.options();
  if (lo.http.enabled) {
    acceptHttp(listener, std::move(fd), peer);
    return;
  }
  // The protocol stage, for a listener with proxy_protocol: only a trusted peer may name another
  // client and destination. An untrusted one is reset at once when the header is required; when
  // it is optional the stage still reads its first bytes, and resets it if they are a header.
  const bool trusted = lo.proxyProtocol.enabled && cidrsContain(lo.proxyProtocol.trustedSources, peer);
  // What the access log says about this connection; refusals below are logged from it. The
  // listener is always named: a connection finds its listener's counters by it.
  AccessInfo access;
  access.listener = listener.nameIndex;
  if (accessSampler_.enabled()) access.client.set(peer);
  if (lo.proxyProtocol.enabled && !trusted && lo.proxyProtocol.required) {
    stats_.add(Stat::proxy_protocol_untrusted);
    resetOnClose(fd.get());
    access.refusal = Refusal::kProxyProtocolUntrusted;
    return endRefusedAtAccept(access);
  }
  if (lo.proxyProtocol.enabled) {
    // Admitted as a connection at once (it holds a socket and a small buffer), bounded like any.
    if (connections_.size() >= options_.maxDownstreamConnections) {
      stats_.add(Stat::downstream_cx_overflow);
      ls.add(ListenerStat::downstream_cx_overflow);
      resetOnClose(fd.get());
      access.refusal = Refusal::kDownstreamOverflow;
      return endRefusedAtAccept(access);
    }
    stats_.add(Stat::downstream_cx_active);
    ls.add(ListenerStat::downstream_cx_active);
    auto* c = new Connection(context_, std::move(fd));
    c->access = access;
    connections_.pushBack(c);
    if (c->beginHandshake(lo, trusted)) handshaking_.pushBack(c);
    return;
  }
  const OriginalDstResult dst = resolver_.resolve(fd.get(), lo.address.family(), lo.transparent, &peer);
  // Every refusal below resets the client (fd closes on return): a refused connection is an
  // abnormal end, and a FIN would read as an empty but complete answer.
  switch (dst.outcome) {
    case OriginalDstOutcome::kNotRedirected:
      stats_.add(Stat::no_original_dst);
      ls.add(ListenerStat::no_original_dst);
      resetOnClose(fd.get());
      access.refusal = Refusal::kNoOriginalDst;
      return endRefusedAtAccept(access);
    case OriginalDstOutcome::kLoop:
      // Refused at once: the looped upstream connect behind it fails with this reset, and so does
      // the client connection that started it, instead of recursing until the fd limit.
      refuseLoop(ls, access, dst.address, redirectSourceOf(lo));
      resetOnClose(fd.get());
      return endRefusedAtAccept(access);
    case OriginalDstOutcome::kFound:
      break;
  }
  access.source = redirectSourceOf(lo);
  // acceptFrom stops accepting at the bound (the shared socket then feeds workers with room); this
  // guards the same bound should a batch ever cross it.
  if (connections_.size() >= options_.maxDownstreamConnections) {
    stats_.add(Stat::downstream_cx_overflow);
    ls.add(ListenerStat::downstream_cx_overflow);
    resetOnClose(fd.get());
    access.refusal = Refusal::kDownstreamOverflow;
    access.destination.set(dst.address);
    return endRefusedAtAccept(access);
  }
  Host* host = admitDestination(lo, ls, dst.address, peer, access);
  if (!host) {
    resetOnClose(fd.get());
    return endRefusedAtAccept(access);
  }
  stats_.add(Stat::downstream_cx_active);
  ls.add(ListenerStat::downstream_cx_active);
  auto* c = new Connection(context_, std::move(fd));
  c->access = access;
  connections_.pushBack(c);
  startUpstream(*c, *host, peer, dst.address);
}

void WorkerCore::handshakeDone(Connection& c, const SocketAddress& headerDestination, const SocketAddress& headerClient) {
  handshaking_.remove(&c);
  const ListenerOptions& lo = *c.listener();
  ListenerStats& ls = *listenerStats_[c.access.listener];
  SocketAddress destination = headerDestination;
  SocketAddress client = headerClient;
  if (client.family() == AF_UNSPEC) {
    socklen_t len = SocketAddress::capacity();
    ::getpeername(c.downstreamFd(), client.sockaddrPtr(), &len);
  } else if (accessSampler_.enabled()) {
    c.access.client.set(client);  // the client the header named
  }
  if (destination.family() == AF_UNSPEC) {
    // No header, or one that names no addresses: the socket's own original destination, exactly
    // as on a listener without proxy_protocol.
    const OriginalDstResult dst = resolver_.resolve(c.downstreamFd(), lo.address.family(), lo.transparent);
    switch (dst.outcome) {
      case OriginalDstOutcome::kNotRedirected:
        stats_.add(Stat::no_original_dst);
        ls.add(ListenerStat::no_original_dst);
        c.access.refusal = Refusal::kNoOriginalDst;
        return c.close(CloseReason::kRefused);
      case OriginalDstOutcome::kLoop:
        refuseLoop(ls, c.access, dst.address, redirectSourceOf(lo));
        return c.close(CloseReason::kRefused);
      case OriginalDstOutcome::kFound:
        destination = dst.address;
        c.access.source = redirectSourceOf(lo);
        break;
    }
  } else {
    c.access.source = DestinationSource::kProxyProtocol;
    if (resolver_.pointsAtOwnListener(destination)) {
      // A header naming one of our own listeners would loop straight back in.
      refuseLoop(ls, c.access, destination, DestinationSource::kProxyProtocol);
      return c.close(CloseReason::kRefused);
    }
  }
  Host* host = admitDestination(lo, ls, destination, client, c.access);
  if (!host) return c.close(CloseReason::kRefused);
  startUpstream(c, *host, client, destination);
}

void WorkerCore::acceptHttp(const Listener& listener, UniqueFd fd, const SocketAddress& peer) {
  const ListenerOptions& lo = listener.options();
  ListenerStats& ls = *listenerStats_[listener.nameIndex];
  // The access log: a connection refused here gets a connection record (close_reason refused),
  // as on a relaying listener; every request of an admitted one gets a request record.
  AccessInfo access;
  if (accessSampler_.enabled()) {
    access.listener = listener.nameIndex;
    access.client.set(peer);
  }
  if (lo.proxyProtocol.enabled && lo.proxyProtocol.required && !cidrsContain(lo.proxyProtocol.trustedSources, peer)) {
    stats_.add(Stat::proxy_protocol_untrusted);
    resetOnClose(fd.get());
    access.refusal = Refusal::kProxyProtocolUntrusted;
    return endRefusedAtAccept(access);
  }
  // The original destination is the fallback for requests without a (trusted, valid) routing
  // header; a connection that was not redirected simply has none (503 no_destination per request).
  const OriginalDstResult dst = resolver_.resolve(fd.get(), lo.address.family(), lo.transparent);
  if (dst.outcome == OriginalDstOutcome::kLoop) {
    refuseLoop(ls, access, dst.address, redirectSourceOf(lo));
    resetOnClose(fd.get());
    return endRefusedAtAccept(access);
  }
  if (connections_.size() + sessions_.size() >= options_.maxDownstreamConnections) {
    stats_.add(Stat::downstream_cx_overflow);
    ls.add(ListenerStat::downstream_cx_overflow);
    resetOnClose(fd.get());
    access.refusal = Refusal::kDownstreamOverflow;
    return endRefusedAtAccept(access);
  }
  const SocketAddress original = dst.outcome == OriginalDstOutcome::kFound ? dst.address : SocketAddress();
  stats_.add(Stat::downstream_cx_active);
  ls.add(ListenerStat::downstream_cx_active);
  auto* s = new HttpSession(context_, httpPool_, *this, lo, std::move(fd), peer, original,
                            accessSampler_.enabled() ? &access : nullptr);
  s->listenerStats = &ls;
  sessions_.pushBack(s);
  s->start();
}

bool WorkerCore::allowUdpDestination(const ListenerOptions& listener, const SocketAddress& destination,
                                     const SocketAddress& client) {
  AccessInfo access;  // UDP sessions get no access-log record
  return allowDestination(listener, destination, client, access);
}

bool WorkerCore::allowDestination(const ListenerOptions& listener, const SocketAddress& destination,
                                  const SocketAddress& client, AccessInfo& access) {
  DestinationPolicy* policy = policies_.at(listener.policy);
  if (!policy) return true;
  const PolicyDecision decision = policy->check(destination);
  if (accessSampler_.enabled()) {
    access.decision = decision;
    access.policyIndex = listener.policy;
    access.policy = decision.allow ? AccessRecord::Policy::kAllow : AccessRecord::Policy::kDeny;
  }
  if (decision.allow) return true;
  policy->countDenied(decision);
  recordDenied(listener, client, destination, decision);
  return false;
}

AccessRecord* WorkerCore::newRequestRecord(const AccessInfo& access) {
  AccessRecord* r = newAccessRecord();
  if (!r) return nullptr;
  fillAccessRecord(*r, access);
  r->kind = AccessRecord::Kind::kRequest;
  return r;
}

void WorkerCore::scheduleResume(HttpSession& s) {
  if (!s.readyNode.linked()) readySessions_.pushBack(&s);
}

void WorkerCore::waitForHolder(HttpSession& s) {
  if (!s.holderWaitNode.linked()) holderWaitingSessions_.pushBack(&s);
}

void WorkerCore::sessionClosed(HttpSession& s) {
  sessions_.remove(&s);
  readySessions_.remove(&s);
  holderWaitingSessions_.remove(&s);
  fdWaitingSessions_.remove(&s);
  stats_.sub(Stat::downstream_cx_active);
  if (s.listenerStats) s.listenerStats->sub(ListenerStat::downstream_cx_active);
  closedSessions_.push_back(&s);
}

Host* WorkerCore::admitDestination(const ListenerOptions& listener, ListenerStats& listenerStats,
                                   const SocketAddress& original, const SocketAddress& client, AccessInfo& access) {
  SocketAddress destination = original;
  if (options_.upstreamPortOverride != 0) destination.setPort(options_.upstreamPortOverride);
  const bool logged = accessSampler_.enabled();
  if (logged) access.destination.set(destination);
  // The address and port we would connect to is what the policy judges (docs/POLICY.md).
  if (DestinationPolicy* policy = policies_.at(listener.policy)) {
    const PolicyDecision decision = policy->check(destination);
    if (logged) {
      access.decision = decision;
      access.policyIndex = listener.policy;
      access.policy = decision.allow ? AccessRecord::Policy::kAllow : AccessRecord::Policy::kDeny;
    }
    if (!decision.allow) {
      policy->countDenied(decision);
      listenerStats.add(ListenerStat::policy_denied);
      recordDenied(listener, client, destination, decision);
      access.refusal = Refusal::kPolicyDenied;
      return nullptr;  // never connected upstream; the caller resets the client at once
    }
  }
  Host* host = nullptr;
  switch (hosts_.admit(destination, loop_->nowUs(), &host)) {
    case HostCache::Admit::kOk:
      return host;
    case HostCache::Admit::kHostOverflow:
      stats_.add(Stat::host_overflow);
      stats_.add(Stat::upstream_cx_overflow);
      access.refusal = Refusal::kUpstreamOverflow;
      return nullptr;
    case HostCache::Admit::kConnectionOverflow:
    case HostCache::Admit::kPendingOverflow:
      // Envoy's circuit breakers: refuse at once rather than queue without bound.
      stats_.add(Stat::upstream_cx_overflow);
      access.refusal = Refusal::kUpstreamOverflow;
      return nullptr;
  }
  return nullptr;
}

AccessRecord* WorkerCore::newAccessRecord() {
  if (!accessSampler_.take()) return nullptr;
  AccessRecord* r = accessLog_.append();
  if (!r) {
    stats_.add(Stat::access_log_dropped);  // the drain is late: lose the record, never wait
    return nullptr;
  }
  stats_.add(Stat::access_log_records);
  r->wallTimeMs = wallTimeMs();
  return r;
}

void WorkerCore::fillAccessRecord(AccessRecord& r, const AccessInfo& access) const {
  if (access.listener < listenerNames_.size()) r.setListener(listenerNames_[access.listener]);
  r.client = access.client;
  r.destination = access.destination;
  r.decision = access.decision;
  r.policyIndex = access.policyIndex;
  r.policy = access.policy;
  r.source = access.source;
  r.refusal = access.refusal;
  r.bytesSent = access.bytesSent;
  r.bytesReceived = access.bytesReceived;
}

void WorkerCore::endRefusedAtAccept(const AccessInfo& access) {
  // A connection refused at accept ends here (no Connection was made): it counts under its close
  // reason like every other, so the cx_close_* counters sum to the connections that have ended
  // and match the access log's close_reason.
  stats_.add(closeStat(CloseReason::kRefused));
  AccessRecord* r = newAccessRecord();
  if (!r) return;
  fillAccessRecord(*r, access);
  r->reason = CloseReason::kRefused;
  r->durationUs = 0;
}

void WorkerCore::logClosed(const Connection& c, CloseReason reason) {
  AccessRecord* r = newAccessRecord();
  if (!r) return;
  fillAccessRecord(*r, c.access);
  r->reason = reason;
  const uint64_t now = EventLoop::monotonicUs();
  r->durationUs = now - c.acceptedUs();
  if (c.establishedUs() != 0) r->connectUs = c.establishedUs() - c.connectStartedUs();
  if (c.firstByteUs() != 0) r->ttfbUs = c.firstByteUs() - c.establishedUs();
}

void WorkerCore::startUpstream(Connection& c, Host& host, const SocketAddress& client, const SocketAddress& destination) {
  c.attachHost(host);
  if (options_.sendProxyProtocol != 0) {
    uint8_t header[proxy_protocol::kMaxWrittenLength];
    const auto version = options_.sendProxyProtocol == 1 ? proxy_protocol::Version::v1 : proxy_protocol::Version::v2;
    const size_t n = proxy_protocol::write(version, client, destination, header, sizeof header);
    c.sendFirst(header, n);
    stats_.add(Stat::proxy_protocol_sent);
  }
  if (warm_.enabledFor(host)) {
    // A warm socket has sent nothing yet, so the header still goes first on it.
    RegisteredUpstream upstream = warm_.take(host);
    if (upstream) c.startWithUpstream(std::move(upstream));
    else c.start();
    // The host is in use: have the next client's connection ready; not while short of fds (c.start
    // may just have closed warm sockets to get one).
    if (!fdShort_) warm_.topUp(host);
  } else {
    c.start(options_.originalSource ? &client : nullptr);
  }
}

void WorkerCore::recordDenied(const ListenerOptions& listener, const SocketAddress& client,
                              const SocketAddress& destination, const PolicyDecision& decision) {
  WorkerEvent* event = events_.append();
  if (!event) return;  // counted as dropped; the counters still have it
  event->kind = WorkerEventKind::kPolicyDenied;
  event->wallTimeMs = wallTimeMs();
  event->source = client;
  event->destination = destination;
  std::strncpy(event->listener, listener.name.c_str(), WorkerEvent::kNameCapacity - 1);
  event->policy = listener.policy;
  event->decision = decision;
}

void WorkerCore::refuseLoop(ListenerStats& ls, AccessInfo& access, const SocketAddress& to, DestinationSource source) {
  stats_.add(Stat::loop_rejected);
  ls.add(ListenerStat::loop_rejected);
  access.refusal = Refusal::kLoopRejected;
  access.source = source;
  access.destination.set(to);  // where the loop led: which rule sent it back in
}

size_t WorkerCore::shedIdleUpstreams() {
  fdShort_ = true;
  size_t closed = httpPool_.evictOldest(kFdShedBatch, Stat::http_pool_evicted_fd_pressure);
  if (closed < kFdShedBatch) closed += warm_.evictOldest(kFdShedBatch - closed);
  return closed;
}

bool WorkerCore::releaseSpareFd() {
  // Idle upstreams first: while they have fds to give, the spare stays in hand and accepting goes
  // on (the next shortage gives up the next oldest).
  if (shedIdleUpstreams() > 0) return true;
  pauseAccepting();
  if (!spareFd_) return false;
  spareFd_.reset();
  return true;
}

void WorkerCore::waitForFd(Connection& c, const SocketAddress* source) {
  if (!fdWaiters_.holds(c)) fdWaiters_.pushBack(&c);
  if (source) fdWaitSources_.insert_or_assign(&c, *source);
  // Another worker took what releaseSpareFd freed: free more for the tick's retry.
  shedIdleUpstreams();
  pauseAccepting();
}

void WorkerCore::waitForFd(HttpSession& s) {
  if (!s.fdWaitNode.linked()) fdWaitingSessions_.pushBack(&s);
  shedIdleUpstreams();  // as for a relayed connection
  pauseAccepting();
}

bool WorkerCore::retryFdWaiters() {
  while (Connection* c = fdWaiters_.front()) {
    const auto source = fdWaitSources_.find(c);
    const SocketAddress* from = source == fdWaitSources_.end() ? nullptr : &source->second;
    if (!c->retryUpstreamSocket(from) && (shedIdleUpstreams() == 0 || !c->retryUpstreamSocket(from))) {
      return false;  // still none: the rest wait too
    }
    fdWaiters_.remove(c);
    fdWaitSources_.erase(c);
  }
  // HTTP requests after the relayed connections, oldest first as well. One that ended meanwhile
  // left the list (sessionClosed); one that timed out says it no longer waits.
  while (HttpSession* s = fdWaitingSessions_.front()) {
    if (!s->retryUpstreamSocket() && (shedIdleUpstreams() == 0 || !s->retryUpstreamSocket())) return false;
    fdWaitingSessions_.remove(s);
  }
  return true;
}

void WorkerCore::connectStarted(Connection& c) { connecting_.pushBack(&c); }

void WorkerCore::connectFinished(Connection& c) { connecting_.remove(&c); }

void WorkerCore::scheduleResume(Connection& c) {
  if (!ready_.holds(c)) ready_.pushBack(&c);
}

void WorkerCore::waitForHolder(Connection& c) {
  if (!holderWaiters_.holds(c)) holderWaiters_.pushBack(&c);
}

void WorkerCore::wakeHolderWaiters() {
  // Runs once per batch, after everything that could release a holder in it. Wakes as many
  // waiters, oldest first, as there are holders free now; one that loses its holder to another
  // connection before it resumes queues again at the back. Nobody is woken while nothing is free,
  // so waiting costs nothing (no retry loop), and a waiter is never left behind a free holder.
  size_t free = buffers_.available();
  // Pipes the bound still allows count too: a pipe destroyed with bytes in it (its connection
  // reset) leaves no idle pipe behind, yet a waiter may create one in its place.
  if (options_.relayMode != CoreOptions::RelayMode::kCopy) free += pipes_.available();
  while (free > 0) {
    Connection* c = holderWaiters_.popFront();
    if (!c) break;
    if (!c->waitingForHolder()) continue;  // got one on its own since
    c->holderAvailable();
    --free;
  }
  while (free > 0) {  // HTTP tunnels after the relayed connections that waited
    HttpSession* s = holderWaitingSessions_.popFront();
    if (!s) break;
    if (!s->waitingForHolder()) continue;
    s->holderAvailable();
    --free;
  }
}

void WorkerCore::connectionClosed(Connection& c, CloseReason reason) {
  connecting_.remove(&c);
  ready_.remove(&c);
  holderWaiters_.remove(&c);
  handshaking_.remove(&c);
  fdWaiters_.remove(&c);
  if (!fdWaitSources_.empty()) fdWaitSources_.erase(&c);
  connections_.remove(&c);
  stats_.sub(Stat::downstream_cx_active);
  listenerStats_[c.access.listener]->sub(ListenerStat::downstream_cx_active);
  stats_.add(closeStat(reason));
  logClosed(c, reason);
  switch (reason) {
    case CloseReason::kIdleTimeout:
      stats_.add(Stat::cx_idle_timeout);
      break;
    case CloseReason::kDrained:
      stats_.add(Stat::cx_drained);
      break;
    case CloseReason::kResourceExhausted:
      // No socket or no epoll room: idle upstreams give up theirs (fds, epoll watches, memory).
      shedIdleUpstreams();
      pauseAccepting();
      break;
    default:
      break;
  }
  closed_.push_back(&c);
}

void WorkerCore::runReadyQueue() {
  // Connections that used their byte budget continue here, once each per batch, so a single bulk
  // transfer cannot starve the rest. What is still busy after this round asks for another.
  size_t rounds = ready_.size();
  while (rounds-- > 0) {
    Connection* c = ready_.popFront();
    if (!c) break;
    c->resume();
  }
  size_t sessionRounds = readySessions_.size();  // HTTP tunnels, the same way
  while (sessionRounds-- > 0) {
    HttpSession* s = readySessions_.popFront();
    if (!s) break;
    s->resume();
  }
}

void WorkerCore::kickIfReady() {
  // Work left on the ready list: make the next epoll_wait return at once to run it.
  if ((!ready_.empty() || !readySessions_.empty()) && !kicked_) {
    const uint64_t one = 1;
    if (::write(kick_.fd.get(), &one, sizeof one) == sizeof one) kicked_ = true;
  }
}

void WorkerCore::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(kick_.fd.get(), &one, sizeof one);
}

void WorkerCore::onKick() {
  uint64_t value;
  while (::read(kick_.fd.get(), &value, sizeof value) > 0) {
  }
  kicked_ = false;
  if (wakeHandler_) wakeHandler_();
}

void WorkerCore::onAddressChange() {
  // Which address changed does not matter (one listThisHost re-reads all): drain the notices,
  // then re-read once if any concerned this host. Route changes in other tables (a router may
  // send thousands) do not. ENOBUFS (notices lost to a full socket buffer) concerns it too.
  alignas(nlmsghdr) uint8_t buf[8192];
  bool concerned = false;
  for (;;) {
    const ssize_t n = ::recv(addressWatch_.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      concerned = concerned || noticesConcernThisHost(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == ENOBUFS) concerned = true;
    if (n < 0 && (errno == EINTR || errno == ENOBUFS)) continue;
    break;
  }
  if (!concerned) return;
  policies_.refreshLocalAddresses();  // on failure the last snapshot stays; the tick tries again
  lastPolicyRefreshUs_ = loop_->nowUs();
}

void WorkerCore::onTick() {
  uint64_t expirations;
  while (::read(tick_.fd.get(), &expirations, sizeof expirations) > 0) {
  }
  const uint64_t now = loop_->nowUs();
  // All connects share one timeout, so the FIFO's head is always the first to expire.
  const uint64_t connectTimeoutUs = static_cast<uint64_t>(options_.connectTimeoutMs) * 1000;
  while (Connection* c = connecting_.front()) {
    if (c->connectStartedUs() + connectTimeoutUs > now) break;
    stats_.add(Stat::upstream_cx_connect_timeout);
    c->close(CloseReason::kConnectTimeout);
  }
  sessions_.forEachSafe([now](HttpSession* s) { s->onTick(now); });
  httpPool_.expire(now);
  // PROXY headers: each listener has its own timeout, so every waiting connection is looked at
  // (only those still in their protocol stage, each tick).
  handshaking_.forEachSafe([&](Connection* c) {
    if (c->handshakeDeadlineUs() > now) return;
    stats_.add(Stat::proxy_protocol_timeout);
    c->close(CloseReason::kProtocolTimeout);
  });
  // At rest every tick is a sweep: the rest period is the sweep's, and timer jitter must not
  // make one tick fall a few microseconds short and skip a second.
  if (resting_ || now - lastIdleSweepUs_ >= kIdleSweepUs) {
    lastIdleSweepUs_ = now;
    const uint32_t idleMs = options_.idleTimeoutMs;
    connections_.forEachSafe([&](Connection* c) {
      if (c->state() == ConnectionState::kRelaying && c->idleAtLeast(now, idleMs)) {
        c->close(CloseReason::kIdleTimeout);
      }
    });
  }
  warm_.expire(now);
  udp_.expire(now);
  if (now - lastRebalanceUs_ >= kLatencyRebalanceUs) {
    lastRebalanceUs_ = now;
    latency_.rebalance();
  }
  hosts_.sweep(now, static_cast<uint64_t>(options_.cleanupIntervalMs) * 1000);
  if (now - lastPolicyRefreshUs_ >= kPolicyRefreshUs) {
    lastPolicyRefreshUs_ = now;
    policies_.refreshLocalAddresses();  // on failure the last snapshot stays in force
  }
  // Accepting resumes only once every accepted client has its upstream socket and the spare fd is
  // back in hand: otherwise the next accepted connection could find no fd for its upstream.
  const bool noneWaits = retryFdWaiters();
  if (noneWaits && !spareFd_) {
    spareFd_.reset(::eventfd(0, EFD_CLOEXEC));
    if (!spareFd_ && isOutOfFds(errno) && shedIdleUpstreams() > 0) spareFd_.reset(::eventfd(0, EFD_CLOEXEC));
  }
  if (noneWaits && spareFd_) fdShort_ = false;
  if (noneWaits && spareFd_ && connections_.size() + sessions_.size() < options_.maxDownstreamConnections) {
    for (auto& listener : listeners_) listener->resumeIfPaused();
  }
  refreshGauges();
  if (!resting_ && canRest()) setTickPeriod(true);
}

void WorkerCore::refreshGauges() {
  stats_.set(Stat::pipes_in_use, pipes_.inUse());
  stats_.set(Stat::pipes_idle, pipes_.idle());
  stats_.set(Stat::host_count, hosts_.size());
  stats_.set(Stat::host_evictions, hosts_.evictions());
  stats_.set(Stat::host_removed_idle, hosts_.removedIdle());
}

void WorkerCore::disposeClosed() {
  if (dispatching_) return;  // runOnce calls again once the batch is over
  for (Connection* c : closed_) delete c;
  closed_.clear();
  for (HttpSession* s : closedSessions_) delete s;
  closedSessions_.clear();
  httpPool_.disposeRetired();
  warm_.disposeDropped();
  udp_.disposeClosed();
}

}  // namespace splicegate
