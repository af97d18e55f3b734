// Envoy's ORIGINAL_DST dynamic hosts, per worker: one entry per original destination (ip + port),
// created on first use, holding that host's limits and counters, and removed once it has had no
// active connection for cleanup_interval. Bounded by maxHosts: when full, the least recently used
// idle host is evicted; when no host is idle, a new destination is refused (host_overflow).
//
// Per worker: each worker's map needs no lock and the relay path never leaves its thread, and a
// destination used by two workers has two entries, which the admin layer merges by address. The
// per-host limits are the exception: with a SharedHostCounts (the addon passes the process's),
// each entry reserves its connections in the process-wide slot for its address, so
// maxConnectionsPerHost and maxPendingPerHost bound the whole process (every worker, every config
// generation, orphaned loops), not one worker. Without one (core tests) they bound this cache.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "host_latency.h"
#include "intrusive_list.h"
#include "shared_host_counts.h"
#include "socket_address.h"

namespace splicegate {

#define SPLICEGATE_HOST_STATS(X) \
  X(cx_total)                    \
  X(cx_active)                   \
  X(cx_pending)                  \
  X(cx_connect_fail)             \
  X(cx_connect_timeout)          \
  X(cx_overflow)                 \
  X(rx_bytes)                    \
  X(tx_bytes)                    \
  X(rq_total)                    /* HTTP listener: requests sent to this host */ \
  X(cx_reuse)                    /* of those, on a pooled keep-alive connection */ \
  X(pool_miss)                   /* no idle pooled connection: a new one was opened */

enum class HostStat : size_t {
#define SPLICEGATE_HOST_STAT_ENUM(name) name,
  SPLICEGATE_HOST_STATS(SPLICEGATE_HOST_STAT_ENUM)
#undef SPLICEGATE_HOST_STAT_ENUM
      kCount
};

inline constexpr const char* kHostStatNames[] = {
#define SPLICEGATE_HOST_STAT_NAME(name) #name,
    SPLICEGATE_HOST_STATS(SPLICEGATE_HOST_STAT_NAME)
#undef SPLICEGATE_HOST_STAT_NAME
};

struct Host {
  explicit Host(const SocketAddress& a) : address(a) {}
  SocketAddress address;
  uint64_t stats[static_cast<size_t>(HostStat::kCount)] = {};
  uint64_t idleSinceUs = 0;  // valid while in the idle list
  ListNode idleNode;         // linked while cx_active == 0, oldest first
  // Where its connections' per-host latency samples go (WorkerLatency); refreshed by each new
  // connection's attach, so it is always the host's latest slot. Kept here, once per host, rather
  // than in each of its connections.
  HostRef latencyRef;
  // The process-wide counts for this address (HostCache with SharedHostCounts), else null. This
  // entry's own cx_active / cx_pending are exactly what it has reserved there.
  SharedHostCounts::Slot* shared = nullptr;

  uint64_t& stat(HostStat s) { return stats[static_cast<size_t>(s)]; }
  uint64_t active() const { return stats[static_cast<size_t>(HostStat::cx_active)]; }
  uint64_t pending() const { return stats[static_cast<size_t>(HostStat::cx_pending)]; }
};

struct HostLimits {
  size_t maxHosts = 10000;
  uint64_t maxConnectionsPerHost = 1024;
  uint64_t maxPendingPerHost = 1024;
};

class HostCache {
 public:
  explicit HostCache(HostLimits limits, SharedHostCounts* shared = nullptr) : limits_(limits), shared_(shared) {
    map_.reserve(64);
  }
  // Called just before a host is removed (evicted or swept), e.g. to close its warm sockets.
  void setEraseHook(std::function<void(const Host&)> hook) { eraseHook_ = std::move(hook); }
  ~HostCache();
  HostCache(const HostCache&) = delete;
  HostCache& operator=(const HostCache&) = delete;

  enum class Admit { kOk, kHostOverflow, kConnectionOverflow, kPendingOverflow };

  // Finds or creates the host for dst and reserves a pending connect on it. On kOk, *out is the
  // host and the caller must later call connectDone() then connectionClosed().
  Admit admit(const SocketAddress& dst, uint64_t nowUs, Host** out);
  // The connect finished (either way): no longer pending.
  void connectDone(Host& host);
  void connectionClosed(Host& host, uint64_t nowUs);

  // Removes hosts idle for at least cleanupUs. Returns how many were removed.
  size_t sweep(uint64_t nowUs, uint64_t cleanupUs);

  size_t size() const { return map_.size(); }
  uint64_t evictions() const { return evictions_; }
  uint64_t removedIdle() const { return removedIdle_; }
  const HostLimits& limits() const { return limits_; }

  template <typename F>
  void forEach(F&& fn) const {
    for (const auto& entry : map_) fn(*entry.second);
  }

 private:
  void erase(Host& host);
  // Gives back what the host still has reserved in the shared counts and lets go of its slot.
  void releaseShared(Host& host);

  HostLimits limits_;
  SharedHostCounts* shared_;
  std::function<void(const Host&)> eraseHook_;
  std::unordered_map<SocketAddress, std::unique_ptr<Host>, SocketAddressHash> map_;
  IntrusiveList<Host, &Host::idleNode> idle_;
  uint64_t evictions_ = 0;
  uint64_t removedIdle_ = 0;
};

}  // namespace splicegate
