// One relayed connection: the accepted (downstream) socket, the upstream socket to its original
// destination, and the two relay directions between them.
//
// State machine:  accepted -> [pre-relay parsing, reserved for PROXY protocol / HTTP routing]
//                 -> connecting -> relaying -> closed
// Only `relaying` moves bytes; a future parsing stage slots in before `connecting` and hands over
// whatever it read as the first bytes of the client->upstream direction.
#pragma once

#include <cstdint>
#include <memory>

#include "buffer_pool.h"
#include "event_loop.h"
#include "host_cache.h"
#include "host_latency.h"
#include "intrusive_list.h"
#include "own_sockets.h"
#include "pipe_pool.h"
#include "socket_address.h"
#include "stats.h"
#include "unique_fd.h"
#include "upstream_socket.h"

namespace splicegate {

class WorkerCore;
class Connection;

enum class ConnectionState : uint8_t { kConnecting, kRelaying, kClosed };

// Closing fd with SO_LINGER {1, 0} sends RST instead of FIN. Every abnormal end is passed on this
// way, so no peer takes a broken or refused stream for a complete (possibly empty) one.
void resetOnClose(int fd);

// Why a connection ended; counted per reason. Only kCompleted ends with FIN: every other reason
// resets both sockets.
enum class CloseReason : uint8_t {
  kCompleted,        // both directions saw EOF and were shut down
  kDownstreamError,  // client reset or errored
  kUpstreamError,    // upstream reset or errored while relaying
  kConnectFailed,
  kConnectTimeout,
  kIdleTimeout,
  kDrained,  // still open at the end of drain_timeout
  kResourceExhausted,
};

class Connection {
 public:
  // host: the destination's cache entry, already admitted (one pending connect reserved on it).
  Connection(WorkerCore& core, UniqueFd downstream, Host& host);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Registers the downstream socket and starts the upstream connect. On failure the connection is
  // already closed (and queued for disposal) when this returns.
  void start();
  // Same, with an upstream socket that is already connected (from the preconnect pool), and its
  // own-socket registration, kept until the socket closes.
  void startWithUpstream(RegisteredUpstream upstream);

  // Continue relaying after a budget-limited wakeup.
  void resume();
  // A copy buffer or pipe came free: a direction that waited for one reads again.
  void holderAvailable();
  bool waitingForHolder() const { return toUpstream_.waitingForHolder || toDownstream_.waitingForHolder; }
  void close(CloseReason reason);

  ConnectionState state() const { return state_; }
  uint64_t connectStartedUs() const { return connectStartedUs_; }
  uint64_t lastActivityUs() const { return lastActivityUs_; }

  // Membership in the worker's lists (all connections; connect-timeout FIFO; ready-to-resume;
  // waiting for a copy buffer or pipe).
  ListNode allNode;
  ListNode connectNode;
  ListNode readyNode;
  ListNode holderWaitNode;

 private:
  // One socket of the pair; registered in epoll once, edge-triggered, for both directions.
  struct Side final : EventHandler {
    Connection* owner = nullptr;
    UniqueFd fd;
    bool readable = false;  // cleared only on EAGAIN from a read
    bool writable = false;  // cleared on EAGAIN or a short write
    bool upstream = false;
    bool peerClosing = false;  // RDHUP/HUP/ERR seen: EOF may be queued behind the data
    void onEvents(uint32_t events) override;
  };

  // Bytes flowing src -> dst. Holds a pipe (splice) or a copy buffer only while bytes are in flight.
  struct Direction {
    Side* src = nullptr;
    Side* dst = nullptr;
    std::unique_ptr<Pipe> pipe;
    std::unique_ptr<Buffer> buffer;
    bool srcEof = false;
    bool dstShut = false;
    bool bulk = false;  // last read filled a copy buffer: use splice for what follows
    bool waitingForHolder = false;  // src had bytes but no buffer or pipe was free
    uint8_t smallSplices = 0;  // consecutive small splices (see fill())
    uint64_t bytes = 0;
    Stat readStat;   // global counter for bytes read from src
    Stat writeStat;  // global counter for bytes written to dst
    HostStat hostStat;  // the host's counter for this direction
    size_t pending() const { return pipe ? pipe->bytes : (buffer ? buffer->length : 0); }
    bool done() const { return srcEof && dstShut; }
  };

  enum class PumpResult : uint8_t { kIdle, kYield, kError };

  void onSideEvent(Side& side, uint32_t events);
  void onConnectReady(uint32_t events);
  void relay();
  PumpResult pump(Direction& d, size_t& budget);
  // Each returns bytes moved, 0 for EOF (fill only), or -1 with errno set (EAGAIN included).
  ssize_t fill(Direction& d);
  ssize_t flush(Direction& d);
  void releaseHolders(Direction& d);
  void abortWith(CloseReason reason, Side& failed);
  void finishConnectAttempt();
  void recordConnectStart();
  void recordFirstByte();

  WorkerCore& core_;
  ConnectionState state_ = ConnectionState::kConnecting;
  Side down_;
  Side up_;
  Direction toUpstream_;
  Direction toDownstream_;
  Host& host_;
  bool connectPending_ = true;  // host's pending slot still held
  Side* pumpFailedSide_ = nullptr;
  // up_.fd's entry in the own-socket registry (loop detection); removed before up_.fd closes.
  OwnSockets::Registration upRegistration_;
  HostRef latencyRef_;        // where this connection's per-host latency samples go
  bool firstByteSeen_ = false;  // time to first upstream byte recorded
  bool recordLatency_ = true;
  uint64_t acceptedUs_ = 0;
  uint64_t connectStartedUs_ = 0;
  uint64_t establishedUs_ = 0;
  uint64_t lastActivityUs_ = 0;
};

}  // namespace splicegate
