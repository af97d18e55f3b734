// Preconnect: after a host has been used, keep up to perHost connected, unused upstream sockets
// for it, so the next client to that host skips the TCP handshake. Only for ports the operator
// lists, because it is only safe for client-speaks-first protocols: a server that speaks first
// (a banner) or closes idle connections makes a warm socket stale, so any inbound byte, FIN or
// error drops it, a liveness peek guards the hand-out, and nothing older than ttl is handed out.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "event_loop.h"
#include "host_cache.h"
#include "intrusive_list.h"
#include "own_sockets.h"
#include "unique_fd.h"
#include "upstream_socket.h"
#include "worker_context.h"

namespace splicegate {

class WarmPool;

struct WarmSocket final : EventHandler {
  WarmPool* pool = nullptr;
  const Host* host = nullptr;
  UniqueFd fd;
  // fd's entry in the own-socket registry from the start of its connect: a warm socket that an
  // OUTPUT redirect sends back to our listener is a loop like any other upstream. After fd, so it
  // is removed first; handed to the connection with the fd.
  OwnSockets::Registration registration;
  uint64_t createdUs = 0;
  bool connected = false;
  ListNode ageNode;  // all live warm sockets, oldest first (they share one ttl)
  void onEvents(uint32_t events) override;
};

class WarmPool {
 public:
  explicit WarmPool(WorkerContext& context) : ctx_(context) {}
  ~WarmPool();
  WarmPool(const WarmPool&) = delete;
  WarmPool& operator=(const WarmPool&) = delete;

  bool enabledFor(const Host& host) const;
  // Opens sockets until the host has perHost warm or connecting ones.
  void topUp(const Host& host);
  // A connected, still-alive warm socket for host (removed from the pool) with its own-socket
  // registration, or an empty one.
  RegisteredUpstream take(const Host& host);
  // Drops sockets older than the ttl.
  void expire(uint64_t nowUs);
  // Drops up to n sockets, oldest first, counted in upstream_cx_preconnect_evicted_fd_pressure
  // (the worker is out of fds); returns how many. Safe inside a batch (the shells wait for
  // disposeDropped).
  size_t evictOldest(size_t n);
  // No warm socket is kept (none to expire).
  bool empty() const { return age_.empty(); }
  // The host leaves the cache: its warm sockets go with it.
  void dropHost(const Host& host);
  // Frees dropped and taken sockets' shells; called after each event batch (a later event of the
  // batch may still name them).
  void disposeDropped() { graveyard_.clear(); }

  void onEvents(WarmSocket& socket, uint32_t events);

 private:
  void drop(WarmSocket& socket, Stat counted = Stat::upstream_cx_preconnect_dropped);
  std::unique_ptr<WarmSocket> detach(WarmSocket& socket);

  WorkerContext& ctx_;
  std::unordered_map<const Host*, std::vector<std::unique_ptr<WarmSocket>>> byHost_;
  IntrusiveList<WarmSocket, &WarmSocket::ageNode> age_;
  std::vector<std::unique_ptr<WarmSocket>> graveyard_;
};

}  // namespace splicegate
