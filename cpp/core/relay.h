// The relay: bytes between a client socket and an upstream socket, both directions, until both
// have ended. A reusable component (a relayed connection uses one; the HTTP listener will use one
// per tunnel) that knows nothing about how its sockets were obtained or registered: the owner feeds
// it readiness (the endpoints' flags) and calls run().
//
// Each direction flushes what it holds while the destination is writable; when it holds nothing
// and the source reached EOF it half-closes the destination (shutdown SHUT_WR); it reads more while
// the source is readable, through a pooled copy buffer for small reads or a pooled pipe (splice)
// for bulk ones (docs/ARCHITECTURE.md, "The relay"). A direction holds a buffer or pipe only while
// bytes are in flight; when none is free it waits (RelayOwner::relayNeedsHolder) and holderAvailable()
// resumes it.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "buffer_pool.h"
#include "core_options.h"
#include "pipe_pool.h"
#include "socket_options.h"
#include "stats.h"
#include "unique_fd.h"

namespace splicegate {

// TCP urgent data (EPOLLPRI) arrived on fd: from now on its urgent bytes stay in the stream
// (SO_OOBINLINE, which also covers the ones not yet read past), so the relay passes every byte
// on and only their urgency is lost, as in any relay that sends no MSG_OOB itself. Set at the
// first urgent byte, not on every socket: no syscall per connection for a rare case.
inline void keepUrgentDataInline(int fd) { setIntOption(fd, SOL_SOCKET, SO_OOBINLINE, 1); }

// splice(2) from a TCP socket stops at the urgent mark and never passes it (EAGAIN with bytes still
// queued behind it), where recv(2) steps over the urgent byte. So on a splice path, once a side
// has seen urgent data (or its peer closing: the same "a read may stop short" state), an EAGAIN
// into an empty pipe is checked with this: one recv of at most min(4 KiB, maxBytes) into a bounce
// buffer, whose bytes go into the pipe. Returns what recv returned (bytes, 0 at EOF, -1 with errno;
// EIO if the pipe took less). Only for an empty pipe: one holding bytes may have all its slots
// taken by small splices, and a write that found no room would lose what the recv took. Used by
// the relay and by the HTTP listener's body splices.
ssize_t copyPastUrgentMark(int srcFd, Pipe& pipe, size_t maxBytes);

// One socket as the relay sees it. The owner sets the flags from epoll events (edge-triggered);
// the relay clears them when the socket says EAGAIN.
struct RelayEndpoint {
  UniqueFd fd;
  bool readable = false;     // cleared only on EAGAIN from a read
  bool writable = false;     // cleared on EAGAIN or a short write
  // RDHUP/HUP/ERR or TCP urgent data (PRI) seen: a read may stop short with more queued behind it
  // (EOF behind the data, or the bytes behind the urgent mark), so reads go on until EAGAIN.
  bool peerClosing = false;
};

// The per-worker services a relay draws on.
struct RelayServices {
  PipePool& pipes;
  BufferPool& buffers;
  Stats& stats;
  const CoreOptions& options;
};

// What a relay works on and tells its owner: the two sockets, the worker's services and the owner's
// two callbacks, handed to each call rather than kept. A relay lives inside its owner (one per
// relayed connection), where four references and a virtual table pointer would be 40 of its bytes
// on every idle connection.
// RelayIo::of(owner, services, client, upstream) binds an owner that has (privately, with RelayIo a
// friend):
//   void relayNeedsHolder();  // a direction found no copy buffer or pipe free: queue for one;
//                             // holderAvailable() follows
//   void relayDelivered(bool toUpstream, uint64_t n);  // n bytes were written to the upstream
//                                                      // (toUpstream) or to the client
//   void relayReceived(bool toUpstream, uint64_t n);   // n bytes were read from the client
//                                                      // (toUpstream) or from the upstream
struct RelayIo {
  RelayEndpoint& client;
  RelayEndpoint& upstream;
  const RelayServices& services;
  void* owner;
  void (*needsHolder)(void* owner);
  void (*delivered)(void* owner, bool toUpstream, uint64_t n);
  void (*received)(void* owner, bool toUpstream, uint64_t n);

  template <typename Owner>
  static RelayIo of(Owner& owner, const RelayServices& services, RelayEndpoint& client, RelayEndpoint& upstream) {
    return RelayIo{client, upstream, services, &owner, [](void* o) { static_cast<Owner*>(o)->relayNeedsHolder(); },
                   [](void* o, bool toUpstream, uint64_t n) { static_cast<Owner*>(o)->relayDelivered(toUpstream, n); },
                   [](void* o, bool toUpstream, uint64_t n) { static_cast<Owner*>(o)->relayReceived(toUpstream, n); }};
  }
};

class Relay {
 public:
  enum class Result : uint8_t {
    kIdle,   // waits for readiness
    kYield,  // used its byte budget with work left: run again after the other connections
    kDone,   // both directions saw EOF and passed it on, except the last FIN: the owner must now
             // close() both sockets, which sends it (both were read to EOF: FIN, not RST)
    kError,  // a read or write failed; failedUpstream() says on which side
  };

  Relay() { toUpstream_.toUpstream = true; }
  // The owner returns the holders first (releaseHolders, on close); what a relay still holds when
  // destroyed is freed, not pooled.
  ~Relay() = default;
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Moves bytes both ways, at most `budget` bytes in all. holdToUpstream: leave the client's bytes
  // where they are (its owner still has bytes of its own to send upstream first). `io` is the same
  // on every call.
  Result run(const RelayIo& io, size_t budget, bool holdToUpstream = false);
  bool failedUpstream() const { return toUpstream_.failedUpstream; }

  // A copy buffer or pipe came free: a direction that waited for one reads again.
  void holderAvailable(const RelayIo& io);
  bool waitingForHolder() const { return toUpstream_.waitingForHolder || toClient_.waitingForHolder; }
  // Returns every buffer and pipe to its pool (on close).
  void releaseHolders(const RelayServices& services);

 private:
  // What a direction holds while bytes are in flight: a pipe (splice) or a copy buffer, never both.
  // One pointer whose low bit says which, not two unique_ptrs: 8 bytes less per direction on every
  // idle connection. It owns what it holds (deleted with it); releaseHolders() hands it back to
  // its pool first.
  class Holder {
   public:
    Holder() = default;
    ~Holder() { reset(); }
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;
    explicit operator bool() const { return bits_ != 0; }
    Pipe* pipe() const { return (bits_ & kPipe) != 0 ? reinterpret_cast<Pipe*>(bits_ & ~kPipe) : nullptr; }
    Buffer* buffer() const { return (bits_ & kPipe) == 0 ? reinterpret_cast<Buffer*>(bits_) : nullptr; }
    void hold(std::unique_ptr<Pipe> p) {
      reset();
      if (p) bits_ = reinterpret_cast<uintptr_t>(p.release()) | kPipe;
    }
    void hold(std::unique_ptr<Buffer> b) {
      reset();
      bits_ = reinterpret_cast<uintptr_t>(b.release());
    }
    std::unique_ptr<Pipe> takePipe() { return std::unique_ptr<Pipe>(take(pipe())); }
    std::unique_ptr<Buffer> takeBuffer() { return std::unique_ptr<Buffer>(take(buffer())); }

   private:
    static constexpr uintptr_t kPipe = 1;
    static_assert(alignof(Pipe) > kPipe && alignof(Buffer) > kPipe, "the tag bit must be free");
    template <typename T>
    T* take(T* p) {
      if (p) bits_ = 0;
      return p;
    }
    void reset() {
      delete pipe();
      delete buffer();
      bits_ = 0;
    }
    uintptr_t bits_ = 0;
  };

  // Bytes flowing src -> dst. Holds a pipe (splice) or a copy buffer only while bytes are in flight.
  // Kept small (one pair per relayed connection, 16 bytes each): the endpoints and counters follow
  // from toUpstream.
  struct Direction {
    Holder holder;
    bool srcEof = false;
    bool dstShut = false;
    bool toUpstream = false;
    bool bulk = false;  // last read filled a copy buffer: use splice for what follows
    bool waitingForHolder = false;  // src had bytes but no buffer or pipe was free
    uint8_t smallSplices = 0;  // consecutive small splices (see fill())
    bool failedUpstream = false;  // toUpstream_'s only: the relay's error was on the upstream socket
    size_t pending() const {
      if (const Pipe* p = holder.pipe()) return p->bytes;
      const Buffer* b = holder.buffer();
      return b ? b->length : 0;
    }
    bool done() const { return srcEof && dstShut; }
  };
  enum class PumpResult : uint8_t { kIdle, kYield, kError };

  static RelayEndpoint& src(const RelayIo& io, const Direction& d) { return d.toUpstream ? io.client : io.upstream; }
  static RelayEndpoint& dst(const RelayIo& io, const Direction& d) { return d.toUpstream ? io.upstream : io.client; }
  // Global counters for the bytes read from src and written to dst.
  static Stat readStat(const Direction& d) { return d.toUpstream ? Stat::bytes_received : Stat::upstream_cx_rx_bytes_total; }
  static Stat writeStat(const Direction& d) { return d.toUpstream ? Stat::upstream_cx_tx_bytes_total : Stat::bytes_sent; }

  PumpResult pump(const RelayIo& io, Direction& d, size_t& budget);
  // Each returns bytes moved, 0 for EOF (fill only), or -1 with errno set (EAGAIN included).
  ssize_t fill(const RelayIo& io, Direction& d);
  ssize_t flush(const RelayIo& io, Direction& d);
  static void releaseHolders(const RelayServices& services, Direction& d);

  Direction toUpstream_;
  Direction toClient_;
};

}  // namespace splicegate
