// Everything one worker owns: its epoll loop, its share of the process's listening sockets, its
// connections, pipe and buffer pools, timers and counters. Node-free, so it is testable on its own; the addon drives it
// from the worker thread's libuv loop.
//
// Lifetime rule: nothing an event handler can be reached through (a Connection, a warm socket
// shell) is freed while a batch is being dispatched, because a later event of the same batch may
// still name it. Closing only unlinks and queues; disposeClosed() frees, and it does nothing inside
// a batch: runOnce calls it after the events and the ready queue, and callers outside any batch
// (the destructor, LoopThread::stop, a same-thread driver's post) free at once.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "access_log.h"
#include "buffer_pool.h"
#include "connection.h"
#include "core_options.h"
#include "event_loop.h"
#include "host_cache.h"
#include "intrusive_list.h"
#include "listener.h"
#include "original_dst.h"
#include "pipe_pool.h"
#include "policy_set.h"
#include "stats.h"
#include "sys_error.h"
#include "warm_pool.h"
#include "worker_events.h"
#include "worker_latency.h"

namespace splicegate {

class WorkerCore {
 public:
  static std::unique_ptr<WorkerCore> create(const CoreOptions& options, SysError& err);
  // For tests: inject the original-destination syscalls.
  static std::unique_ptr<WorkerCore> create(const CoreOptions& options, std::unique_ptr<OriginalDstOps> ops,
                                            SysError& err);
  ~WorkerCore();

  // Starts accepting on a listening socket the process opened once (openListenSocket) and keeps
  // open; the core registers its own dup of listenFd. Before the loop runs.
  SysError attachListener(const ListenerOptions& options, int listenFd, SocketAddress* bound);
  // Leaves every listener: new connections go to the other workers; the sockets stay open in the
  // process. Safe inside an epoll batch: the Listener objects are freed after it.
  void stopAccepting();
  // Closes every connection. Frees them at once outside a batch, after the batch inside one.
  void closeAllConnections(CloseReason reason);

  // The fd the host waits on; readable whenever runOnce has work.
  int pollFd() const { return loop_->fd(); }
  void runOnce(int timeoutMs);
  // Makes a waiting runOnce return promptly and run the wake handler (thread-safe).
  void wake();
  void setWakeHandler(std::function<void()> handler) { wakeHandler_ = std::move(handler); }

  size_t activeConnections() const { return connections_.size(); }
  size_t listenerCount() const { return listeners_.size(); }
  const Stats& stats() const { return stats_; }
  // Compiled once at creation and never changed: its counters may be read from another thread.
  const PolicySet& policies() const { return policies_; }
  // Loop thread only: hands over the buffered events (worker_events.h); returns how many were dropped.
  uint64_t takeEvents(std::vector<WorkerEvent>& out) { return events_.take(out); }
  // Loop thread only: hands over the buffered access-log records (access_log.h) without copying;
  // returns how many were dropped since the last call (also counted in access_log_dropped).
  uint64_t takeAccessRecords(std::vector<AccessRecord>& out) { return accessLog_.swapOut(out); }

  // --- used by Listener and Connection ---
  EventLoop& loop() { return *loop_; }
  Stats& stats() { return stats_; }
  PipePool& pipes() { return pipes_; }
  BufferPool& buffers() { return buffers_; }
  HostCache& hosts() { return hosts_; }
  WorkerLatency& latency() { return latency_; }
  const WorkerLatency& latency() const { return latency_; }
  const HostCache& hosts() const { return hosts_; }
  const CoreOptions& options() const { return options_; }
  void acceptFrom(Listener& listener);
  void connectStarted(Connection& c);
  void connectFinished(Connection& c);
  void scheduleResume(Connection& c);
  // c has a direction that found no copy buffer or pipe: FIFO until one is released.
  void waitForHolder(Connection& c);
  void connectionClosed(Connection& c, CloseReason reason);
  // The upstream socket() failed with EMFILE/ENFILE: stop accepting until fds free up (the next
  // accepts would only hit the same wall). Returns true if it released the worker's spare fd, so
  // the caller can retry once and serve the connection it already accepted.
  bool releaseSpareFd();
  // The protocol stage of c is over. destination/client: what its PROXY header named, AF_UNSPEC
  // for "the socket's own" (LOCAL, UNKNOWN, or no header where optional). Continues with
  // destination -> policy -> admit -> connect, or closes c.
  void handshakeDone(Connection& c, const SocketAddress& destination, const SocketAddress& client);

 private:
  // The housekeeping timer and the "more work queued" kick share this small handler type.
  struct FdHandler final : EventHandler {
    WorkerCore* core = nullptr;
    void (WorkerCore::*handle)() = nullptr;
    UniqueFd fd;
    void onEvents(uint32_t) override { (core->*handle)(); }
  };

  WorkerCore(const CoreOptions& options, std::unique_ptr<EventLoop> loop, std::unique_ptr<OriginalDstOps> ops);
  SysError init();
  void onTick();
  void onKick();
  void runReadyQueue();
  void wakeHolderWaiters();
  void kickIfReady();
  void disposeClosed();
  void refreshGauges();
  // The accept path: accept -> [protocol stage] -> destination -> policy -> admit -> connect.
  void acceptOne(Listener& listener, UniqueFd fd, const SocketAddress& peer);
  // destination -> policy -> admit: the admitted host, or null once the refusal is counted (the
  // caller resets the client). destination is the original destination, before any port override.
  // access: gets the destination judged, the policy's decision and why it was refused, if it was.
  Host* admitDestination(const ListenerOptions& listener, const SocketAddress& destination, const SocketAddress& client,
                         AccessInfo& access);
  // The access log (access_log.h): a record per closed connection, and per connection refused
  // before one existed, if sampled; written into accessLog_ without allocating.
  AccessRecord* newAccessRecord();
  void fillAccessRecord(AccessRecord& r, const AccessInfo& access) const;
  void logRefused(const AccessInfo& access);
  void logClosed(const Connection& c, CloseReason reason);
  // connect: the PROXY header for the upstream (send_proxy_protocol), then a warm socket or a new
  // connect (bound to the client's IP with original_source).
  void startUpstream(Connection& c, Host& host, const SocketAddress& client, const SocketAddress& destination);
  // A denied destination, for the rate-limited deny log (worker_events.h). client: the TCP peer, or
  // the client a PROXY header named.
  void recordDenied(const ListenerOptions& listener, const SocketAddress& client, const SocketAddress& destination,
                    const PolicyDecision& decision);
  bool pauseIfFull(Listener& listener);
  // Out of resources for a connection's second socket: every listener waits for the tick.
  void pauseAccepting();

  CoreOptions options_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<OriginalDstOps> dstOps_;
  OriginalDstResolver resolver_;
  Stats stats_;
  PipePool pipes_;
  BufferPool buffers_;
  HostCache hosts_;
  WarmPool warm_;  // after hosts_: destroyed first, while the hosts it points at still exist
  WorkerLatency latency_;
  PolicySet policies_;
  uint64_t lastPolicyRefreshUs_ = 0;
  WorkerEventBuffer events_;
  BoundedBuffer<AccessRecord> accessLog_;  // capacity 0 when the access log is off
  AccessSampler accessSampler_;
  // Kept so that a connection accept4 let in can still get its upstream socket when that was the
  // last fd; while it is spent the listeners stay paused (see releaseSpareFd).
  UniqueFd spareFd_;
  uint64_t lastRebalanceUs_ = 0;
  std::vector<std::unique_ptr<Listener>> listeners_;
  // Detached, kept until the core goes: a connection still in its protocol stage points at its
  // listener's options (a detached Listener holds no fd, only those).
  std::vector<std::unique_ptr<Listener>> closedListeners_;
  std::vector<SocketAddress> listenerAddresses_;
  // Every listener's name, by Listener::nameIndex, kept for the core's life: a closing connection's
  // access-log record names its listener even after the Listener is freed.
  std::vector<std::string> listenerNames_;
  IntrusiveList<Connection, &Connection::allNode> connections_;
  IntrusiveList<Connection, &Connection::connectNode> connecting_;
  IntrusiveList<Connection, &Connection::readyNode> ready_;
  IntrusiveList<Connection, &Connection::holderWaitNode> holderWaiters_;
  IntrusiveList<Connection, &Connection::handshakeNode> handshaking_;  // waiting for a PROXY header
  std::vector<Connection*> closed_;  // freed after the batch: a later event may still name them
  FdHandler tick_;
  FdHandler kick_;
  bool kicked_ = false;
  bool dispatching_ = false;  // inside runOnce's batch: disposeClosed() must wait
  std::function<void()> wakeHandler_;
  uint64_t lastIdleSweepUs_ = 0;
};

}  // namespace splicegate
