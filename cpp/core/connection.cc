#include "connection.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "socket_options.h"
#include "upstream_socket.h"

namespace splicegate {

namespace {

// EPOLLPRI: TCP urgent data, after which a read may stop short with bytes still queued (relay.h).
constexpr uint32_t kSocketEvents = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;

}  // namespace

void resetOnClose(int fd) {
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

// Every idle relayed connection is one of these plus its own-socket registry entry; the
// benchmark's memory per idle connection (README, Performance) follows this size. Grow it only
// knowingly: a field needed for one phase (handshake, fd wait) belongs behind a pointer, and lists
// of phases that never overlap share a node.
static_assert(sizeof(Connection) <= 264, "Connection grew past 264 bytes: see the comment above");

Connection& Connection::Side::owner() {
  return *containerOf(this, upstream ? &Connection::up_ : &Connection::down_);
}

uint32_t Connection::offsetNow() const {
  const uint64_t elapsed = EventLoop::monotonicUs() - acceptedUs_;
  return static_cast<uint32_t>(std::min<uint64_t>(elapsed, UINT32_MAX - 1) + 1);
}

Connection::Connection(WorkerContext& context, UniqueFd downstream)
    : ctx_(context) {
  down_.fd = std::move(downstream);
  up_.upstream = true;
  lastActivityMs_ = msClock(ctx_.loop.nowUs());
  acceptedUs_ = EventLoop::monotonicUs();  // exact, not the batch's cached time: it feeds proxy_overhead
  recordLatency_ = ctx_.options.recordLatency;
}

void Connection::attachHost(Host& host) {
  host_ = &host;
  connectPending_ = true;
  if (recordLatency_) host.latencyRef = ctx_.latency.attach(host.address);
}

void Connection::sendFirst(const uint8_t* data, size_t length) {
  if (!preamble_) preamble_ = std::make_unique<Preamble>();
  Preamble& p = *preamble_;
  if (length > p.begin) return;  // cannot happen: the room in front fits the longest header
  p.begin = static_cast<uint16_t>(p.begin - length);
  std::memcpy(p.data + p.begin, data, length);
}

void Connection::recordConnectStart() {
  connectStartedOffset_ = offsetNow();
  // Time spent waiting for the client's PROXY header is the client's, not the proxy's overhead.
  if (recordLatency_) ctx_.latency.record(host_->latencyRef, LatencyMetric::kProxyOverhead, connectStartedOffset_ - stageDoneOffset_);
}

bool Connection::beginHandshake(const ListenerOptions& listener, bool trusted) {
  trusted_ = trusted;
  state_ = ConnectionState::kHandshake;
  preamble_ = std::make_unique<Preamble>();
  preamble_->listener = &listener;
  preamble_->deadlineUs = ctx_.loop.nowUs() + static_cast<uint64_t>(listener.proxyProtocol.timeoutMs) * 1000;
  if (ctx_.loop.add(down_.fd.get(), kSocketEvents, &down_)) {
    close(CloseReason::kResourceExhausted);
    return false;
  }
  downRegistered_ = true;
  // Bytes may already be queued (the header often arrives with the handshake's last ACK): the
  // registration's first event reads them.
  return true;
}

void Connection::onHandshakeEvent() {
  Preamble& p = *preamble_;
  const int fd = down_.fd.get();
  for (;;) {
    const size_t room = proxy_protocol::kMaxHeaderLength - p.received();
    ssize_t n;
    do {
      n = ::recv(fd, p.data + p.end, room, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      p.end = static_cast<uint16_t>(p.end + n);
      const proxy_protocol::ParseResult r = proxy_protocol::parse(p.data + Preamble::kHeaderRoom, p.received());
      if (r.status != proxy_protocol::ParseStatus::need_more) return finishHandshake(r);
      if (p.received() < proxy_protocol::kMaxHeaderLength) continue;
      // The parser decides within kMaxHeaderLength bytes; a full buffer still undecided is refused.
      ctx_.stats.add(Stat::proxy_protocol_error);
      return close(CloseReason::kProtocolError);
    }
    if (n == 0) {  // the client finished before its header did
      if (p.received() == 0 && !p.listener->proxyProtocol.required) {
        // Not even a first byte: with the header optional that is an empty plain stream, whose
        // half-close is passed on like any other (the relay reads the EOF again).
        proxy_protocol::ParseResult plain;
        plain.status = proxy_protocol::ParseStatus::error;
        plain.error = proxy_protocol::ParseError::not_proxy;
        return finishHandshake(plain);
      }
      ctx_.stats.add(Stat::proxy_protocol_error);
      return close(CloseReason::kProtocolError);
    }
    if (errno == EAGAIN) return;  // the next edge brings more
    ctx_.stats.add(Stat::downstream_cx_destroy_remote);
    return close(CloseReason::kDownstreamError);
  }
}

void Connection::finishHandshake(const proxy_protocol::ParseResult& r) {
  Preamble& p = *preamble_;
  Stats& stats = ctx_.stats;
  SocketAddress destination;  // AF_UNSPEC: the socket's own original destination
  SocketAddress client;       // AF_UNSPEC: the socket's peer
  if (r.status == proxy_protocol::ParseStatus::error) {
    if (r.error != proxy_protocol::ParseError::not_proxy || p.listener->proxyProtocol.required) {
      stats.add(Stat::proxy_protocol_error);
      stats.add(proxyErrorStat(r.error));
      return close(CloseReason::kProtocolError);
    }
    stats.add(Stat::proxy_protocol_plain);  // everything read so far is the stream's own
  } else if (!trusted_) {
    // A header from a sender that may not choose addresses: neither honoured nor passed on (an
    // upstream that reads PROXY headers itself would take it for ours).
    stats.add(Stat::proxy_protocol_untrusted);
    return close(CloseReason::kProtocolError);
  } else {
    stats.add(Stat::proxy_protocol_accepted);
    p.begin = static_cast<uint16_t>(p.begin + r.header.length);
    if (r.header.command == proxy_protocol::Command::proxy && r.header.family != AF_UNSPEC) {
      destination = r.header.destination;
      client = r.header.source;
    } else {
      stats.add(Stat::proxy_protocol_local);  // LOCAL, UNKNOWN, or a transport we do not relay
    }
  }
  if (p.pending() > 0) stats.add(Stat::bytes_received, p.pending());
  // Bytes past what was read may still be queued, and no new edge comes for them.
  down_.readable = true;
  state_ = ConnectionState::kConnecting;
  stageDoneOffset_ = offsetNow();
  ctx_.events.handshakeDone(*this, destination, client);
}

void Connection::recordFirstByte() {
  firstByteUs_ = EventLoop::monotonicUs();
  if (recordLatency_) ctx_.latency.record(host_->latencyRef, LatencyMetric::kTtfb, firstByteUs_ - establishedUs());
}

Connection::~Connection() = default;

void Connection::start(const SocketAddress* source) {
  EventLoop& loop = ctx_.loop;
  Stats& stats = ctx_.stats;
  if (!downRegistered_) {
    if (loop.add(down_.fd.get(), kSocketEvents, &down_)) {
      close(CloseReason::kResourceExhausted);
      return;
    }
    downRegistered_ = true;
  }
  stats.add(Stat::upstream_cx_total);
  recordConnectStart();
  UpstreamOpen opened = openUpstream(host_->address, ctx_.options.upstreamMark, up_.fd, &upRegistration_, source);
  while (opened == UpstreamOpen::kSocketFailed && isOutOfFds(errno) && ctx_.events.releaseSpareFd()) {
    // Out of fds with this client already accepted: idle upstreams give their fds up, or else the
    // worker's spare fd serves it and accepting pauses until fds free up, so the backlog waits
    // instead of draining into resets. Again while something was freed: what idle upstreams gave
    // up may be gone already (another worker took it), and the spare is still there for this.
    opened = openUpstream(host_->address, ctx_.options.upstreamMark, up_.fd, &upRegistration_, source);
  }
  if (opened == UpstreamOpen::kSocketFailed && isOutOfFds(errno)) {
    // Still none, spare included: another worker of the process took what was freed (they share one fd
    // table). The client was accepted and must not be reset for that: it waits, like the clients
    // in the backlog, for the next tick to find an fd, within connect_timeout (the connect FIFO
    // times it out as an unanswered connect).
    stats.add(Stat::upstream_cx_fd_wait);
    ctx_.events.connectStarted(*this);
    ctx_.events.waitForFd(*this, source);
    return;
  }
  continueStart(opened);
}

bool Connection::retryUpstreamSocket(const SocketAddress* source) {
  const UpstreamOpen opened = openUpstream(host_->address, ctx_.options.upstreamMark, up_.fd, &upRegistration_, source);
  if (opened == UpstreamOpen::kSocketFailed && isOutOfFds(errno)) return false;
  continueStart(opened);  // stays in the connect FIFO where it is: its connect_timeout runs on
  return true;
}

void Connection::continueStart(UpstreamOpen opened) {
  EventLoop& loop = ctx_.loop;
  Stats& stats = ctx_.stats;
  if (up_.fd) stats.add(Stat::upstream_cx_active);
  if (opened != UpstreamOpen::kInProgress) {
    stats.add(Stat::upstream_cx_connect_fail);
    if (opened == UpstreamOpen::kConnectFailed) ++host_->stat(HostStat::cx_connect_fail);
    if (opened == UpstreamOpen::kBindFailed) stats.add(Stat::original_source_failed);
    close(opened == UpstreamOpen::kSocketFailed ? CloseReason::kResourceExhausted : CloseReason::kConnectFailed);
    return;
  }
  const int fd = up_.fd.get();
  // Even an immediate success is finished by the first EPOLLOUT, so there is one path to relaying.
  if (loop.add(fd, kSocketEvents, &up_)) {
    close(CloseReason::kResourceExhausted);
    return;
  }
  if (phaseList == 0) ctx_.events.connectStarted(*this);  // not yet in the connect FIFO
}

void Connection::startWithUpstream(RegisteredUpstream warm) {
  EventLoop& loop = ctx_.loop;
  // Already connected and already counted (upstream_cx_total/active) by the preconnect pool. Owned
  // by this connection before anything can fail, so close() uncounts it on every path.
  up_.fd = std::move(warm.fd);
  upRegistration_ = std::move(warm.registration);
  if (!downRegistered_) {
    if (loop.add(down_.fd.get(), kSocketEvents, &down_)) {
      close(CloseReason::kResourceExhausted);
      return;
    }
    downRegistered_ = true;
  }
  // It is registered in epoll under the pool's handler: re-point the registration at this side.
  if (loop.modify(up_.fd.get(), kSocketEvents, &up_)) {
    close(CloseReason::kResourceExhausted);
    return;
  }
  up_.writable = true;
  // A warm socket skips the handshake: proxy_overhead is recorded, connect is not (none happened).
  recordConnectStart();
  establishedOffset_ = connectStartedOffset_;
  finishConnectAttempt();
  ctx_.events.connectFinished(*this);
  state_ = ConnectionState::kRelaying;
  relay();
}

void Connection::Side::onEvents(uint32_t events) {
  Connection& connection = owner();
  if (connection.state_ == ConnectionState::kClosed) return;  // stale event in this batch
  if (events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) writable = true;
  if (events & (EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) peerClosing = true;
  if (events & EPOLLPRI) keepUrgentDataInline(fd.get());
  connection.onSideEvent(*this, events);
}

void Connection::onSideEvent(Side& side, uint32_t events) {
  if (state_ == ConnectionState::kHandshake) {
    if (!side.upstream) onHandshakeEvent();
    return;
  }
  if (state_ == ConnectionState::kConnecting) {
    if (side.upstream) {
      onConnectReady(events);
    } else if (events & (EPOLLERR | EPOLLHUP)) {
      // The client is gone before the upstream answered. A half-close (RDHUP alone) is not an
      // error: it is kept and passed on once connected.
      ctx_.stats.add(Stat::downstream_cx_destroy_remote);
      close(CloseReason::kDownstreamError);
    }
    return;
  }
  relay();
  // A socket error (the peer's reset, a retransmission timeout): the relay has moved what it could
  // (a reset peer's last bytes are still readable) and meets the error on its next read of that
  // socket. While the direction from it holds bytes the other peer is not taking, that read does
  // not come: the other peer would wait for a stream that has already ended abnormally, and the
  // connection would keep its holder. So a relay still open after this event ends here, with resets.
  // (SO_ERROR is read only to be acted on: once read, a later recv would report EOF, not the error.)
  if ((events & EPOLLERR) && state_ == ConnectionState::kRelaying &&
      getIntOption(side.fd.get(), SOL_SOCKET, SO_ERROR) != 0) {
    abortWith(side.upstream ? CloseReason::kUpstreamError : CloseReason::kDownstreamError, side);
  }
}

void Connection::onConnectReady(uint32_t events) {
  if (events & (EPOLLERR | EPOLLHUP)) {
    ctx_.stats.add(Stat::upstream_cx_connect_fail);
    ++host_->stat(HostStat::cx_connect_fail);
    close(CloseReason::kConnectFailed);
    return;
  }
  if (!(events & EPOLLOUT)) return;
  finishConnectAttempt();
  establishedOffset_ = offsetNow();
  if (recordLatency_) ctx_.latency.record(host_->latencyRef, LatencyMetric::kConnect, establishedOffset_ - connectStartedOffset_);
  ctx_.events.connectFinished(*this);
  state_ = ConnectionState::kRelaying;
  relay();
}

void Connection::finishConnectAttempt() {
  if (!connectPending_) return;
  connectPending_ = false;
  ctx_.hosts.connectDone(*host_);
}

void Connection::resume() {
  if (state_ == ConnectionState::kRelaying) relay();
}

void Connection::holderAvailable() {
  relay_.holderAvailable(relayIo());
  ctx_.events.scheduleResume(*this);
}

void Connection::relayNeedsHolder() { ctx_.events.waitForHolder(*this); }

// A host's tx_bytes count what was written to it, its rx_bytes what was read from it: the same
// points as upstream_cx_tx_bytes_total and upstream_cx_rx_bytes_total, so the hosts sum to those
// even when a stream ends with bytes still in flight (read from the upstream, never delivered).
void Connection::relayDelivered(bool toUpstream, uint64_t n) {
  if (toUpstream) host_->stat(HostStat::tx_bytes) += n;
  (toUpstream ? access.bytesSent : access.bytesReceived) += n;
  if (firstByteUs_ == 0 && !toUpstream) recordFirstByte();
}

void Connection::relayReceived(bool toUpstream, uint64_t n) {
  if (!toUpstream) host_->stat(HostStat::rx_bytes) += n;
}

bool Connection::flushPreamble() {
  Preamble& p = *preamble_;
  while (p.pending() > 0 && up_.writable) {
    ssize_t n;
    do {
      n = ::send(up_.fd.get(), p.data + p.begin, p.pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      // The client's own bytes (read with its PROXY header) sit after kHeaderRoom; ours before.
      const size_t clientStart = std::max<size_t>(p.begin, Preamble::kHeaderRoom);
      const size_t sentEnd = p.begin + static_cast<size_t>(n);
      if (sentEnd > clientStart) access.bytesSent += sentEnd - clientStart;
      p.begin = static_cast<uint16_t>(p.begin + n);
      ctx_.stats.add(Stat::upstream_cx_tx_bytes_total, static_cast<uint64_t>(n));
      host_->stat(HostStat::tx_bytes) += static_cast<uint64_t>(n);
    } else if (errno == EAGAIN) {
      up_.writable = false;
    } else {
      return false;
    }
  }
  if (p.pending() == 0) preamble_.reset();
  return true;
}

void Connection::relay() {
  size_t budget = ctx_.options.relayBudgetBytes;
  // The preamble goes first; until it is out the client's bytes stay where they are (socket,
  // pipe), so nothing relayed can overtake it.
  if (preamble_ && !flushPreamble()) return abortWith(CloseReason::kUpstreamError, up_);
  const Relay::Result result = relay_.run(relayIo(), budget, /*holdToUpstream=*/preamble_ != nullptr);
  if (result == Relay::Result::kError) {
    return relay_.failedUpstream() ? abortWith(CloseReason::kUpstreamError, up_)
                                   : abortWith(CloseReason::kDownstreamError, down_);
  }
  lastActivityMs_ = msClock(ctx_.loop.nowUs());
  if (result == Relay::Result::kDone) return close(CloseReason::kCompleted);
  if (result == Relay::Result::kYield) ctx_.events.scheduleResume(*this);
}

void Connection::abortWith(CloseReason reason, Side& failed) {
  ctx_.stats.add(failed.upstream ? Stat::upstream_cx_destroy_remote : Stat::downstream_cx_destroy_remote);
  close(reason);  // resets both sides
}

void Connection::close(CloseReason reason) {
  if (state_ == ConnectionState::kClosed) return;
  state_ = ConnectionState::kClosed;
  if (reason != CloseReason::kCompleted) {
    // Anything but both directions finished (an error, a refused or timed-out connect, idle
    // timeout, drain cut-off, no resources): reset both sides so neither peer mistakes the cut for
    // the stream's real end (a FIN would look like a complete response to a length-less
    // protocol, and like an empty successful one when the upstream never answered).
    if (down_.fd) resetOnClose(down_.fd.get());
    if (up_.fd) resetOnClose(up_.fd.get());
  }
  if (host_) {
    if (reason == CloseReason::kConnectTimeout) ++host_->stat(HostStat::cx_connect_timeout);
    finishConnectAttempt();
    ctx_.hosts.connectionClosed(*host_, ctx_.loop.nowUs());
  }
  preamble_.reset();
  relay_.releaseHolders(ctx_.relayServices());
  upRegistration_.reset();
  if (up_.fd) {
    ctx_.stats.sub(Stat::upstream_cx_active);
    up_.fd.reset();
  }
  down_.fd.reset();  // closing removes both from epoll: neither fd is ever duplicated
  if (recordLatency_ && host_) {
    ctx_.latency.record(host_->latencyRef, LatencyMetric::kDuration, EventLoop::monotonicUs() - acceptedUs_);
  }
  ctx_.events.connectionClosed(*this, reason);
}

}  // namespace splicegate
