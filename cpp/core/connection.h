// One relayed connection: the accepted (downstream) socket, the upstream socket to its original
// destination, and the Relay (relay.h) that moves bytes between them.
//
// State machine:  [handshake] -> connecting -> relaying -> closed
// handshake: the protocol stage of a listener with proxy_protocol. The accepted socket is registered
// for reads and its first bytes land in a small fixed buffer (Preamble) until the PROXY header
// parser decides; nothing is connected yet and no host is attached. ConnectionEvents::handshakeDone
// (WorkerCore) then
// runs the steps every connection takes (destination -> policy -> admit -> connect) and whatever
// followed the header is sent upstream as the first bytes of the client->upstream direction.
// Only `relaying` moves relayed bytes; bytes queued in the preamble (a PROXY header for the
// upstream, the client's bytes read after its header) go out first, before anything is pumped.
#pragma once

#include <cstdint>
#include <memory>

#include "access_log.h"
#include "buffer_pool.h"
#include "close_reason.h"
#include "core_options.h"
#include "event_loop.h"
#include "host_cache.h"
#include "host_latency.h"
#include "intrusive_list.h"
#include "own_sockets.h"
#include "pipe_pool.h"
#include "proxy_protocol.h"
#include "relay.h"
#include "socket_address.h"
#include "stats.h"
#include "unique_fd.h"
#include "upstream_socket.h"
#include "worker_context.h"

namespace splicegate {


// What the access log's record (access_log.h) says about a connection beyond its timings, filled
// in along the accept path (WorkerCore) and by the relay: ~100 bytes, no allocation.
struct AccessInfo {
  // Index into WorkerCore's listener names and counters (kept for the core's life); always set for
  // a connection: its listener's counters are found by it.
  uint32_t listener = UINT32_MAX;
  PackedAddress client;
  PackedAddress destination;
  PolicyDecision decision;
  uint32_t policyIndex = 0;
  AccessRecord::Policy policy = AccessRecord::Policy::kNone;
  DestinationSource source = DestinationSource::kNone;
  Refusal refusal = Refusal::kNone;
  uint64_t bytesSent = 0;      // client -> upstream
  uint64_t bytesReceived = 0;  // upstream -> client
};

enum class ConnectionState : uint8_t { kHandshake, kConnecting, kRelaying, kClosed };

// Closing fd with SO_LINGER {1, 0} sends RST instead of FIN. Every abnormal end is passed on this
// way, so no peer takes a broken or refused stream for a complete (possibly empty) one.
void resetOnClose(int fd);

class Connection final {
 public:
  // context: the worker's services and lifecycle calls (worker_context.h); outlives the connection.
  Connection(WorkerContext& context, UniqueFd downstream);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The protocol stage: registers the downstream socket for reads and waits for a PROXY header
  // (listener.proxyProtocol; `listener` outlives the connection). On failure the connection is
  // already closed when this returns (false).
  // trusted: the peer is in trusted_sources. An untrusted peer reaches the stage only where the
  // header is optional, and is then relayed only if it sends none.
  bool beginHandshake(const ListenerOptions& listener, bool trusted);
  // The listener and deadline of the protocol stage; only while it lasts (until handshakeDone).
  const ListenerOptions* listener() const { return preamble_ ? preamble_->listener : nullptr; }
  uint64_t handshakeDeadlineUs() const { return preamble_ ? preamble_->deadlineUs : 0; }
  int downstreamFd() const { return down_.fd.get(); }

  // host: the destination's cache entry, already admitted (one pending connect reserved on it).
  void attachHost(Host& host);
  // Bytes the upstream gets before anything relayed (a PROXY header); at most
  // proxy_protocol::kMaxWrittenLength, once, before start.
  void sendFirst(const uint8_t* data, size_t length);

  // Registers the downstream socket (unless the handshake did) and starts the upstream connect,
  // bound to `source` when given (original source). On failure the connection is already closed
  // (and queued for disposal) when this returns.
  void start(const SocketAddress* source = nullptr);
  // Same, with an upstream socket that is already connected (from the preconnect pool), and its
  // own-socket registration, kept until the socket closes.
  void startWithUpstream(RegisteredUpstream upstream);
  // The connection waits for an fd (start() found none for its upstream socket, even with the
  // worker's spare): try socket() again. False while there is still none; on any other outcome
  // the connection has left the wait (connecting, or closed).
  // source: start()'s original source (the worker keeps it while the connection waits).
  bool retryUpstreamSocket(const SocketAddress* source);

  // Continue relaying after a budget-limited wakeup.
  void resume();
  // A copy buffer or pipe came free: a direction that waited for one reads again.
  void holderAvailable();
  bool waitingForHolder() const { return relay_.waitingForHolder(); }
  void close(CloseReason reason);

  ConnectionState state() const { return state_; }
  // Timings for the access log (monotonic µs; 0 = did not happen).
  uint64_t acceptedUs() const { return acceptedUs_; }
  uint64_t establishedUs() const { return sinceAccept(establishedOffset_); }
  uint64_t firstByteUs() const { return firstByteUs_; }
  uint64_t connectStartedUs() const { return sinceAccept(connectStartedOffset_); }
  // Idle (no relayed bytes) for at least idleMs at nowUs: the idle-timeout sweep's question.
  bool idleAtLeast(uint64_t nowUs, uint32_t idleMs) const {
    return static_cast<uint32_t>(msClock(nowUs) - lastActivityMs_) >= idleMs;
  }

  // Membership in the worker's lists. Every connection is in the worker's set (allNode). The other
  // lists belong to phases and share two nodes (SharedNodeList; the tag names the list holding it):
  //   phaseNode: the connect-timeout FIFO while connecting, then ready-to-resume while relaying;
  //   waitNode:  waiting for its PROXY header (handshake), for an fd for its upstream socket
  //              (connecting), then for a copy buffer or pipe (relaying).
  // Two nodes instead of five: 48 bytes less on every idle connection.
  ListNode allNode;
  ListNode phaseNode;
  ListNode waitNode;
  AccessInfo access;

 private:
  // One socket of the pair; registered in epoll once, edge-triggered, for both directions.
  // It finds its connection from its own address (it is one of two known members), so it holds no
  // pointer back: a Side is 16 bytes.
  struct Side final : EventHandler, RelayEndpoint {
    bool upstream = false;  // in RelayEndpoint's tail padding
    Connection& owner();
    void onEvents(uint32_t events) override;
  };

  // Bytes for the upstream ahead of the relay: room for the PROXY header we write, then the
  // client's first bytes as read by the handshake. The header parser sees data[kHeaderRoom, end);
  // what remains to send is [begin, end). Allocated only for connections that need it.
  // The protocol stage's listener and deadline live here too: only a connection in that stage
  // needs them, and it always has a preamble.
  struct Preamble {
    static constexpr size_t kHeaderRoom = proxy_protocol::kMaxWrittenLength;
    const ListenerOptions* listener = nullptr;  // set for a handshake only
    uint64_t deadlineUs = 0;                    // the handshake's
    uint8_t data[kHeaderRoom + proxy_protocol::kMaxHeaderLength];
    uint16_t begin = kHeaderRoom;
    uint16_t end = kHeaderRoom;
    size_t pending() const { return static_cast<size_t>(end - begin); }
    size_t received() const { return static_cast<size_t>(end - kHeaderRoom); }
  };

  void onHandshakeEvent();
  void finishHandshake(const proxy_protocol::ParseResult& result);
  // Sends what the preamble holds; false on a send error (errno set). Frees it once sent.
  bool flushPreamble();

  // start()'s second half once socket() has answered: counts, registers, or closes.
  void continueStart(UpstreamOpen opened);
  void onSideEvent(Side& side, uint32_t events);
  void onConnectReady(uint32_t events);
  void relay();
  // What the relay tells this connection (RelayIo).
  void relayNeedsHolder();
  void relayDelivered(bool toUpstream, uint64_t n);
  void relayReceived(bool toUpstream, uint64_t n);
  void abortWith(CloseReason reason, Side& failed);
  void finishConnectAttempt();
  void recordConnectStart();
  void recordFirstByte();

  friend struct RelayIo;  // calls relayNeedsHolder, relayDelivered and relayReceived
  RelayIo relayIo() { return RelayIo::of(*this, ctx_.relayServices(), down_, up_); }
  // The early timings are kept as µs after acceptedUs_ in 32 bits (they fall within the protocol
  // stage's and the connect's timeouts; 71 minutes at most, saturated beyond): 0 = did not happen.
  uint32_t offsetNow() const;
  static uint32_t msClock(uint64_t us) { return static_cast<uint32_t>(us / 1000); }
  uint64_t sinceAccept(uint32_t offset) const { return offset == 0 ? 0 : acceptedUs_ + offset - 1; }

  WorkerContext& ctx_;
  ConnectionState state_ = ConnectionState::kConnecting;
  bool downRegistered_ = false;  // down_.fd is in epoll (the handshake registers it early)
  bool trusted_ = false;         // the handshake's peer may send a header
  bool connectPending_ = false;  // host's pending slot still held
  bool recordLatency_ = true;

 public:
  uint8_t phaseList = 0;  // which list holds phaseNode (SharedNodeList's tag; 0: none)
  uint8_t waitList = 0;   // which list holds waitNode

 private:
  Side down_;
  Side up_;
  Relay relay_;
  Host* host_ = nullptr;  // null until attachHost (during the handshake, or refused after it)
  std::unique_ptr<Preamble> preamble_;
  // up_.fd's entry in the own-socket registry (loop detection); removed before up_.fd closes.
  OwnSockets::Registration upRegistration_;
  uint64_t acceptedUs_ = 0;
  uint64_t firstByteUs_ = 0;  // 0 until the first upstream byte reached the client
  // End of the protocol stage (without one, the accept: offset 0, stored as 1); proxy_overhead
  // starts here.
  uint32_t stageDoneOffset_ = 1;
  uint32_t connectStartedOffset_ = 0;
  uint32_t establishedOffset_ = 0;
  // The loop's clock at the last relayed bytes, in ms and 32 bits: only compared as a difference
  // modulo 2^32 (idleAtLeast), which stays exact for any idle timeout (at most 2^32 - 1 ms) since
  // the sweep looks every second.
  uint32_t lastActivityMs_ = 0;
};

}  // namespace splicegate
