// HttpSession (http_session.h): its life from accept to close. The PROXY header, each request's
// head, destination, policy and upstream (pooled or connected), CONNECT and upgrade tunnels, drain
// and timeouts. The bytes of one exchange move in http_session_exchange.cc; the session's own
// answers and the access log's request records are in http_session_answers.cc.
#include "http_session.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "connection.h"  // resetOnClose
#include "http_address.h"
#include "proxy_protocol.h"
#include "socket_options.h"
#include "socket_peek.h"

namespace splicegate {

namespace {

// EPOLLPRI: TCP urgent data. A read stops short at the urgent mark with bytes still queued behind
// it, so after it a short read no longer proves the socket empty (peerClosing: read to EAGAIN). No
// HTTP peer sends it; an upstream connection that did is never pooled (peerClosing, as after a
// FIN), and one in the pool is closed.
constexpr uint32_t kSocketEvents = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;

// Draining (a reload or shutdown): how long a keep-alive connection idle between requests is kept
// for a next request that may already be on its way (docs/HTTP.md, "Drain").
constexpr uint64_t kDrainIdleUs = 1'000'000;

}  // namespace

void HttpSession::Side::onEvents(uint32_t events) { owner->onEvents(*this, events); }

HttpSession::HttpSession(WorkerContext& ctx, HttpPool& pool, HttpSessionOwner& owner, const ListenerOptions& listener,
                         UniqueFd downstream, const SocketAddress& peer, const SocketAddress& originalDst,
                         const AccessInfo* access)
    : ctx_(ctx),
      pool_(pool),
      owner_(owner),
      listener_(listener),
      peer_(peer),
      originalDst_(originalDst),
      request_(listener.http.headerName, listener.http.maxRequestHeadBytes) {
  down_.owner = this;
  down_.fd = std::move(downstream);
  up_.owner = this;
  up_.upstream = true;
  trusted_ = cidrsContain(listener.http.trustedSources, peer);
  proxyPending_ = listener.proxyProtocol.enabled;
  requestStartUs_ = ctx_.loop.nowUs();
  lastActivityUs_ = requestStartUs_;
  originalSource_ = listener.transparent ? DestinationSource::kTproxy : DestinationSource::kSoOriginalDst;
  if (access) {
    logging_ = true;
    connAccess_ = *access;
  }
}

HttpSession::~HttpSession() {
  if (state_ != State::kClosed) close(CloseReason::kDrained);
}

bool HttpSession::start() {
  if (ctx_.loop.add(down_.fd.get(), kSocketEvents, &down_)) {
    close(CloseReason::kResourceExhausted);
    return false;
  }
  return true;
}

void HttpSession::onEvents(Side& side, uint32_t events) {
  if (state_ == State::kClosed) return;
  // Events reach up_ only through the link of the socket it holds (http_pool.h): one for a socket
  // it let go of goes to that socket's new holder, or nowhere. This only guards that rule.
  if (side.upstream && !up_.fd) return;
  if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP | EPOLLPRI)) side.peerClosing = true;
  if (events & EPOLLPRI) keepUrgentDataInline(side.fd.get());
  if (events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) side.readable = true;
  if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) side.writable = true;
  lastActivityUs_ = ctx_.loop.nowUs();
  if (!side.upstream && state_ == State::kConnecting && (events & (EPOLLERR | EPOLLHUP))) {
    // The client is gone (reset) before the upstream answered: the request is abandoned, and must
    // not go up once the connect completes (as on an original_dst listener). A half-close (RDHUP
    // alone) is not an error: the request is complete, and the response still goes back.
    close(CloseReason::kDownstreamError);
    return;
  }
  if (side.upstream && state_ == State::kConnecting) {
    int soError = 0;
    socklen_t len = sizeof soError;
    ::getsockopt(up_.fd.get(), SOL_SOCKET, SO_ERROR, &soError, &len);
    if (soError != 0 || (events & (EPOLLERR | EPOLLHUP))) {
      ctx_.stats.add(Stat::upstream_cx_connect_fail);
      if (host_) ++host_->stat(HostStat::cx_connect_fail);
      releaseUpstream(false);
      respondError(503, "connect_failed", Stat::http_rq_connect_fail);
      pump();
      return;
    }
    // A connecting TCP socket is writable only once the handshake is done (an error was met
    // above). Every event here is this socket's own: it reaches up_ through its link, so none can
    // be left from a socket this one replaced (a retry), which a getpeername once had to rule out.
    if (!(events & EPOLLOUT)) return;
    onConnected();
  }
  pump();
  // A tunnel is a relayed stream: one still open after a socket error's event ends here, with
  // resets (Connection::onSideEvent says why). So does an exchange whose client is gone: its
  // request body may be waiting on an upstream that is not reading, which would otherwise wait in
  // turn for the rest of a body that will never come. (An upstream's error in an exchange is met
  // by the response's reads, which decide between a 502 and a reset.)
  const bool relayed = state_ == State::kTunnel || (state_ == State::kExchange && !side.upstream);
  if ((events & EPOLLERR) && relayed && getIntOption(side.fd.get(), SOL_SOCKET, SO_ERROR) != 0) {
    close(side.upstream ? CloseReason::kUpstreamError : CloseReason::kDownstreamError);
  }
}

void HttpSession::pump() {
  for (;;) {
    const State before = state_;
    switch (state_) {
      case State::kHead:
        readHead();
        break;
      case State::kExchange:
        pumpExchange();
        break;
      case State::kTunnel:
        pumpTunnel();
        return;
      case State::kLingering: {
        if (toDownOffset_ < toDown_.size() && down_.writable && !flush(down_, toDown_, toDownOffset_)) {
          close(CloseReason::kDownstreamError);
          return;
        }
        if (toDownOffset_ < toDown_.size()) return;
        ::shutdown(down_.fd.get(), SHUT_WR);
        if (down_.eof) {  // the client's EOF came earlier: no edge will announce it again
          close(CloseReason::kCompleted);
          return;
        }
        // Read and drop what the client still sends, so closing cannot turn into a reset that
        // destroys the response before it was read; the client's EOF ends the session.
        uint8_t scratch[4096];
        while (down_.readable) {
          const ssize_t n = ::recv(down_.fd.get(), scratch, sizeof scratch, 0);
          if (n > 0) continue;
          if (n == 0) {
            close(CloseReason::kCompleted);
            return;
          }
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) {
            down_.readable = false;
            break;
          }
          close(CloseReason::kDownstreamError);
          return;
        }
        return;
      }
      case State::kConnecting:
      case State::kClosed:
        return;
    }
    if (state_ == before) return;
  }
}

bool HttpSession::readProxyHeader() {
  const proxy_protocol::ParseResult r = proxy_protocol::parse(in_.data(), in_.size());
  if (r.status == proxy_protocol::ParseStatus::need_more) return false;
  proxyPending_ = false;
  const ProxyProtocolOptions& pp = listener_.proxyProtocol;
  if (r.status == proxy_protocol::ParseStatus::error) {
    if (r.error != proxy_protocol::ParseError::not_proxy || pp.required) {
      ctx_.stats.add(Stat::proxy_protocol_error);
      ctx_.stats.add(proxyErrorStat(r.error));
      close(CloseReason::kProtocolError);
      return true;
    }
    ctx_.stats.add(Stat::proxy_protocol_plain);  // plain HTTP where the header is optional
    return false;
  }
  if (!cidrsContain(pp.trustedSources, peer_)) {
    ctx_.stats.add(Stat::proxy_protocol_untrusted);
    close(CloseReason::kProtocolError);
    return true;
  }
  ctx_.stats.add(Stat::proxy_protocol_accepted);
  if (r.header.command == proxy_protocol::Command::proxy && r.header.family != AF_UNSPEC) {
    if (owner_.loopsBack(r.header.destination)) {
      // As on a relaying listener: a header naming one of our own listeners would loop back in.
      ctx_.stats.add(Stat::loop_rejected);
      if (listenerStats) listenerStats->add(ListenerStat::loop_rejected);
      close(CloseReason::kRefused);
      return true;
    }
    // The header names the client (whose routing header may be trusted) and where it connected.
    originalDst_ = r.header.destination;
    originalSource_ = DestinationSource::kProxyProtocol;
    peer_ = r.header.source;
    connAccess_.client.set(peer_);  // the client the header named
    trusted_ = cidrsContain(listener_.http.trustedSources, peer_);
  } else {
    ctx_.stats.add(Stat::proxy_protocol_local);
  }
  in_.erase(in_.begin(), in_.begin() + static_cast<long>(r.header.length));
  return false;
}

bool HttpSession::readHead() {
  const size_t cap = listener_.http.maxRequestHeadBytes;
  for (;;) {
    if (proxyPending_ && !in_.empty() && readProxyHeader()) return true;
    if (!proxyPending_ && !in_.empty()) {
      const http::ParseStatus st = request_.parseHead(in_.data(), in_.size());
      if (st == http::ParseStatus::kDone) {
        startRequest();
        return true;
      }
      if (st == http::ParseStatus::kError) {
        if (request_.error() == http::HeadError::kTooLarge) {
          respondError(431, "head_too_large", Stat::http_rq_head_too_large);
        } else {
          respondError(400, "malformed", Stat::http_rq_malformed);
        }
        return true;
      }
    }
    if (down_.eof) {  // the client half-closed behind requests it had pipelined, all answered now
      endAtClientEof();
      return true;
    }
    if (!down_.readable) return false;
    const int r = readInto(down_, in_, cap);
    if (r == 1) continue;
    if (r == 0) {
      endAtClientEof();
      return true;
    }
    if (r == -2) {
      close(CloseReason::kDownstreamError);
      return true;
    }
    return false;  // EAGAIN (or the cap, which parseHead already answered)
  }
}

void HttpSession::endAtClientEof() {
  // Between requests the client's EOF is the normal end of a keep-alive connection (FIN).
  if (in_.empty()) return close(CloseReason::kCompleted);
  // In the middle of a head the request was abandoned. On a first request nothing went to the
  // client: reset. After a response, its last bytes may still be queued for a client that reads
  // slowly, and a reset would discard them: FIN after them instead (linger: the EOF is read).
  if (requests_ == 0) return close(CloseReason::kDownstreamError);
  in_.clear();
  linger();
}

bool HttpSession::chooseDestination(SocketAddress& out) {
  const http::RequestHead& h = request_.head();
  if (h.hasRoutingHeader) {
    if (!trusted_) {
      ctx_.stats.add(Stat::original_dst_header_untrusted);
    } else {
      const auto* value = reinterpret_cast<const char*>(in_.data() + h.routingValue.offset);
      if (auto a = http::parseHostPort(value, h.routingValue.length)) {
        out = *a;
        access_.source = DestinationSource::kHeader;
        return true;
      }
      ctx_.stats.add(Stat::original_dst_host_invalid);
    }
  }
  if (originalDst_.family() == AF_UNSPEC) return false;
  out = originalDst_;
  access_.source = originalSource_;
  return true;
}

void HttpSession::startRequest() {
  ctx_.stats.add(Stat::http_rq_total);
  const http::RequestHead& h = request_.head();
  openRequestLog(h.method);
  // The previous response on this connection is complete: an error answer to this request is a
  // response of its own, not a cut one.
  responseStarted_ = false;
  SocketAddress dst;
  if (h.isConnect()) {
    if (!listener_.http.connect) {
      respondError(405, "connect_disabled", Stat::http_rq_connect_disabled);
      return;
    }
    // A CONNECT chooses its destination as the routing header does, so the same clients may: an
    // untrusted one could otherwise tunnel anywhere the policy allows, while its header is ignored.
    if (!trusted_) {
      respondError(403, "connect_untrusted", Stat::http_rq_connect_untrusted);
      return;
    }
    auto a = http::parseHostPort(reinterpret_cast<const char*>(in_.data() + h.target.offset), h.target.length);
    if (!a) {
      respondError(400, "bad_connect_target", Stat::http_rq_malformed);
      return;
    }
    dst = *a;
    access_.source = DestinationSource::kConnect;
  } else if (!chooseDestination(dst)) {
    respondError(503, "no_destination", Stat::http_rq_no_destination);
    return;
  }
  if (ctx_.options.upstreamPortOverride != 0) dst.setPort(ctx_.options.upstreamPortOverride);
  if (logging_) access_.destination.set(dst);
  if (owner_.loopsBack(dst)) {
    // A header (or CONNECT target) naming one of our own listeners: each hop would open another
    // connection into splicegate (without end when the header is not stripped).
    if (listenerStats) listenerStats->add(ListenerStat::loop_rejected);
    respondError(508, "loop_rejected", Stat::loop_rejected);
    return;
  }
  if (!owner_.allowDestination(listener_, dst, peer_, access_)) {
    if (listenerStats) listenerStats->add(ListenerStat::policy_denied);
    respondError(403, "policy_denied", Stat::http_rq_policy_denied);
    return;
  }
  destination_ = dst;
  connect_ = h.isConnect();
  headRequest_ = h.isHead();
  upgradeRequested_ = h.upgrade;
  keepClient_ = h.keepAlive;
  const bool hasBody = h.chunked || h.contentLength > 0;
  // The head leaves in_ (stripped of the routing header, unless strip_header is off); a CONNECT
  // head is ours, not the upstream's. What follows it (body, next request, tunnel bytes) stays.
  size_t headLength = h.length;
  if (!connect_) {
    if (listener_.http.stripHeader && h.routingLineCount > 0) {
      for (uint8_t i = 0; i < h.routingLineCount; ++i) headLength -= h.routingLines[i].length;
      in_.resize(http::stripRoutingHeaders(in_.data(), in_.size(), h));
    }
    toUp_.assign(in_.begin(), in_.begin() + static_cast<long>(headLength));
    toUpOffset_ = 0;
    // Kept for one retry on a fresh connection: only an idempotent request whose every byte we
    // still hold (no body) is retried.
    if (h.idempotent() && !hasBody) {
      sentHead_ = toUp_;
    } else {
      sentHead_.clear();
    }
  }
  in_.erase(in_.begin(), in_.begin() + static_cast<long>(headLength));
  requestDone_ = false;
  responseStarted_ = false;
  responseDone_ = false;
  copyRequestBody_ = false;
  copyResponseBody_ = false;
  upstreamDirty_ = false;
  closeClientAfter_ = false;
  reused_ = false;
  retried_ = false;
  firstByteSeen_ = false;
  response_.start(headRequest_, upgradeRequested_);
  if (!connect_) {
    // A request that cannot be retried (a body, or not idempotent) checks its connection before
    // use whatever the pool saw: a server's close may have come after the batch's epoll_wait.
    HttpPool::Taken taken = pool_.take(destination_, up_, /*verify=*/sentHead_.empty());
    if (taken) {
      ctx_.stats.add(Stat::http_pool_hit);
      usePooledUpstream(std::move(taken));
      return;
    }
    ctx_.stats.add(Stat::http_pool_miss);
  }
  connectUpstream();
}

void HttpSession::connectUpstream() {
  Host* host = nullptr;
  switch (ctx_.hosts.admit(destination_, ctx_.loop.nowUs(), &host)) {
    case HostCache::Admit::kOk:
      break;
    case HostCache::Admit::kHostOverflow:
      ctx_.stats.add(Stat::host_overflow);
      ctx_.stats.add(Stat::upstream_cx_overflow);
      respondError(503, "overflow", Stat::http_rq_overflow);
      return;
    case HostCache::Admit::kConnectionOverflow:
    case HostCache::Admit::kPendingOverflow:
      ctx_.stats.add(Stat::upstream_cx_overflow);
      respondError(503, "overflow", Stat::http_rq_overflow);
      return;
  }
  host_ = host;
  connectPending_ = true;
  if (!connect_) ++host->stat(HostStat::pool_miss);
  if (ctx_.options.recordLatency) latencyRef_ = ctx_.latency.attach(host->address);
  ctx_.stats.add(Stat::upstream_cx_total);
  connectStartUs_ = ctx_.loop.nowUs();
  connectStartExactUs_ = EventLoop::monotonicUs();
  UpstreamOpen opened = openUpstream(destination_, ctx_.options.upstreamMark, up_.fd, &upRegistration_);
  while (opened == UpstreamOpen::kSocketFailed && isOutOfFds(errno) && owner_.releaseSpareFd()) {
    // As on an original_dst listener: idle upstreams (this pool's first) give their fds up, or
    // else the worker's spare fd serves the client already accepted and accepting pauses; again
    // while something was freed (another worker may have taken what the pool gave up).
    opened = openUpstream(destination_, ctx_.options.upstreamMark, up_.fd, &upRegistration_);
  }
  state_ = State::kConnecting;  // connect_timeout runs from here, for a wait for an fd too
  if (opened == UpstreamOpen::kSocketFailed && isOutOfFds(errno)) {
    // Still none, spare included: another worker of the process took what was freed (they share
    // one fd table). The request was accepted and must not fail for that: it waits, as a relayed
    // connection does, for a tick to find an fd, within connect_timeout (504 past it).
    ctx_.stats.add(Stat::upstream_cx_fd_wait);
    waitingForFd_ = true;
    owner_.waitForFd(*this);
    return;
  }
  continueConnect(opened);
}

bool HttpSession::retryUpstreamSocket() {
  if (!waitingForFd_) return true;  // it timed out or ended meanwhile: nothing to retry
  const UpstreamOpen opened = openUpstream(destination_, ctx_.options.upstreamMark, up_.fd, &upRegistration_);
  if (opened == UpstreamOpen::kSocketFailed && isOutOfFds(errno)) return false;
  waitingForFd_ = false;
  continueConnect(opened);
  pump();  // an error answer to send, if the socket failed otherwise
  return true;
}

void HttpSession::continueConnect(UpstreamOpen opened) {
  if (up_.fd) ctx_.stats.add(Stat::upstream_cx_active);
  if (opened != UpstreamOpen::kInProgress) {
    ctx_.stats.add(Stat::upstream_cx_connect_fail);
    ++host_->stat(HostStat::cx_connect_fail);
    releaseUpstream(false);
    respondError(503, "connect_failed", Stat::http_rq_connect_fail);
    return;
  }
  upLink_ = pool_.newLink(up_);
  if (ctx_.loop.addTracked(up_.fd.get(), kSocketEvents, upLink_)) {
    releaseUpstream(false);
    respondError(503, "connect_failed", Stat::http_rq_connect_fail);
    return;
  }
}

void HttpSession::onConnected() {
  ctx_.hosts.connectDone(*host_);
  connectPending_ = false;
  rqEstablishedUs_ = EventLoop::monotonicUs();
  rqConnectUs_ = rqEstablishedUs_ - connectStartExactUs_;
  if (ctx_.options.recordLatency) {
    ctx_.latency.record(latencyRef_, LatencyMetric::kConnect, rqEstablishedUs_ - connectStartExactUs_);
  }
  if (connect_) {
    rqStatus_ = 200;
    static const char kEstablished[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    toDown_.assign(kEstablished, kEstablished + sizeof kEstablished - 1);
    toDownOffset_ = 0;
    responseStarted_ = true;
    enterTunnel();
    return;
  }
  beginExchange();
}

void HttpSession::usePooledUpstream(HttpPool::Taken taken) {
  up_.fd = std::move(taken.upstream.fd);
  upRegistration_ = std::move(taken.upstream.registration);
  upLink_ = taken.link;
  Host& host = *taken.host;
  host_ = &host;
  // Nothing to read until an event says so: it entered the pool drained (its last read came up
  // short, or finishExchange checked), and stayed registered while idle, so every byte since made
  // an edge, which the pool handled (closing it), or which is still in this batch (take() checked
  // the socket then), or which comes here next batch.
  up_.readable = false;
  reused_ = true;
  up_.writable = true;  // idle, its last request out whole; EAGAIN says otherwise
  rqConnectUs_ = 0;     // no connect for this request
  ctx_.stats.add(Stat::upstream_cx_reuse);
  ++host.stat(HostStat::cx_reuse);
  if (ctx_.options.recordLatency) latencyRef_ = ctx_.latency.attach(host.address);
  beginExchange();
}

void HttpSession::beginExchange() {
  state_ = State::kExchange;
  ctx_.stats.add(Stat::upstream_rq_total);
  ++host_->stat(HostStat::rq_total);
  sentUs_ = EventLoop::monotonicUs();
  if (rqEstablishedUs_ == 0) rqEstablishedUs_ = sentUs_;
  // The caller's pump() (or onEvents) moves the bytes: the state changed under it.
}

void HttpSession::enterTunnel() {
  state_ = State::kTunnel;
  ctx_.stats.add(Stat::http_tunnel_total);
  // The client's bytes that followed its request go up first, ahead of the relay.
  toUp_.insert(toUp_.end(), in_.begin(), in_.end());
  in_.clear();
  relay_ = std::make_unique<Relay>();
  pumpTunnel();
}

void HttpSession::pumpTunnel() {
  if (toDownOffset_ < toDown_.size() && down_.writable && !flush(down_, toDown_, toDownOffset_)) {
    close(CloseReason::kDownstreamError);
    return;
  }
  // A request body the 101 overtook: what the pipe still holds goes up first (the relay knows
  // nothing of this pipe; dropping it would lose those bytes silently), then toUp_, then the relay.
  if (upPipe_ && up_.writable) {
    uint64_t in = 0;
    if (spliceBody(down_, up_, upPipe_, 0, in) == SpliceStep::kDstError) {
      close(CloseReason::kUpstreamError);
      return;
    }
  }
  if (!upPipe_ && toUpOffset_ < toUp_.size() && up_.writable && !flush(up_, toUp_, toUpOffset_)) {
    close(CloseReason::kUpstreamError);
    return;
  }
  // Our own bytes for the client (the 200, what followed a 101) go before anything relayed.
  if (toDownOffset_ < toDown_.size()) return;
  const bool holdUp = upPipe_ || toUpOffset_ < toUp_.size();
  switch (relay_->run(relayIo(), ctx_.options.relayBudgetBytes, holdUp)) {
    case Relay::Result::kIdle:
      return;
    case Relay::Result::kYield:
      owner_.scheduleResume(*this);  // after the other connections of this batch
      return;
    case Relay::Result::kDone:
      close(CloseReason::kCompleted);
      return;
    case Relay::Result::kError:
      close(relay_->failedUpstream() ? CloseReason::kUpstreamError : CloseReason::kDownstreamError);
      return;
  }
}

void HttpSession::resume() {
  if (state_ == State::kTunnel) {
    pumpTunnel();
  } else if (state_ == State::kExchange) {
    pump();
  }
}

void HttpSession::holderAvailable() {
  if (state_ != State::kTunnel || !relay_) return;
  relay_->holderAvailable(relayIo());
  pumpTunnel();
}

void HttpSession::relayReceived(bool toUpstream, uint64_t n) {
  if (host_ && !toUpstream) host_->stat(HostStat::rx_bytes) += n;
}

void HttpSession::relayDelivered(bool toUpstream, uint64_t n) {
  lastActivityUs_ = ctx_.loop.nowUs();
  // Host bytes as countRead / countWritten count them: tx when written, rx when read.
  if (host_ && toUpstream) host_->stat(HostStat::tx_bytes) += n;
  if (toUpstream) {
    access_.bytesSent += n;
  } else {
    access_.bytesReceived += n;
    if (rqFirstByteUs_ == 0) rqFirstByteUs_ = EventLoop::monotonicUs();
  }
}

void HttpSession::drain() {
  draining_ = true;
  endIfIdleWhileDraining(ctx_.loop.nowUs());
}

bool HttpSession::endIfIdleWhileDraining(uint64_t nowUs) {
  // Idle between requests for kDrainIdleUs, nothing of a next one here or in the socket: a FIN is
  // the ordinary end of a keep-alive connection, where holding it to drain_timeout would end it
  // with a reset. Not at once: a busy client's next request is usually on its way already (it
  // sends it as soon as it has read a response), and would meet the FIN; within the grace it is
  // answered, with connection: close. The same for a connection that has sent nothing since its
  // accept: no request to cut, and its first may be on its way as well.
  if (!draining_ || state_ != State::kHead || !in_.empty()) return false;
  if (requestStartUs_ + kDrainIdleUs > nowUs || unreadBytesWaiting(down_.fd.get())) return false;
  close(CloseReason::kCompleted);
  return true;
}

void HttpSession::onTick(uint64_t nowUs) {
  expire(nowUs);
  pump();  // an error response (or nothing) to send
}

void HttpSession::expire(uint64_t nowUs) {
  switch (state_) {
    case State::kHead: {
      if (endIfIdleWhileDraining(nowUs)) return;
      if (proxyPending_) {
        // The PROXY header's own deadline (from the accept), as on an original_dst listener: a
        // header that did not arrive is reset, not answered in HTTP to a peer that was sending
        // (or owed) a header.
        const uint64_t headerUs = static_cast<uint64_t>(listener_.proxyProtocol.timeoutMs) * 1000;
        if (requestStartUs_ + headerUs > nowUs) return;
        ctx_.stats.add(Stat::proxy_protocol_timeout);
        close(CloseReason::kProtocolTimeout);
        return;
      }
      const uint64_t timeoutUs = static_cast<uint64_t>(listener_.http.requestHeadTimeoutMs) * 1000;
      if (requestStartUs_ + timeoutUs > nowUs) return;
      // An idle keep-alive connection with nothing of a next request just ends; a started (or
      // never started first) request is answered.
      if (requests_ > 0 && in_.empty()) {
        if (unreadBytesWaiting(down_.fd.get())) {
          // Its next request is in the socket already (its event later in this batch, or in the
          // next): closing now would reset the connection and lose it. It is read (pump() follows)
          // and timed from now.
          requestStartUs_ = nowUs;
          down_.readable = true;
          return;
        }
        close(CloseReason::kCompleted);
      } else {
        respondError(408, "head_timeout", Stat::http_rq_head_timeout);
      }
      return;
    }
    case State::kConnecting: {
      const uint64_t timeoutUs = static_cast<uint64_t>(ctx_.options.connectTimeoutMs) * 1000;
      if (connectStartUs_ + timeoutUs > nowUs) return;
      ctx_.stats.add(Stat::upstream_cx_connect_timeout);
      if (host_) ++host_->stat(HostStat::cx_connect_timeout);
      waitingForFd_ = false;  // the worker's list lets it go at its next retry
      releaseUpstream(false);
      respondError(504, "connect_timeout", Stat::http_rq_connect_timeout);
      return;
    }
    case State::kExchange:
    case State::kTunnel: {
      const uint64_t idleUs = static_cast<uint64_t>(ctx_.options.idleTimeoutMs) * 1000;
      if (lastActivityUs_ + idleUs <= nowUs) close(CloseReason::kIdleTimeout);
      return;
    }
    case State::kLingering:
      if (lingerUntilUs_ <= nowUs) close(CloseReason::kCompleted);
      return;
    case State::kClosed:
      return;
  }
}

void HttpSession::close(CloseReason reason) {
  if (state_ == State::kClosed) return;
  closeRequestLog(reason);
  const bool reset = reason != CloseReason::kCompleted;
  if (relay_) relay_->releaseHolders(ctx_.relayServices());
  if (down_.fd) {
    if (reset) resetOnClose(down_.fd.get());
    ctx_.loop.remove(down_.fd.get());
    down_.fd.reset();
  }
  if (up_.fd && reset) resetOnClose(up_.fd.get());
  // Closing with the upstream still held and no reset is a tunnel whose directions both ended
  // (Relay kDone): this close sends its last FIN (relay.h), which must not become a reset that
  // tells the server its client's stream was cut and drops its last bytes.
  releaseUpstream(false, /*streamComplete=*/!reset);
  state_ = State::kClosed;
  ctx_.stats.add(closeStat(reason));
  owner_.sessionClosed(*this);
}

}  // namespace splicegate
