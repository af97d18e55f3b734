// The HTTP listener's upstream keep-alive pool, per worker: idle upstream connections by original
// host (ip:port), reused across requests and across client connections (Envoy's per-host
// connection pool). A pooled connection still counts as one of its host's active connections
// (cx_active, so max_connections bounds pooled plus busy, and the host is never swept while it has
// one).
//
// A connection stays in the worker's epoll from its connect to its close, registered through its
// UpstreamLink: moving between a session and the pool costs no system call. While it is idle its
// events come here, and anything but writability (data nobody asked for, EOF, an error, urgent
// data) means the server is done with it: it is closed at once (after a recv MSG_PEEK when the
// event says only "readable": the session may have read those bytes earlier in the same batch).
// A connection taken in the very batch that carries such an event, before the event was handled,
// is checked first (recv MSG_PEEK|MSG_DONTWAIT), and so is one taken for a request that could not
// be retried. The housekeeping tick closes connections idle for longer than idle_timeout.
//
// Idle connections serve nobody, so they are the first fds the worker gives up: out of fds, it
// closes the oldest of them (evictOldest) before a connection or request has to wait for one, and
// a pool at its total bound (maxIdle, derived from the fd limit) closes its oldest to keep a new one.
#pragma once

#include <atomic>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "event_loop.h"
#include "host_cache.h"
#include "intrusive_list.h"
#include "socket_address.h"
#include "stats.h"
#include "upstream_socket.h"

namespace splicegate {

class HttpPool;

// The epoll registration of one HTTP upstream connection. Its events go to whoever holds the
// connection now: a session's side, or the pool while it is idle. So an event that was queued
// before the connection changed hands reaches the new holder of this connection, never whatever
// connection replaced it in the old holder. Made and freed by the pool; freed only after the
// batch (HttpPool::disposeRetired), since an event of that batch may still name it.
class UpstreamLink final : public TrackedEventHandler {
 public:
  void onEvents(uint32_t events) override;

 private:
  friend class HttpPool;
  explicit UpstreamLink(HttpPool& pool) : pool_(pool) {}
  HttpPool& pool_;
  EventHandler* session_ = nullptr;  // the holding session's side; null while pooled or closed
  Host* pooledFor_ = nullptr;        // the host whose idle list holds it; null otherwise
  ListNode ageNode_;                 // in the pool's age list while idle (oldest first)
};

class HttpPool {
 public:
  // maxIdle: idle connections kept in all (0 = no total bound, only maxIdlePerHost).
  HttpPool(uint32_t maxIdlePerHost, uint64_t idleTimeoutUs, HostCache& hosts, Stats& stats, size_t maxIdle = 0)
      : maxIdlePerHost_(maxIdlePerHost), maxIdle_(maxIdle), idleTimeoutUs_(idleTimeoutUs), hosts_(hosts), stats_(stats) {}
  ~HttpPool();
  HttpPool(const HttpPool&) = delete;
  HttpPool& operator=(const HttpPool&) = delete;

  // A link for a new upstream connection whose events go to holder; the caller registers the
  // socket with it (EventLoop::addTracked) and retires it when the socket closes.
  UpstreamLink* newLink(EventHandler& holder);
  // The socket of link was closed (or never registered): its events are dropped from now on, and
  // it is freed by disposeRetired().
  void retire(UpstreamLink* link);
  // Frees the retired links; only between batches.
  void disposeRetired();

  struct Taken {
    RegisteredUpstream upstream;
    UpstreamLink* link = nullptr;
    Host* host = nullptr;
    explicit operator bool() const { return static_cast<bool>(upstream); }
  };
  // A live idle connection to destination (most recently used first), its events going to holder
  // from now on, or an empty Taken. Closes the dead ones it finds on the way. verify: check the
  // socket (recv MSG_PEEK) even when no event of this batch is pending for it.
  Taken take(const SocketAddress& destination, EventHandler& holder, bool verify);
  // Keeps upstream (to host, idle from now; its events come here) for reuse; false when the host
  // already has max_idle_per_host idle (the connection is then closed and link retired). The
  // caller has read it empty: bytes already queued raise no new edge for the pool to see. A pool
  // holding maxIdle closes its oldest first (http_pool_evicted_max_idle).
  bool put(Host& host, RegisteredUpstream upstream, UpstreamLink* link, uint64_t nowUs);
  // Closes connections idle for idle_timeout or longer.
  void expire(uint64_t nowUs);
  // Closes up to n idle connections, oldest first, as expire() closes them (FIN, link retired:
  // an event of the current batch still naming it is dropped), each counted in `counted`.
  // Returns how many it closed. Safe inside a batch.
  size_t evictOldest(size_t n, Stat counted);
  // Closes every idle connection (worker shutdown).
  void clear();
  // Safe to read from another thread (tests and stats poll it while the loop runs).
  size_t idleCount() const { return idle_.load(std::memory_order_relaxed); }

 private:
  friend class UpstreamLink;
  struct Idle {
    RegisteredUpstream upstream;
    UpstreamLink* link = nullptr;
    Host* host = nullptr;
    uint64_t sinceUs = 0;
  };
  // An event of an idle connection: anything but writability ends it (readable alone, once a
  // recv MSG_PEEK has confirmed it).
  void idleEvent(UpstreamLink& link, uint32_t events);
  // Closes entry (counted in `counted`); the caller removes it from its host's list.
  void discard(Idle& entry, Stat counted = Stat::http_pool_discarded);
  // Closes link's idle connection and removes it from its host's list; false if it held none.
  bool discardLink(UpstreamLink& link, Stat counted);

  uint32_t maxIdlePerHost_;
  size_t maxIdle_;
  uint64_t idleTimeoutUs_;
  HostCache& hosts_;
  Stats& stats_;
  std::unordered_map<SocketAddress, std::vector<Idle>, SocketAddressHash> byHost_;
  std::vector<UpstreamLink*> retired_;
  // Every idle connection's link in the order it became idle: the front is the oldest.
  IntrusiveList<UpstreamLink, &UpstreamLink::ageNode_> age_;
  // Written by the loop thread only (a relaxed load plus store, like Stats).
  std::atomic<size_t> idle_{0};
  void addIdle(int delta) { idle_.store(idle_.load(std::memory_order_relaxed) + static_cast<size_t>(delta), std::memory_order_relaxed); }
};

// true when the idle connection fd is still open and quiet (no EOF, no data, no error).
bool idleConnectionUsable(int fd);

}  // namespace splicegate
