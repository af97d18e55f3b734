#include "http_session.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "connection.h"  // resetOnClose
#include "http_address.h"
#include "socket_options.h"
#include "proxy_protocol.h"

namespace splicegate {

namespace {

// EPOLLPRI: TCP urgent data. A read stops short at the urgent mark with bytes still queued behind
// it, so after it a short read no longer proves the socket empty (peerClosing: read to EAGAIN). No
// HTTP peer sends it; an upstream connection that did is never pooled (peerClosing, as after a
// FIN), and one in the pool is closed.
constexpr uint32_t kSocketEvents = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;
constexpr size_t kReadChunk = 16384;

// A client (or upstream) that sends faster than the other side reads is held back at this much.
constexpr size_t kMaxPending = 256 * 1024;
// Draining (a reload or shutdown): how long a keep-alive connection idle between requests is kept
// for a next request that may already be on its way (docs/HTTP.md, "Drain").
constexpr uint64_t kDrainIdleUs = 1'000'000;
// After an error response: how long the client gets to read it and close before the socket goes.
constexpr uint64_t kLingerUs = 2'000'000;
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// Bytes the peer sent that nobody read yet sit in the socket (closing it now would reset).
bool unreadBytesWaiting(int fd) {
  uint8_t byte;
  ssize_t n;
  do {
    n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n > 0;  // 0: EOF (nothing unread); -1: nothing now, or an error the close meets anyway
}

const char* statusText(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 508: return "Loop Detected";
    default: return "Error";
  }
}

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

int HttpSession::readInto(Side& side, std::vector<uint8_t>& buf, size_t max) {
  if (buf.size() >= max) return -3;
  const size_t room = std::min(max - buf.size(), kReadChunk);
  const size_t old = buf.size();
  buf.resize(old + room);
  ssize_t n;
  do {
    n = ::recv(side.fd.get(), buf.data() + old, room, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    buf.resize(old + static_cast<size_t>(n));
    countRead(side, static_cast<uint64_t>(n));
    // A short read took everything queued, and anything later raises a new edge, so the read
    // that would only say EAGAIN is skipped (as in the relay). Not when the peer is closing: its
    // FIN may already be queued behind these bytes, and its edge is spent.
    if (static_cast<size_t>(n) < room && !side.peerClosing) side.readable = false;
    return 1;
  }
  buf.resize(old);
  if (n == 0) {
    side.eof = true;
    side.readable = false;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    side.readable = false;
    return -1;
  }
  return -2;
}

bool HttpSession::flush(Side& side, std::vector<uint8_t>& buf, size_t& offset) {
  while (offset < buf.size()) {
    const ssize_t n = ::send(side.fd.get(), buf.data() + offset, buf.size() - offset, MSG_NOSIGNAL);
    if (n > 0) {
      offset += static_cast<size_t>(n);
      countWritten(side, static_cast<uint64_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      side.writable = false;
      return true;
    }
    return false;
  }
  buf.clear();
  offset = 0;
  return true;
}

void HttpSession::countRead(const Side& side, uint64_t n) {
  if (side.upstream) {
    ctx_.stats.add(Stat::upstream_cx_rx_bytes_total, n);
    if (host_) host_->stat(HostStat::rx_bytes) += n;
  } else {
    ctx_.stats.add(Stat::bytes_received, n);
  }
}

void HttpSession::countWritten(const Side& side, uint64_t n) {
  budget_ -= std::min<size_t>(budget_, n);
  if (side.upstream) {
    access_.bytesSent += n;
    ctx_.stats.add(Stat::upstream_cx_tx_bytes_total, n);
    if (host_) host_->stat(HostStat::tx_bytes) += n;
  } else {
    access_.bytesReceived += n;
    ctx_.stats.add(Stat::bytes_sent, n);
  }
}

bool HttpSession::spliceWanted(uint64_t remaining) const {
  switch (ctx_.options.relayMode) {
    case CoreOptions::RelayMode::kCopy:
      return false;
    case CoreOptions::RelayMode::kSplice:
      return remaining > 0;
    case CoreOptions::RelayMode::kAuto:
      break;
  }
  // Less than a copy buffer's worth goes in one recv and one send, which is what two splices cost
  // too (the relay's rule: splice once a read would fill a copy buffer). A close-delimited body
  // (kUntilClose) counts as long.
  return remaining >= ctx_.buffers.bufferSize();
}

bool HttpSession::startSplice(std::unique_ptr<Pipe>& pipe) {
  pipe = ctx_.pipes.acquire();
  if (!pipe) ctx_.stats.add(Stat::pipe_unavailable);  // this body is copied instead
  return static_cast<bool>(pipe);
}

HttpSession::SpliceStep HttpSession::spliceBody(Side& src, Side& dst, std::unique_ptr<Pipe>& pipe, uint64_t want,
                                               uint64_t& in) {
  in = 0;
  SpliceStep step = SpliceStep::kIdle;
  // Out first, so the pipe has room for what comes in.
  if (pipe->bytes > 0 && dst.writable) {
    ssize_t n;
    do {
      n = ::splice(pipe->readEnd.get(), nullptr, dst.fd.get(), nullptr, pipe->bytes, kSpliceFlags);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      pipe->bytes -= static_cast<size_t>(n);
      countWritten(dst, static_cast<uint64_t>(n));
      step = SpliceStep::kProgress;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      dst.writable = false;
    } else {
      return SpliceStep::kDstError;
    }
  }
  const size_t capacity = ctx_.pipes.capacityBytes();
  if (want > 0 && src.readable && !src.eof && pipe->bytes < capacity) {
    // Exactly the body's rest at most: what follows it in the socket (the next request, or a
    // response nobody asked for) stays there for the parser.
    const size_t len = static_cast<size_t>(std::min<uint64_t>(want, capacity - pipe->bytes));
    ssize_t n;
    do {
      n = ::splice(src.fd.get(), nullptr, pipe->writeEnd.get(), nullptr, len, kSpliceFlags);
    } while (n < 0 && errno == EINTR);
    // Stopped at an urgent mark? (relay.h; the same check as the relay's, within the body's rest)
    if (n < 0 && errno == EAGAIN && pipe->bytes == 0 && src.peerClosing) {
      n = copyPastUrgentMark(src.fd.get(), *pipe, len);
    }
    if (n > 0) {
      pipe->bytes += static_cast<size_t>(n);
      in = static_cast<uint64_t>(n);
      countRead(src, in);
      ctx_.stats.add(Stat::http_body_bytes_spliced, in);
      step = SpliceStep::kProgress;
    } else if (n == 0) {
      src.eof = true;
      src.readable = false;
      return SpliceStep::kSrcEof;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // With bytes in the pipe EAGAIN may mean "pipe full" (its slots, not its bytes) rather than
      // "socket empty": keep src readable and read again once the pipe drained (as the relay does).
      if (pipe->bytes == 0) src.readable = false;
    } else {
      return SpliceStep::kSrcError;
    }
  }
  // Held only while bytes are in flight: an empty pipe goes back once the body is all read or
  // the source has nothing now (the next readable edge lends one again).
  if (pipe->bytes == 0 && (want == in || !src.readable)) ctx_.pipes.release(std::move(pipe));
  return step;
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
  if (opened == UpstreamOpen::kSocketFailed && isOutOfFds(errno) && owner_.releaseSpareFd()) {
    // As on an original_dst listener: the worker's spare fd serves the client already accepted,
    // and accepting pauses until fds free up.
    opened = openUpstream(destination_, ctx_.options.upstreamMark, up_.fd, &upRegistration_);
  }
  state_ = State::kConnecting;  // connect_timeout runs from here, for a wait for an fd too
  if (opened == UpstreamOpen::kSocketFailed && isOutOfFds(errno)) {
    // Still none: another worker of the process took the fd the spare freed (they share one fd
    // table). The request was accepted and must not fail for that: it waits, as a relayed
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

bool HttpSession::pumpExchange() {
  budget_ = ctx_.options.relayBudgetBytes;
  bool progress = true;
  while (progress && state_ == State::kExchange) {
    progress = false;
    // The request body. What came with the head (in_) goes through the parser, which frames it
    // (what belongs to this request goes up; the rest, a pipelined request, stays in in_); once
    // that and the head are out, the rest of a Content-Length body is spliced.
    const bool spliceRequest =
        !requestDone_ && !upWriteFailed_ && !copyRequestBody_ && spliceWanted(request_.bodyRemaining());
    if (spliceRequest && !upPipe_ && in_.empty() && toUp_.empty() && down_.readable && !startSplice(upPipe_)) {
      copyRequestBody_ = true;  // no pipe free: this body is copied
    }
    if (upPipe_) {
      uint64_t in = 0;
      switch (spliceBody(down_, up_, upPipe_, requestDone_ ? 0 : request_.bodyRemaining(), in)) {
        case SpliceStep::kIdle:
          break;
        case SpliceStep::kProgress:
          progress = true;
          break;
        case SpliceStep::kSrcEof:
        case SpliceStep::kSrcError:
          // The client went away in the middle of its body: the upstream must not take the part
          // it got for a whole request.
          releaseUpstream(false);
          close(CloseReason::kDownstreamError);
          return true;
        case SpliceStep::kDstError:
          requestWriteFailed();
          progress = true;
          break;
      }
      if (in > 0) request_.bodyMoved(in);
      if (!requestDone_ && request_.bodyRemaining() == 0) {
        requestDone_ = true;
        progress = true;
      }
    } else if (!requestDone_ && !upWriteFailed_ && toUp_.size() - toUpOffset_ < kMaxPending) {
      const http::Progress p = in_.empty() ? request_.body(nullptr, 0) : request_.body(in_.data(), in_.size());
      if (p.error) {
        releaseUpstream(false);
        respondError(400, "malformed", Stat::http_rq_malformed);
        return true;
      }
      if (p.consumed > 0) {
        toUp_.insert(toUp_.end(), in_.begin(), in_.begin() + static_cast<long>(p.consumed));
        in_.erase(in_.begin(), in_.begin() + static_cast<long>(p.consumed));
        ctx_.stats.add(Stat::http_body_bytes_copied, p.body);
        progress = true;
      }
      if (p.complete) {
        requestDone_ = true;
        progress = true;
      }
      // More of the body from the client, unless its rest goes by splice once toUp_ is out.
      if (!requestDone_ && in_.empty() && down_.readable && (copyRequestBody_ || !spliceRequest)) {
        const int r = readInto(down_, in_, kReadChunk);
        if (r == 1) {
          progress = true;
        } else if (r == 0 || r == -2) {
          // The client went away in the middle of its request: the upstream must not take the
          // part it got for a whole one.
          releaseUpstream(false);
          close(CloseReason::kDownstreamError);
          return true;
        }
      }
    }
    if (!upWriteFailed_ && toUpOffset_ < toUp_.size() && up_.writable) {
      const size_t before = toUpOffset_ + toUp_.size();
      if (!flush(up_, toUp_, toUpOffset_)) {
        requestWriteFailed();
        progress = true;
      }
      if (toUpOffset_ + toUp_.size() != before) progress = true;
    }
    // The response: its head (and the body bytes read with it) through toDown_ and the parser,
    // read only while the client keeps up (nothing left unsent to it); then the rest of a
    // Content-Length or close-delimited body by splice.
    if (!responseDone_ && !downPipe_ && !copyResponseBody_ && toDown_.empty() && up_.readable &&
        spliceWanted(response_.bodyRemaining()) && !startSplice(downPipe_)) {
      copyResponseBody_ = true;  // no pipe free: this body is copied
    }
    if (downPipe_) {
      uint64_t in = 0;
      switch (spliceBody(up_, down_, downPipe_, responseDone_ ? 0 : response_.bodyRemaining(), in)) {
        case SpliceStep::kIdle:
          break;
        case SpliceStep::kProgress:
          progress = true;
          break;
        case SpliceStep::kSrcEof: {
          const http::Progress p = response_.finish();
          if (!p.complete || upWriteFailed_) {  // cut short: the client is reset (a response byte went out)
            upstreamFailed();
            return true;
          }
          // A response delimited by the upstream's close: the client reads to our close too.
          responseDone_ = true;
          upstreamDirty_ = true;
          closeClientAfter_ = true;
          progress = true;
          break;
        }
        case SpliceStep::kSrcError:
          upstreamFailed();
          return true;
        case SpliceStep::kDstError:
          releaseUpstream(false);
          close(CloseReason::kDownstreamError);
          return true;
      }
      if (in > 0) response_.bodyMoved(in);
      if (!responseDone_ && response_.complete()) {
        responseDone_ = true;
        progress = true;
      }
    } else if (!responseDone_ && toDown_.empty() && up_.readable) {
      const int r = readInto(up_, toDown_, kReadChunk);
      if (r == 1) {
        progress = true;
        if (!firstByteSeen_) {
          firstByteSeen_ = true;
          rqFirstByteUs_ = EventLoop::monotonicUs();
          if (ctx_.options.recordLatency) {
            ctx_.latency.record(latencyRef_, LatencyMetric::kTtfb, EventLoop::monotonicUs() - sentUs_);
          }
        }
        const bool headBefore = response_.headSeen();
        const http::Progress p = response_.feed(toDown_.data(), toDown_.size());
        if (p.error) {
          toDown_.clear();
          upstreamFailed();
          return true;
        }
        ctx_.stats.add(Stat::http_body_bytes_copied, p.body);
        if (p.complete) {
          responseDone_ = true;
          // Bytes after the response: a 101's are the new protocol's (the tunnel's); anyone
          // else's are a response nobody asked for, so the connection is not reused.
          if (!response_.upgraded() && p.consumed < toDown_.size()) {
            toDown_.resize(p.consumed);
            upstreamDirty_ = true;
          }
        }
        if (!headBefore && response_.headSeen()) announceCloseIfDraining(p.consumed - p.body);
        if (!toDown_.empty()) responseStarted_ = true;
      } else if (r == 0) {
        const http::Progress p = response_.finish();
        if (!p.complete || upWriteFailed_) {
          upstreamFailed();
          return true;
        }
        // A response delimited by the upstream's close: the client reads to our close too.
        responseDone_ = true;
        responseStarted_ = true;
        upstreamDirty_ = true;
        closeClientAfter_ = true;
        progress = true;
      } else if (r == -2) {
        upstreamFailed();
        return true;
      }
    }
    if (toDownOffset_ < toDown_.size() && down_.writable) {
      const size_t before = toDownOffset_ + toDown_.size();
      if (!flush(down_, toDown_, toDownOffset_)) {
        releaseUpstream(false);
        close(CloseReason::kDownstreamError);
        return true;
      }
      if (toDownOffset_ + toDown_.size() != before) progress = true;
    }
    if (responseDone_ && toDownOffset_ >= toDown_.size() && !downPipe_ && !response_.upgraded()) {
      finishExchange();
      return true;
    }
    if (responseDone_ && response_.upgraded()) {
      enterTunnel();
      return true;
    }
    if (progress && budget_ == 0) {
      // Fairness, as for relayed connections: the rest after the other connections of this batch.
      owner_.scheduleResume(*this);
      return false;
    }
  }
  return false;
}

void HttpSession::requestWriteFailed() {
  // The upstream cannot take the request's rest (its reset, usually: a server that answered early
  // and closed without reading the body). Its answer may already be waiting in the socket, ahead
  // of the reset (a recv returns queued bytes before the error): the response side reads on, and
  // a response that completes goes to the client whole, the client's unsent body then dropped by
  // the linger as when the server closes cleanly. Nothing more goes up; the end of what can be
  // read (EOF: send() has consumed the reset) is an error, never a close-delimited response's end.
  upWriteFailed_ = true;
  toUp_.clear();
  toUpOffset_ = 0;
  if (upPipe_) ctx_.pipes.release(std::move(upPipe_));  // holding bytes: destroyed, never reused
  up_.readable = true;
}

void HttpSession::upstreamFailed() {
  if (!responseStarted_ && reused_ && !retried_ && !sentHead_.empty()) {
    // A pooled connection the server closed between our liveness check and the request: the
    // request (idempotent, no body, nothing of a response seen) goes once more, on a new one.
    releaseUpstream(false);
    retried_ = true;
    ctx_.stats.add(Stat::upstream_rq_retry);
    toUp_ = sentHead_;
    toUpOffset_ = 0;
    response_.start(headRequest_, upgradeRequested_);
    requestDone_ = true;
    connectUpstream();
    return;
  }
  releaseUpstream(false);
  if (responseStarted_) {
    ctx_.stats.add(Stat::http_rq_upstream_error);
    close(CloseReason::kUpstreamError);  // part of a response went out: reset, never a fake end
    return;
  }
  respondError(502, "upstream_reset", Stat::http_rq_upstream_error);
}

void HttpSession::finishExchange() {
  closeRequestLog(CloseReason::kCompleted);
  // keepClient_: the request itself allowed another one. Its Connection header went up as the
  // client wrote it, so a server told "close" (or sent HTTP/1.0 without keep-alive) closes after
  // this response (RFC 9112 9.6) whether or not its response says so; pooled, the connection
  // would take another client's request into that close.
  // upWriteFailed_: a write met the server's reset (requestWriteFailed emptied toUp_ and dropped
  // upPipe_, so the checks after it no longer see the unsent rest): the socket is dead.
  bool reusable = response_.keepAlive() && keepClient_ && !upstreamDirty_ && !upWriteFailed_ && requestDone_ &&
                  toUpOffset_ >= toUp_.size() && !upPipe_ && !up_.eof && !up_.peerClosing;
  if (reusable && up_.readable && !idleConnectionUsable(up_.fd.get())) {
    // The last read did not prove the socket empty (a splice of exactly the body's rest, a read
    // that filled the buffer), so bytes may wait behind the response with their edge already
    // spent: the pool would never hear of them, and they would answer the next request.
    reusable = false;
    ctx_.stats.add(Stat::http_pool_discarded);
  }
  // To the shared pool, for whichever client next asks for this destination (no system call: the
  // socket stays registered, its link now sends its events to the pool). Keeping it with this
  // client instead let idle clients hold connections that max_connections counts
  // (bench/results/attempts.md, 13).
  releaseUpstream(reusable);
  // A client that half-closed (its FIN read, or on its way) sends no more requests, but those it
  // sent before (pipelined, in in_ or in the socket) are answered: readHead ends the connection
  // with FIN at its EOF, once they are. Only a client already read to EOF with nothing left ends now.
  const bool keepClient = keepClient_ && !closeClientAfter_ && !draining_ && requestDone_ && (!down_.eof || !in_.empty());
  if (!keepClient) {
    if (!down_.eof && (!requestDone_ || unreadBytesWaiting(down_.fd.get()))) {
      // close() with unread bytes in the socket (a request pipelined behind this one, the rest of
      // a body the server did not wait for) makes the kernel reset, and a reset both says
      // "truncated" and discards what of the response is still queued. So: FIN after the
      // response, read and drop until the client's EOF, as after an error answer.
      linger();
      down_.readable = true;  // those bytes may have come with an edge already consumed
      return;
    }
    close(CloseReason::kCompleted);
    return;
  }
  request_.reset();
  state_ = State::kHead;
  requestStartUs_ = ctx_.loop.nowUs();
  ++requests_;
  // A pipelined request may already be in in_: pump() parses it next.
}

void HttpSession::releaseUpstream(bool reusable, bool streamComplete) {
  if (connectPending_ && host_) {
    ctx_.hosts.connectDone(*host_);
    connectPending_ = false;
  }
  const bool open = static_cast<bool>(up_.fd);
  if (open && reusable && host_) {
    UpstreamLink* link = std::exchange(upLink_, nullptr);  // the pool's now, kept or retired
    if (pool_.put(*host_, RegisteredUpstream{std::move(up_.fd), std::move(upRegistration_)}, link, ctx_.loop.nowUs())) {
      host_ = nullptr;  // the pool holds its cx_active now
    } else {
      // The refused connection went with put()'s argument (a plain close: its exchange completed),
      // so the close below does not see it.
      ctx_.stats.add(Stat::http_pool_discarded);
      ctx_.stats.sub(Stat::upstream_cx_active);
    }
  }
  if (up_.fd) {
    // Not reusable after an error: a reset tells the server the request was not completed.
    // The request went out whole only if nothing of it is still held here (requestDone_ says it
    // was all read from the client): a response can complete while the server has not taken the
    // body's rest, which is dropped with this socket, a cut the server must see as a reset.
    const bool requestOut = requestDone_ && toUpOffset_ >= toUp_.size() && !(upPipe_ && upPipe_->bytes > 0);
    if (!reusable && !streamComplete && !(responseDone_ && requestOut)) resetOnClose(up_.fd.get());
    upRegistration_ = OwnSockets::Registration{};  // before the fd: the 4-tuple may be reused after
    up_.fd.reset();  // which also leaves the epoll set
    ctx_.stats.sub(Stat::upstream_cx_active);
  }
  pool_.retire(std::exchange(upLink_, nullptr));  // events still queued for the closed socket go nowhere
  if (host_) {
    ctx_.hosts.connectionClosed(*host_, ctx_.loop.nowUs());
    host_ = nullptr;
  }
  up_.readable = up_.writable = up_.peerClosing = up_.eof = false;
  upWriteFailed_ = false;
  toUp_.clear();
  toUpOffset_ = 0;
  // The exchange's pipes go with its upstream; one still holding bytes is destroyed by the pool.
  if (upPipe_) ctx_.pipes.release(std::move(upPipe_));
  if (downPipe_) ctx_.pipes.release(std::move(downPipe_));
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

void HttpSession::respondError(int status, const char* reason, Stat counter) {
  ctx_.stats.add(counter);
  releaseUpstream(false);
  openRequestLog(AccessRecord::kNoMethod);  // no-op when the head was read (it opened then)
  if (responseStarted_) {
    close(CloseReason::kUpstreamError);  // bytes of a response already went out: no fake end
    return;
  }
  char body[64];
  const int bodyLength = std::snprintf(body, sizeof body, "%s\n", reason);
  char text[384];
  const int n = std::snprintf(text, sizeof text,
                              "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                              "connection: close\r\nx-splicegate-error: %s\r\n\r\n%s",
                              status, statusText(status), bodyLength, reason, body);
  toDown_.assign(text, text + std::min<int>(n, static_cast<int>(sizeof text) - 1));
  toDownOffset_ = 0;
  in_.clear();
  rqStatus_ = static_cast<uint16_t>(status);
  rqError_ = reason;
  // The request ends with this answer: its record says how (close_reason as for a connection
  // that ended the same way; refused ones with the refusal counter's name).
  CloseReason outcome = CloseReason::kRefused;
  switch (counter) {
    case Stat::http_rq_policy_denied:
      rqRefusal_ = Refusal::kPolicyDenied;
      break;
    case Stat::http_rq_overflow:
      rqRefusal_ = Refusal::kUpstreamOverflow;
      break;
    case Stat::http_rq_no_destination:
      rqRefusal_ = Refusal::kNoOriginalDst;
      break;
    case Stat::loop_rejected:
      rqRefusal_ = Refusal::kLoopRejected;
      break;
    case Stat::http_rq_connect_fail:
      outcome = CloseReason::kConnectFailed;
      break;
    case Stat::http_rq_connect_timeout:
      outcome = CloseReason::kConnectTimeout;
      break;
    case Stat::http_rq_upstream_error:
      outcome = CloseReason::kUpstreamError;
      break;
    case Stat::http_rq_head_timeout:
      outcome = CloseReason::kProtocolTimeout;
      break;
    case Stat::http_rq_malformed:
    case Stat::http_rq_head_too_large:
      outcome = CloseReason::kProtocolError;
      break;
    default:
      break;  // connect_disabled: refused, no refusal counter of its own
  }
  access_.bytesReceived += toDown_.size();  // the answer, queued for the client now
  closeRequestLog(outcome);
  access_.bytesReceived = 0;  // not counted again as it is flushed
  linger();
}

void HttpSession::linger() {
  state_ = State::kLingering;
  lingerUntilUs_ = ctx_.loop.nowUs() + kLingerUs;
  down_.writable = true;  // try at once (the caller pumps); EAGAIN says otherwise
}

void HttpSession::announceCloseIfDraining(size_t headEnd) {
  // A draining connection ends after this response. Saying so in its head, as a server does when
  // it stops, keeps a keep-alive client from sending its next request into the FIN that follows
  // (where it would be lost, or reset if it arrived before the close). Only when the head's final
  // CRLF is in this read (nearly always; a head split there goes out as it came).
  if (!draining_ || !response_.keepAlive() || response_.upgraded()) return;
  if (headEnd < 4 || headEnd > toDown_.size() || toDown_[headEnd - 2] != '\r' || toDown_[headEnd - 1] != '\n') return;
  static constexpr char kClose[] = "connection: close\r\n";
  toDown_.insert(toDown_.begin() + static_cast<std::ptrdiff_t>(headEnd - 2), kClose, kClose + sizeof kClose - 1);
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

void HttpSession::openRequestLog(uint8_t method) {
  if (requestOpen_) return;
  requestOpen_ = true;
  if (!logging_) return;
  access_ = connAccess_;
  rqMethod_ = method;
  rqStatus_ = 0;
  rqError_ = nullptr;
  rqRefusal_ = Refusal::kNone;
  rqStartUs_ = EventLoop::monotonicUs();
  rqConnectUs_ = AccessRecord::kNone;
  rqEstablishedUs_ = 0;
  rqFirstByteUs_ = 0;
}

void HttpSession::closeRequestLog(CloseReason reason) {
  if (!requestOpen_) return;
  requestOpen_ = false;
  if (!logging_) return;
  access_.refusal = rqRefusal_;
  AccessRecord* r = owner_.newRequestRecord(access_);
  if (!r) return;
  const uint64_t now = EventLoop::monotonicUs();
  r->reason = reason;
  r->durationUs = now - rqStartUs_;
  r->connectUs = rqConnectUs_;
  if (rqFirstByteUs_ != 0 && rqEstablishedUs_ != 0) r->ttfbUs = rqFirstByteUs_ - rqEstablishedUs_;
  r->method = rqMethod_;
  // What the client was sent: our own answer, the 200 of a CONNECT, or the upstream's status
  // once its response head was parsed.
  r->status = rqStatus_ != 0 ? rqStatus_ : static_cast<uint16_t>(responseStarted_ ? response_.status() : 0);
  if (rqError_) r->setError(rqError_);
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
