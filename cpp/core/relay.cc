#include "relay.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace splicegate {

ssize_t copyPastUrgentMark(int srcFd, Pipe& pipe, size_t maxBytes) {
  char bounce[4096];
  const size_t want = std::min(sizeof bounce, maxBytes);
  ssize_t n;
  do {
    n = ::recv(srcFd, bounce, want, 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return n;  // EAGAIN: really nothing queued; 0: EOF; or the error
  // The pipe is empty and at least a page big, so this write is whole.
  const ssize_t w = ::write(pipe.writeEnd.get(), bounce, static_cast<size_t>(n));
  if (w != n) {
    errno = EIO;  // cannot happen with room in the pipe; fail the stream rather than lose bytes
    return -1;
  }
  return n;
}

namespace {

constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
constexpr uint8_t kSmallSplicesBeforeCopy = 4;

}  // namespace

Relay::Result Relay::run(const RelayIo& io, size_t budget, bool holdToUpstream) {
  const PumpResult up = holdToUpstream ? PumpResult::kIdle : pump(io, toUpstream_, budget);
  if (up == PumpResult::kError) return Result::kError;
  const PumpResult down = pump(io, toClient_, budget);
  if (down == PumpResult::kError) return Result::kError;
  if (toUpstream_.done() && toClient_.done()) return Result::kDone;
  if (up == PumpResult::kYield || down == PumpResult::kYield) return Result::kYield;
  return Result::kIdle;
}

void Relay::holderAvailable(const RelayIo& io) {
  // pump() cleared `readable` when fill() found no holder (it cannot tell that EAGAIN from an
  // empty socket); the bytes are still queued and no new edge will come for them, so restore it.
  for (Direction* d : {&toUpstream_, &toClient_}) {
    if (!d->waitingForHolder) continue;
    d->waitingForHolder = false;
    src(io, *d).readable = true;
  }
}

void Relay::releaseHolders(const RelayServices& services) {
  releaseHolders(services, toUpstream_);
  releaseHolders(services, toClient_);
}

Relay::PumpResult Relay::pump(const RelayIo& io, Direction& d, size_t& budget) {
  for (;;) {
    bool progressed = false;
    if (d.pending() > 0 && dst(io, d).writable) {
      const ssize_t n = flush(io, d);
      if (n > 0) {
        progressed = true;
        io.services.stats.add(writeStat(d), static_cast<uint64_t>(n));
        io.delivered(io.owner, d.toUpstream, static_cast<uint64_t>(n));
        budget -= std::min(budget, static_cast<size_t>(n));
      } else if (errno == EAGAIN) {
        dst(io, d).writable = false;
      } else {
        toUpstream_.failedUpstream = d.toUpstream;  // the write to dst failed
        return PumpResult::kError;
      }
    }
    if (d.pending() == 0) {
      releaseHolders(io.services, d);
      if (d.srcEof) {
        if (!d.dstShut) {
          // Half-close: the source finished and everything it sent is delivered, so pass the FIN
          // on; the other direction keeps flowing until it finishes too. When the other direction
          // is already done this is the stream's last FIN, and the owner's close() on kDone sends
          // it (every byte of that socket was read to EOF, so close sends FIN, not RST): one
          // syscall fewer per connection.
          const Direction& other = d.toUpstream ? toClient_ : toUpstream_;
          if (!other.done()) ::shutdown(dst(io, d).fd.get(), SHUT_WR);
          d.dstShut = true;
        }
        return PumpResult::kIdle;
      }
    }
    if (!d.srcEof && src(io, d).readable) {
      const ssize_t n = fill(io, d);
      if (n > 0) {
        progressed = true;
        io.services.stats.add(readStat(d), static_cast<uint64_t>(n));
        io.received(io.owner, d.toUpstream, static_cast<uint64_t>(n));
      } else if (n == 0) {
        d.srcEof = true;
        progressed = true;
      } else if (errno == EAGAIN) {
        // With bytes still in the pipe, EAGAIN may mean "pipe full" rather than "socket empty":
        // keep the socket marked readable and read again once the pipe has drained.
        if (d.pending() == 0) {
          src(io, d).readable = false;
          releaseHolders(io.services, d);
        }
      } else {
        toUpstream_.failedUpstream = !d.toUpstream;  // the read from src failed
        return PumpResult::kError;
      }
    }
    if (!progressed) return PumpResult::kIdle;
    if (budget == 0) return PumpResult::kYield;
  }
}

ssize_t Relay::fill(const RelayIo& io, Direction& d) {
  if (!d.holder) {
    const CoreOptions::RelayMode mode = io.services.options.relayMode;
    const bool useSplice = mode == CoreOptions::RelayMode::kSplice ||
                           (mode == CoreOptions::RelayMode::kAuto && d.bulk);
    if (useSplice) {
      d.holder.hold(io.services.pipes.acquire());
      if (!d.holder) io.services.stats.add(Stat::pipe_unavailable);
    }
    if (!d.holder) d.holder.hold(io.services.buffers.acquire());
    // Copy buffers all out: in auto mode a free pipe carries small reads just as well.
    if (!d.holder && mode == CoreOptions::RelayMode::kAuto && !useSplice) d.holder.hold(io.services.pipes.acquire());
    if (!d.holder) {
      // Back-pressure: leave the bytes in the socket and wait, in FIFO order, for a holder to come
      // back (WorkerCore wakes waiters after the batch in which one was released).
      io.services.stats.add(Stat::buffer_unavailable);
      d.waitingForHolder = true;
      io.needsHolder(io.owner);
      errno = EAGAIN;
      return -1;
    }
    d.waitingForHolder = false;
  }
  const int srcFd = src(io, d).fd.get();
  ssize_t n;
  if (Pipe* pipe = d.holder.pipe()) {
    const size_t capacity = io.services.pipes.capacityBytes();
    if (pipe->bytes >= capacity) {
      errno = EAGAIN;
      return -1;
    }
    do {
      n = ::splice(srcFd, nullptr, pipe->writeEnd.get(), nullptr, capacity - pipe->bytes, kSpliceFlags);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN && pipe->bytes == 0 && src(io, d).peerClosing) {
      n = copyPastUrgentMark(srcFd, *pipe, capacity - pipe->bytes);
    }
    if (n > 0) {
      pipe->bytes += static_cast<size_t>(n);
      io.services.stats.add(Stat::splice_bytes, static_cast<uint64_t>(n));
      // Small reads do better copied (one syscall each way, no pipe): drop back to the buffer
      // path once the pipe drains, but only after several in a row — a bulk stream that the
      // proxy keeps up with also sees an occasional small read, and flipping to copying then
      // costs a user-space copy for every byte until a read fills the buffer again.
      if (static_cast<size_t>(n) < io.services.buffers.bufferSize() / 2) {
        if (++d.smallSplices >= kSmallSplicesBeforeCopy) d.bulk = false;
      } else {
        d.smallSplices = 0;
      }
    }
    return n;
  }
  Buffer& buf = *d.holder.buffer();
  if (buf.length > 0) {  // the copy buffer is single-shot: read again only once it is sent
    errno = EAGAIN;
    return -1;
  }
  const size_t size = io.services.buffers.bufferSize();
  do {
    n = ::recv(srcFd, buf.data.get(), size, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    buf.offset = 0;
    buf.length = static_cast<size_t>(n);
    io.services.stats.add(Stat::copy_bytes, static_cast<uint64_t>(n));
    if (static_cast<size_t>(n) == size) {
      d.bulk = true;  // a full buffer: more is likely waiting, splice the rest
      d.smallSplices = 0;
    } else if (!src(io, d).peerClosing) {
      // A short read from a stream socket took everything queued; anything later raises a new
      // edge. Not when the peer is closing: its FIN may already be queued behind this data.
      src(io, d).readable = false;
    }
  }
  return n;
}

ssize_t Relay::flush(const RelayIo& io, Direction& d) {
  const int dstFd = dst(io, d).fd.get();
  ssize_t n;
  if (Pipe* pipe = d.holder.pipe()) {
    do {
      n = ::splice(pipe->readEnd.get(), nullptr, dstFd, nullptr, pipe->bytes, kSpliceFlags);
    } while (n < 0 && errno == EINTR);
    if (n > 0) pipe->bytes -= static_cast<size_t>(n);
    return n;
  }
  Buffer& buf = *d.holder.buffer();
  do {
    n = ::send(dstFd, buf.data.get() + buf.offset, buf.length, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    buf.offset += static_cast<size_t>(n);
    buf.length -= static_cast<size_t>(n);
    // A short send means the socket buffer filled and the kernel flagged it: EPOLLOUT will come.
    if (buf.length > 0) dst(io, d).writable = false;
  }
  return n;
}

void Relay::releaseHolders(const RelayServices& services, Direction& d) {
  if (d.holder.pipe()) services.pipes.release(d.holder.takePipe());
  else if (d.holder.buffer()) services.buffers.release(d.holder.takeBuffer());
}

}  // namespace splicegate
