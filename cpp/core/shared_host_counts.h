// Per-host connection counts shared by every worker of the process, so that the per-host circuit
// breakers (cluster.max_connections, cluster.max_pending) hold for the process as a whole: across
// workers, across config generations that overlap during a reload (the old one still relays, the
// new one admits), and across a worker's death (its loop relays on as an orphan while the
// replacement admits). Each worker's HostCache keeps its own Host entries (stats, idle list, warm
// sockets) and points each at the process's slot for that address.
//
// Cost: a mutex only where a worker creates or drops a host entry (first use, cleanup, eviction);
// admitting and closing a connection is one atomic add each, on the worker's own thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "socket_address.h"

namespace splicegate {

class SharedHostCounts {
 public:
  struct Slot {
    std::atomic<uint64_t> active{0};
    std::atomic<uint64_t> pending{0};
    size_t holders = 0;  // host entries pointing here; guarded by the owner's mutex
  };

  SharedHostCounts() = default;
  SharedHostCounts(const SharedHostCounts&) = delete;
  SharedHostCounts& operator=(const SharedHostCounts&) = delete;

  // The slot for an address, created on first use. Every acquire is paired with one release.
  Slot* acquire(const SocketAddress& address);
  void release(const SocketAddress& address, Slot* slot);

  // Reserves one connection (and one pending connect) within the limits: never more than `maxActive`
  // active or `maxPending` pending are reserved at once, whichever workers reserve them.
  enum class Reserve { kOk, kConnectionOverflow, kPendingOverflow };
  static Reserve reserve(Slot& slot, uint64_t maxActive, uint64_t maxPending);

  // Hosts with at least one holder (for tests).
  size_t size() const;

  // The process's instance (the addon's workers and orphans); never destroyed, like the orphan
  // registry, since orphaned loops may still hold slots at exit.
  static SharedHostCounts& process();

 private:
  mutable std::mutex mutex_;
  std::unordered_map<SocketAddress, std::unique_ptr<Slot>, SocketAddressHash> slots_;
};

}  // namespace splicegate
