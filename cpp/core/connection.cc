#include "connection.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "upstream_socket.h"
#include "worker_core.h"

namespace splicegate {

namespace {

constexpr uint32_t kSocketEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
constexpr uint8_t kSmallSplicesBeforeCopy = 4;

}  // namespace

void resetOnClose(int fd) {
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

Connection::Connection(WorkerCore& core, UniqueFd downstream, Host& host) : core_(core), host_(host) {
  down_.owner = this;
  down_.fd = std::move(downstream);
  up_.owner = this;
  up_.upstream = true;
  toUpstream_.src = &down_;
  toUpstream_.dst = &up_;
  toUpstream_.readStat = Stat::bytes_received;
  toUpstream_.writeStat = Stat::upstream_cx_tx_bytes_total;
  toUpstream_.hostStat = HostStat::tx_bytes;
  toDownstream_.src = &up_;
  toDownstream_.dst = &down_;
  toDownstream_.readStat = Stat::upstream_cx_rx_bytes_total;
  toDownstream_.writeStat = Stat::bytes_sent;
  toDownstream_.hostStat = HostStat::rx_bytes;
  lastActivityUs_ = core.loop().nowUs();
  acceptedUs_ = EventLoop::monotonicUs();  // exact, not the batch's cached time: it feeds proxy_overhead
  recordLatency_ = core.options().recordLatency;
  if (recordLatency_) latencyRef_ = core.latency().attach(host.address);
}

void Connection::recordConnectStart() {
  connectStartedUs_ = EventLoop::monotonicUs();
  if (recordLatency_) core_.latency().record(latencyRef_, LatencyMetric::kProxyOverhead, connectStartedUs_ - acceptedUs_);
}

void Connection::recordFirstByte() {
  firstByteSeen_ = true;
  if (recordLatency_) core_.latency().record(latencyRef_, LatencyMetric::kTtfb, EventLoop::monotonicUs() - establishedUs_);
}

Connection::~Connection() = default;

void Connection::start() {
  EventLoop& loop = core_.loop();
  Stats& stats = core_.stats();
  if (loop.add(down_.fd.get(), kSocketEvents, &down_)) {
    close(CloseReason::kResourceExhausted);
    return;
  }
  stats.add(Stat::upstream_cx_total);
  recordConnectStart();
  UpstreamOpen opened = openUpstream(host_.address, core_.options().upstreamMark, up_.fd, &upRegistration_);
  if (opened == UpstreamOpen::kSocketFailed && (errno == EMFILE || errno == ENFILE) && core_.releaseSpareFd()) {
    // Out of fds with this client already accepted: the worker's spare fd serves it, and accepting
    // pauses until fds free up, so the backlog waits instead of draining into resets.
    opened = openUpstream(host_.address, core_.options().upstreamMark, up_.fd, &upRegistration_);
  }
  if (up_.fd) stats.add(Stat::upstream_cx_active);
  if (opened != UpstreamOpen::kInProgress) {
    stats.add(Stat::upstream_cx_connect_fail);
    if (opened == UpstreamOpen::kConnectFailed) ++host_.stat(HostStat::cx_connect_fail);
    close(opened == UpstreamOpen::kSocketFailed ? CloseReason::kResourceExhausted : CloseReason::kConnectFailed);
    return;
  }
  const int fd = up_.fd.get();
  // Even an immediate success is finished by the first EPOLLOUT, so there is one path to relaying.
  if (loop.add(fd, kSocketEvents, &up_)) {
    close(CloseReason::kResourceExhausted);
    return;
  }
  core_.connectStarted(*this);
}

void Connection::startWithUpstream(RegisteredUpstream warm) {
  EventLoop& loop = core_.loop();
  // Already connected and already counted (upstream_cx_total/active) by the preconnect pool. Owned
  // by this connection before anything can fail, so close() uncounts it on every path.
  up_.fd = std::move(warm.fd);
  upRegistration_ = std::move(warm.registration);
  if (loop.add(down_.fd.get(), kSocketEvents, &down_)) {
    close(CloseReason::kResourceExhausted);
    return;
  }
  // It is registered in epoll under the pool's handler: re-point the registration at this side.
  if (loop.modify(up_.fd.get(), kSocketEvents, &up_)) {
    close(CloseReason::kResourceExhausted);
    return;
  }
  up_.writable = true;
  // A warm socket skips the handshake: proxy_overhead is recorded, connect is not (none happened).
  recordConnectStart();
  establishedUs_ = connectStartedUs_;
  finishConnectAttempt();
  core_.connectFinished(*this);
  state_ = ConnectionState::kRelaying;
  relay();
}

void Connection::Side::onEvents(uint32_t events) {
  if (owner->state_ == ConnectionState::kClosed) return;  // stale event in this batch
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) writable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) peerClosing = true;
  owner->onSideEvent(*this, events);
}

void Connection::onSideEvent(Side& side, uint32_t events) {
  if (state_ == ConnectionState::kConnecting) {
    if (side.upstream) {
      onConnectReady(events);
    } else if (events & (EPOLLERR | EPOLLHUP)) {
      // The client is gone before the upstream answered. A half-close (RDHUP alone) is not an
      // error: it is kept and passed on once connected.
      core_.stats().add(Stat::downstream_cx_destroy_remote);
      close(CloseReason::kDownstreamError);
    }
    return;
  }
  relay();
}

void Connection::onConnectReady(uint32_t events) {
  if (events & (EPOLLERR | EPOLLHUP)) {
    core_.stats().add(Stat::upstream_cx_connect_fail);
    ++host_.stat(HostStat::cx_connect_fail);
    close(CloseReason::kConnectFailed);
    return;
  }
  if (!(events & EPOLLOUT)) return;
  finishConnectAttempt();
  establishedUs_ = EventLoop::monotonicUs();
  if (recordLatency_) core_.latency().record(latencyRef_, LatencyMetric::kConnect, establishedUs_ - connectStartedUs_);
  core_.connectFinished(*this);
  state_ = ConnectionState::kRelaying;
  relay();
}

void Connection::finishConnectAttempt() {
  if (!connectPending_) return;
  connectPending_ = false;
  core_.hosts().connectDone(host_);
}

void Connection::resume() {
  if (state_ == ConnectionState::kRelaying) relay();
}

void Connection::holderAvailable() {
  // pump() cleared `readable` when fill() found no holder (it cannot tell that EAGAIN from an
  // empty socket); the bytes are still queued and no new edge will come for them, so restore it.
  for (Direction* d : {&toUpstream_, &toDownstream_}) {
    if (!d->waitingForHolder) continue;
    d->waitingForHolder = false;
    d->src->readable = true;
  }
  core_.scheduleResume(*this);
}

void Connection::relay() {
  size_t budget = core_.options().relayBudgetBytes;
  const PumpResult up = pump(toUpstream_, budget);
  if (up == PumpResult::kError) return abortWith(pumpFailedSide_ == &down_ ? CloseReason::kDownstreamError
                                                                           : CloseReason::kUpstreamError,
                                                  *pumpFailedSide_);
  const PumpResult down = pump(toDownstream_, budget);
  if (down == PumpResult::kError) return abortWith(pumpFailedSide_ == &down_ ? CloseReason::kDownstreamError
                                                                             : CloseReason::kUpstreamError,
                                                    *pumpFailedSide_);
  lastActivityUs_ = core_.loop().nowUs();
  if (toUpstream_.done() && toDownstream_.done()) return close(CloseReason::kCompleted);
  if (up == PumpResult::kYield || down == PumpResult::kYield) core_.scheduleResume(*this);
}

Connection::PumpResult Connection::pump(Direction& d, size_t& budget) {
  for (;;) {
    bool progressed = false;
    if (d.pending() > 0 && d.dst->writable) {
      const ssize_t n = flush(d);
      if (n > 0) {
        progressed = true;
        d.bytes += static_cast<uint64_t>(n);
        core_.stats().add(d.writeStat, static_cast<uint64_t>(n));
        host_.stat(d.hostStat) += static_cast<uint64_t>(n);
        if (!firstByteSeen_ && &d == &toDownstream_) recordFirstByte();
        budget -= std::min(budget, static_cast<size_t>(n));
      } else if (errno == EAGAIN) {
        d.dst->writable = false;
      } else {
        pumpFailedSide_ = d.dst;
        return PumpResult::kError;
      }
    }
    if (d.pending() == 0) {
      releaseHolders(d);
      if (d.srcEof) {
        if (!d.dstShut) {
          // Half-close: the source finished and everything it sent is delivered, so pass the FIN
          // on; the other direction keeps flowing until it finishes too.
          ::shutdown(d.dst->fd.get(), SHUT_WR);
          d.dstShut = true;
        }
        return PumpResult::kIdle;
      }
    }
    if (!d.srcEof && d.src->readable) {
      const ssize_t n = fill(d);
      if (n > 0) {
        progressed = true;
        core_.stats().add(d.readStat, static_cast<uint64_t>(n));
      } else if (n == 0) {
        d.srcEof = true;
        progressed = true;
      } else if (errno == EAGAIN) {
        // With bytes still in the pipe, EAGAIN may mean "pipe full" rather than "socket empty":
        // keep the socket marked readable and read again once the pipe has drained.
        if (d.pending() == 0) {
          d.src->readable = false;
          releaseHolders(d);
        }
      } else {
        pumpFailedSide_ = d.src;
        return PumpResult::kError;
      }
    }
    if (!progressed) return PumpResult::kIdle;
    if (budget == 0) return PumpResult::kYield;
  }
}

ssize_t Connection::fill(Direction& d) {
  if (!d.pipe && !d.buffer) {
    const CoreOptions::RelayMode mode = core_.options().relayMode;
    const bool useSplice = mode == CoreOptions::RelayMode::kSplice ||
                           (mode == CoreOptions::RelayMode::kAuto && d.bulk);
    if (useSplice) {
      d.pipe = core_.pipes().acquire();
      if (!d.pipe) core_.stats().add(Stat::pipe_unavailable);
    }
    if (!d.pipe) d.buffer = core_.buffers().acquire();
    // Copy buffers all out: in auto mode a free pipe carries small reads just as well.
    if (!d.pipe && !d.buffer && mode == CoreOptions::RelayMode::kAuto && !useSplice) d.pipe = core_.pipes().acquire();
    if (!d.pipe && !d.buffer) {
      // Back-pressure: leave the bytes in the socket and wait, in FIFO order, for a holder to come
      // back (WorkerCore wakes waiters after the batch in which one was released).
      core_.stats().add(Stat::buffer_unavailable);
      d.waitingForHolder = true;
      core_.waitForHolder(*this);
      errno = EAGAIN;
      return -1;
    }
    d.waitingForHolder = false;
  }
  const int src = d.src->fd.get();
  ssize_t n;
  if (d.pipe) {
    const size_t capacity = core_.pipes().capacityBytes();
    if (d.pipe->bytes >= capacity) {
      errno = EAGAIN;
      return -1;
    }
    do {
      n = ::splice(src, nullptr, d.pipe->writeEnd.get(), nullptr, capacity - d.pipe->bytes, kSpliceFlags);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      d.pipe->bytes += static_cast<size_t>(n);
      core_.stats().add(Stat::splice_bytes, static_cast<uint64_t>(n));
      // Small reads do better copied (one syscall each way, no pipe): drop back to the buffer
      // path once the pipe drains, but only after several in a row — a bulk stream that the
      // proxy keeps up with also sees an occasional small read, and flipping to copying then
      // costs a user-space copy for every byte until a read fills the buffer again.
      if (static_cast<size_t>(n) < core_.buffers().bufferSize() / 2) {
        if (++d.smallSplices >= kSmallSplicesBeforeCopy) d.bulk = false;
      } else {
        d.smallSplices = 0;
      }
    }
    return n;
  }
  Buffer& buf = *d.buffer;
  if (buf.length > 0) {  // the copy buffer is single-shot: read again only once it is sent
    errno = EAGAIN;
    return -1;
  }
  const size_t size = core_.buffers().bufferSize();
  do {
    n = ::recv(src, buf.data.get(), size, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    buf.offset = 0;
    buf.length = static_cast<size_t>(n);
    core_.stats().add(Stat::copy_bytes, static_cast<uint64_t>(n));
    if (static_cast<size_t>(n) == size) {
      d.bulk = true;  // a full buffer: more is likely waiting, splice the rest
      d.smallSplices = 0;
    } else if (!d.src->peerClosing) {
      // A short read from a stream socket took everything queued; anything later raises a new
      // edge. Not when the peer is closing: its FIN may already be queued behind this data.
      d.src->readable = false;
    }
  }
  return n;
}

ssize_t Connection::flush(Direction& d) {
  const int dst = d.dst->fd.get();
  ssize_t n;
  if (d.pipe) {
    do {
      n = ::splice(d.pipe->readEnd.get(), nullptr, dst, nullptr, d.pipe->bytes, kSpliceFlags);
    } while (n < 0 && errno == EINTR);
    if (n > 0) d.pipe->bytes -= static_cast<size_t>(n);
    return n;
  }
  Buffer& buf = *d.buffer;
  do {
    n = ::send(dst, buf.data.get() + buf.offset, buf.length, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    buf.offset += static_cast<size_t>(n);
    buf.length -= static_cast<size_t>(n);
    // A short send means the socket buffer filled and the kernel flagged it: EPOLLOUT will come.
    if (buf.length > 0) d.dst->writable = false;
  }
  return n;
}

void Connection::releaseHolders(Direction& d) {
  if (d.pipe) core_.pipes().release(std::move(d.pipe));
  if (d.buffer) core_.buffers().release(std::move(d.buffer));
}

void Connection::abortWith(CloseReason reason, Side& failed) {
  core_.stats().add(failed.upstream ? Stat::upstream_cx_destroy_remote : Stat::downstream_cx_destroy_remote);
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
  if (reason == CloseReason::kConnectTimeout) ++host_.stat(HostStat::cx_connect_timeout);
  finishConnectAttempt();
  core_.hosts().connectionClosed(host_, core_.loop().nowUs());
  releaseHolders(toUpstream_);
  releaseHolders(toDownstream_);
  upRegistration_.reset();
  if (up_.fd) {
    core_.stats().sub(Stat::upstream_cx_active);
    up_.fd.reset();
  }
  down_.fd.reset();  // closing removes both from epoll: neither fd is ever duplicated
  if (recordLatency_) {
    core_.latency().record(latencyRef_, LatencyMetric::kDuration, EventLoop::monotonicUs() - acceptedUs_);
  }
  core_.connectionClosed(*this, reason);
}

}  // namespace splicegate
