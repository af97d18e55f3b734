// The HTTP listener's upstream keep-alive pool, per worker: idle upstream connections by original
// host (ip:port), reused across requests and across client connections (Envoy's per-host
// connection pool). A pooled connection still counts as one of its host's active connections
// (cx_active, so max_connections bounds pooled plus busy, and the host is never swept while it has
// one); it leaves the worker's epoll while idle.
//
// A connection is checked before reuse (recv MSG_PEEK|MSG_DONTWAIT): EOF, data (a response nobody
// asked for) or an error means the server is done with it, so it is closed and the next one is
// tried. The housekeeping tick closes connections idle for longer than idle_timeout.
#pragma once

#include <atomic>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "host_cache.h"
#include "socket_address.h"
#include "stats.h"
#include "upstream_socket.h"

namespace splicegate {

class HttpPool {
 public:
  HttpPool(uint32_t maxIdlePerHost, uint64_t idleTimeoutUs, HostCache& hosts, Stats& stats)
      : maxIdlePerHost_(maxIdlePerHost), idleTimeoutUs_(idleTimeoutUs), hosts_(hosts), stats_(stats) {}
  ~HttpPool();
  HttpPool(const HttpPool&) = delete;
  HttpPool& operator=(const HttpPool&) = delete;

  struct Taken {
    RegisteredUpstream upstream;
    Host* host = nullptr;
    explicit operator bool() const { return static_cast<bool>(upstream); }
  };
  // A live idle connection to destination (most recently used first), or an empty Taken. Closes
  // the dead ones it finds on the way.
  Taken take(const SocketAddress& destination);
  // Keeps upstream (to host, idle from now) for reuse; false when the host already has
  // max_idle_per_host idle (the caller closes it).
  bool put(Host& host, RegisteredUpstream upstream, uint64_t nowUs);
  // Closes connections idle for idle_timeout or longer.
  void expire(uint64_t nowUs);
  // Closes every idle connection (worker shutdown).
  void clear();
  // Safe to read from another thread (tests and stats poll it while the loop runs).
  size_t idleCount() const { return idle_.load(std::memory_order_relaxed); }

 private:
  struct Idle {
    RegisteredUpstream upstream;
    Host* host = nullptr;
    uint64_t sinceUs = 0;
  };
  void discard(Idle& entry);

  uint32_t maxIdlePerHost_;
  uint64_t idleTimeoutUs_;
  HostCache& hosts_;
  Stats& stats_;
  std::unordered_map<SocketAddress, std::vector<Idle>, SocketAddressHash> byHost_;
  // Written by the loop thread only (a relaxed load plus store, like Stats).
  std::atomic<size_t> idle_{0};
  void addIdle(int delta) { idle_.store(idle_.load(std::memory_order_relaxed) + static_cast<size_t>(delta), std::memory_order_relaxed); }
};

// true when the idle connection fd is still open and quiet (no EOF, no data, no error).
bool idleConnectionUsable(int fd);

}  // namespace splicegate
