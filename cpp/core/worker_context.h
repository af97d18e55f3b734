// What the stages of a connection share within one worker: the loop, counters, pools, host cache,
// latency recorder and options (WorkerContext), and the few lifecycle calls back into the worker
// that owns them (ConnectionEvents). WorkerCore owns both and hands the context to every
// Connection and to the warm-socket pool, so those depend on this header, not on WorkerCore.
#pragma once

#include "buffer_pool.h"
#include "close_reason.h"
#include "core_options.h"
#include "event_loop.h"
#include "host_cache.h"
#include "pipe_pool.h"
#include "relay.h"
#include "socket_address.h"
#include "stats.h"
#include "worker_latency.h"

namespace splicegate {

class Connection;

// What a connection tells its worker. Implemented by WorkerCore, which keeps the per-worker lists
// (connect-timeout FIFO, ready queue, holder waiters, handshakes) and frees closed connections.
class ConnectionEvents {
 public:
  // The upstream connect is in progress (connect-timeout FIFO) / over (connected or failed).
  virtual void connectStarted(Connection& c) = 0;
  virtual void connectFinished(Connection& c) = 0;
  // c used its byte budget: resume it after the batch (once per batch, so none starves the rest).
  virtual void scheduleResume(Connection& c) = 0;
  // c has a direction that found no copy buffer or pipe: FIFO until one is released.
  virtual void waitForHolder(Connection& c) = 0;
  // c is closed (sockets gone): unlink it everywhere, count the reason, free it after the batch.
  virtual void connectionClosed(Connection& c, CloseReason reason) = 0;
  // The upstream socket() failed with EMFILE/ENFILE: free an fd. Idle upstream connections (the
  // HTTP pool's, warm sockets) give theirs up first, oldest first; with none, the worker releases
  // its spare fd and stops accepting until fds free up (the next accepts would only hit the same
  // wall). Returns true if it freed something, so the caller can retry and serve the connection
  // it already accepted; the caller asks again while its retry still finds no fd (what idle
  // upstreams gave up may have gone to another worker), which ends at the spare.
  virtual bool releaseSpareFd() = 0;
  // Even so, socket() found no fd for c's upstream (another worker took it): c waits,
  // accepting stays paused, and each tick retries it (Connection::retryUpstreamSocket) before
  // anything else may take an fd. source: the original source c's upstream socket binds to, or
  // null; kept by the worker while c waits (a rare state: no room for it in every connection).
  virtual void waitForFd(Connection& c, const SocketAddress* source) = 0;
  // The protocol stage of c is over. destination/client: what its PROXY header named, AF_UNSPEC
  // for "the socket's own" (LOCAL, UNKNOWN, or no header where optional). Continues with
  // destination -> policy -> admit -> connect, or closes c.
  virtual void handshakeDone(Connection& c, const SocketAddress& destination, const SocketAddress& client) = 0;

 protected:
  ~ConnectionEvents() = default;
};

// The per-worker services, by reference; all outlive every connection (WorkerCore owns them).
// Loop thread only, like everything it names.
struct WorkerContext {
  EventLoop& loop;
  Stats& stats;
  PipePool& pipes;
  BufferPool& buffers;
  HostCache& hosts;
  WorkerLatency& latency;
  const CoreOptions& options;
  ConnectionEvents& events;

  // The part a Relay draws on; every relay keeps a reference to this one (8 bytes, not four).
  RelayServices relay{pipes, buffers, stats, options};
  const RelayServices& relayServices() const { return relay; }
};

}  // namespace splicegate
