// Everything one worker owns: its epoll loop, its share of the process's listening sockets, its
// connections, pipe and buffer pools, host cache, timers and counters, and the WorkerContext that
// hands those services to its connections (worker_context.h). Node-free, so it is testable on its
// own; a LoopDriver runs it (loop_driver.h: its own thread, or the worker thread's libuv loop).
//
// Lifetime rule: nothing an event handler can be reached through (a Connection, a warm socket
// shell) is freed while a batch is being dispatched, because a later event of the same batch may
// still name it. Closing only unlinks and queues; disposeClosed() frees, and it does nothing inside
// a batch: runOnce calls it after the events and the ready queue, and callers outside any batch
// (the destructor, LoopThread::stop, a same-thread driver's post) free at once.
#pragma once

#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "access_log.h"
#include "buffer_pool.h"
#include "connection.h"
#include "core_options.h"
#include "event_loop.h"
#include "host_cache.h"
#include "http_pool.h"
#include "http_session.h"
#include "intrusive_list.h"
#include "listener.h"
#include "original_dst.h"
#include "pipe_pool.h"
#include "policy_set.h"
#include "stats.h"
#include "sys_error.h"
#include "udp_relay.h"
#include "warm_pool.h"
#include "worker_context.h"
#include "worker_events.h"
#include "worker_latency.h"

namespace splicegate {

// Owns the per-worker services and the WorkerContext that hands them to each connection; receives
// the connections' lifecycle calls (ConnectionEvents) and the HTTP sessions' (HttpSessionOwner).
class WorkerCore final : private ConnectionEvents, private HttpSessionOwner, private UdpRelayOwner {
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
  // Closes every connection, and the HTTP pool's idle upstream connections. Frees them at once
  // outside a batch, after the batch inside one.
  void closeAllConnections(CloseReason reason);
  // Closes the HTTP pool's idle upstream connections (counted in http_pool_discarded): an orphan
  // with no connection left has nothing to reuse them for, and its counters are read as it ends.
  void closeIdleUpstreams() { httpPool_.clear(); }

  // The fd the host waits on; readable whenever runOnce has work.
  int pollFd() const { return loop_->fd(); }
  void runOnce(int timeoutMs);
  // Makes a waiting runOnce return promptly and run the wake handler (thread-safe).
  void wake();
  void setWakeHandler(std::function<void()> handler) { wakeHandler_ = std::move(handler); }

  size_t activeConnections() const { return connections_.size() + sessions_.size(); }
  size_t httpPoolIdle() const { return httpPool_.idleCount(); }
  size_t listenerCount() const { return listeners_.size() + udp_.listenerCount(); }
  // UDP sessions (not connections: drain does not wait for them; closeAllConnections ends them).
  size_t udpSessions() const { return udp_.sessionCount(); }
  const Stats& stats() const { return stats_; }
  // Per-listener counters, in attach order, one per attachListener call; listenerNames() names
  // them. Both only grow in attachListener (before the loop runs, on the thread that reads them)
  // and keep their objects for the core's life, so another thread may read the counters.
  const std::vector<std::unique_ptr<ListenerStats>>& listenerStats() const { return listenerStats_; }
  const std::vector<std::string>& listenerNames() const { return listenerNames_; }
  // Compiled once at creation and never changed: its counters may be read from another thread.
  const PolicySet& policies() const { return policies_; }
  // Loop thread only: hands over the buffered events (worker_events.h); returns how many were dropped.
  uint64_t takeEvents(std::vector<WorkerEvent>& out) { return events_.take(out); }
  // Loop thread only: hands over the buffered access-log records (access_log.h) without copying;
  // returns how many were dropped since the last call (also counted in access_log_dropped).
  uint64_t takeAccessRecords(std::vector<AccessRecord>& out) { return accessLog_.swapOut(out); }
  // Any thread: whether a take above would find anything (worker_events.h, holding()).
  bool holdsEvents() const { return events_.holding(); }
  bool holdsAccessRecords() const { return accessLog_.holding(); }

  // For a same-thread driver and tests: dispatch events without the rest of runOnce.
  EventLoop& loop() { return *loop_; }
  const HostCache& hosts() const { return hosts_; }
  const WorkerLatency& latency() const { return latency_; }
  const CoreOptions& options() const { return options_; }
  // The services every stage uses (worker_context.h).
  WorkerContext& context() { return context_; }
  // Listener: its socket is readable.
  void acceptFrom(Listener& listener);
  // The tick stays at its busy period from now on, resting or not: an orphaned loop watches its
  // drain deadline and hands over its access-log records on every tick (loop_thread.h).
  void keepTicking();
  // True while the tick runs at its rest period (canRest()); for tests.
  bool resting() const { return resting_; }

 private:
  // The housekeeping timer and the "more work queued" kick share this small handler type.
  struct FdHandler final : EventHandler {
    WorkerCore* core = nullptr;
    void (WorkerCore::*handle)() = nullptr;
    UniqueFd fd;
    void onEvents(uint32_t) override { (core->*handle)(); }
  };

  WorkerCore(const CoreOptions& options, std::unique_ptr<EventLoop> loop, std::unique_ptr<OriginalDstOps> ops);
  // ConnectionEvents (worker_context.h)
  void connectStarted(Connection& c) override;
  void connectFinished(Connection& c) override;
  void scheduleResume(Connection& c) override;
  void waitForHolder(Connection& c) override;
  void connectionClosed(Connection& c, CloseReason reason) override;
  bool releaseSpareFd() override;  // ConnectionEvents and HttpSessionOwner alike
  void waitForFd(HttpSession& s) override;
  void waitForFd(Connection& c, const SocketAddress* source) override;
  // Tick: the connections waiting for an fd get one first, oldest first. True when none waits.
  bool retryFdWaiters();
  // The worker is out of fds: closes up to kFdShedBatch idle upstream connections, oldest first,
  // the HTTP pool's, then warm sockets (they serve nobody, and would keep their fds until
  // idle_timeout or ttl while connections wait for one). Returns how many it closed. Closed like
  // expired ones (FIN; links and shells freed after the batch), so it is safe inside a batch.
  size_t shedIdleUpstreams();
  void handshakeDone(Connection& c, const SocketAddress& destination, const SocketAddress& client) override;

  SysError init();
  void onTick();
  // The tick runs every 50 ms while anything waits on a deadline finer than a second, and every
  // second at rest, so an idle worker's loop wakes about twice a second (the rest tick and the
  // event drain), not 21 times. True when nothing needs the finer tick: relayed connections only
  // need the idle sweep, once a second.
  bool canRest() const;
  // Arms the tick at its rest or busy period; false (errno set, period unchanged) on failure.
  bool setTickPeriod(bool rest);
  void onKick();
  // This host's addresses changed (a netlink RTM_NEWADDR/RTM_DELADDR notice): re-read them now,
  // so an address added after start is denied from its first connection, not up to 5 s later.
  void onAddressChange();
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
  // listenerStats: the accepting listener's counters (a policy deny is counted there too).
  Host* admitDestination(const ListenerOptions& listener, ListenerStats& listenerStats, const SocketAddress& destination,
                         const SocketAddress& client, AccessInfo& access);
  // The access log (access_log.h): a record per closed connection, and per connection refused
  // before one existed, if sampled; written into accessLog_ without allocating.
  AccessRecord* newAccessRecord();
  void fillAccessRecord(AccessRecord& r, const AccessInfo& access) const;
  // A connection refused at accept (before a Connection existed) has ended: counts it in
  // cx_close_refused and logs it if sampled.
  void endRefusedAtAccept(const AccessInfo& access);
  // A destination that leads back into splicegate: counted, and the record says where it led.
  void refuseLoop(ListenerStats& ls, AccessInfo& access, const SocketAddress& to, DestinationSource source);
  void logClosed(const Connection& c, CloseReason reason);
  // connect: the PROXY header for the upstream (send_proxy_protocol), then a warm socket or a new
  // connect (bound to the client's IP with original_source).
  void startUpstream(Connection& c, Host& host, const SocketAddress& client, const SocketAddress& destination);
  // A denied destination, for the rate-limited deny log (worker_events.h). client: the TCP peer, or
  // the client a PROXY header named.
  void recordDenied(const ListenerOptions& listener, const SocketAddress& client, const SocketAddress& destination,
                    const PolicyDecision& decision);
  bool pauseIfFull(Listener& listener);
  // A connection on a mode: http listener: an HttpSession reads and routes its requests.
  void acceptHttp(const Listener& listener, UniqueFd fd, const SocketAddress& peer);
  // HttpSessionOwner
  bool allowDestination(const ListenerOptions& listener, const SocketAddress& destination,
                        const SocketAddress& client, AccessInfo& access) override;
  AccessRecord* newRequestRecord(const AccessInfo& access) override;
  bool loopsBack(const SocketAddress& destination) override { return resolver_.pointsAtOwnListener(destination); }
  void sessionClosed(HttpSession& s) override;
  void scheduleResume(HttpSession& s) override;
  void waitForHolder(HttpSession& s) override;
  // UdpRelayOwner: the destination policy for a new UDP session.
  bool allowUdpDestination(const ListenerOptions& listener, const SocketAddress& destination,
                           const SocketAddress& client) override;
  LocalIp isThisHost(const SocketAddress& address) override { return dstOps_->isLocalIp(address); }
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
  WorkerLatency latency_;
  WorkerContext context_;  // after everything it names
  WarmPool warm_;  // after hosts_: destroyed first, while the hosts it points at still exist
  HttpPool httpPool_;  // after hosts_, for the same reason
  PolicySet policies_;
  UdpRelay udp_;  // after what it uses (loop, stats, latency, options), destroyed before them
  uint64_t lastPolicyRefreshUs_ = 0;
  WorkerEventBuffer events_;
  BoundedBuffer<AccessRecord> accessLog_;  // capacity 0 when the access log is off
  AccessSampler accessSampler_;
  // Kept so that a connection accept4 let in can still get its upstream socket when that was the
  // last fd; while it is spent the listeners stay paused (see releaseSpareFd).
  UniqueFd spareFd_;
  // Set when the worker ran out of fds, cleared by the tick that finds every waiter served and the
  // spare back: meanwhile no warm socket is opened (it would take an fd a connection needs).
  bool fdShort_ = false;
  uint64_t lastRebalanceUs_ = 0;
  std::vector<std::unique_ptr<Listener>> listeners_;
  // Detached, kept until the core goes: a connection still in its protocol stage points at its
  // listener's options (a detached Listener holds no fd, only those).
  std::vector<std::unique_ptr<Listener>> closedListeners_;
  std::vector<SocketAddress> listenerAddresses_;
  // Every listener's name, by Listener::nameIndex, kept for the core's life: a closing connection's
  // access-log record names its listener even after the Listener is freed.
  std::vector<std::string> listenerNames_;
  // Every listener's counters, by Listener::nameIndex, kept for the core's life like the names.
  std::vector<std::unique_ptr<ListenerStats>> listenerStats_;
  IntrusiveList<Connection, &Connection::allNode> connections_;
  // A connection's phases (handshake, connecting, relaying) never overlap, so the lists of
  // different phases share its two nodes (connection.h); the last argument tags each list.
  SharedNodeList<Connection, &Connection::phaseNode, &Connection::phaseList, 1> connecting_;
  SharedNodeList<Connection, &Connection::phaseNode, &Connection::phaseList, 2> ready_;
  SharedNodeList<Connection, &Connection::waitNode, &Connection::waitList, 1> handshaking_;  // waiting for a PROXY header
  SharedNodeList<Connection, &Connection::waitNode, &Connection::waitList, 2> fdWaiters_;  // accepted, no upstream fd yet
  std::unordered_map<const Connection*, SocketAddress> fdWaitSources_;  // their original sources, if any
  SharedNodeList<Connection, &Connection::waitNode, &Connection::waitList, 3> holderWaiters_;
  std::vector<Connection*> closed_;  // freed after the batch: a later event may still name them
  IntrusiveList<HttpSession, &HttpSession::node> sessions_;  // HTTP listener connections
  IntrusiveList<HttpSession, &HttpSession::readyNode> readySessions_;
  IntrusiveList<HttpSession, &HttpSession::holderWaitNode> holderWaitingSessions_;
  IntrusiveList<HttpSession, &HttpSession::fdWaitNode> fdWaitingSessions_;  // requests, no upstream fd yet
  std::vector<HttpSession*> closedSessions_;  // freed after the batch, like closed_
  FdHandler tick_;
  bool resting_ = false;  // the tick runs at its rest period
  bool restAllowed_ = true;  // false once keepTicking() was called
  FdHandler kick_;
  FdHandler addressWatch_;  // NETLINK_ROUTE, address and route groups; empty when no policy needs it
  bool kicked_ = false;
  bool dispatching_ = false;  // inside runOnce's batch: disposeClosed() must wait
  std::function<void()> wakeHandler_;
  uint64_t lastIdleSweepUs_ = 0;
};

}  // namespace splicegate
