// HttpSession (http_session.h): the bytes of one exchange. The request's head and body go up and
// the response comes back, copied or spliced, framed by the parsers; the exchange's end decides
// whether the upstream goes back to the pool and whether the client may send another request.
#include "http_session.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "connection.h"  // resetOnClose
#include "socket_peek.h"

namespace splicegate {

namespace {

constexpr size_t kReadChunk = 16384;
// A client (or upstream) that sends faster than the other side reads is held back at this much.
constexpr size_t kMaxPending = 256 * 1024;
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

}  // namespace

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

}  // namespace splicegate
