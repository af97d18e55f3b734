#include "host_cache.h"

namespace splicegate {

HostCache::~HostCache() {
  // Unlink before the map frees the hosts, so the list never points into freed memory.
  while (idle_.popFront()) {
  }
  // Hosts with connections still counted (a core closed with connections open): their share of the
  // process-wide counts goes back, or the slots would refuse that host forever.
  for (auto& entry : map_) releaseShared(*entry.second);
}

HostCache::Admit HostCache::admit(const SocketAddress& dst, uint64_t nowUs, Host** out) {
  auto it = map_.find(dst);
  Host* host;
  if (it != map_.end()) {
    host = it->second.get();
  } else {
    if (map_.size() >= limits_.maxHosts) {
      // Full: make room by evicting the host that has been idle longest; if every host has
      // active connections, refuse rather than grow without bound.
      Host* victim = idle_.front();
      if (!victim) return Admit::kHostOverflow;
      erase(*victim);
      ++evictions_;
    }
    auto created = std::make_unique<Host>(dst);
    host = created.get();
    map_.emplace(dst, std::move(created));
    host->idleSinceUs = nowUs;
    idle_.pushBack(host);
    if (shared_) host->shared = shared_->acquire(dst);
  }
  if (host->shared) {
    switch (SharedHostCounts::reserve(*host->shared, limits_.maxConnectionsPerHost, limits_.maxPendingPerHost)) {
      case SharedHostCounts::Reserve::kOk:
        break;
      case SharedHostCounts::Reserve::kConnectionOverflow:
        ++host->stat(HostStat::cx_overflow);
        return Admit::kConnectionOverflow;
      case SharedHostCounts::Reserve::kPendingOverflow:
        ++host->stat(HostStat::cx_overflow);
        return Admit::kPendingOverflow;
    }
  } else if (host->active() >= limits_.maxConnectionsPerHost) {
    ++host->stat(HostStat::cx_overflow);
    return Admit::kConnectionOverflow;
  } else if (host->pending() >= limits_.maxPendingPerHost) {
    ++host->stat(HostStat::cx_overflow);
    return Admit::kPendingOverflow;
  }
  idle_.remove(host);
  ++host->stat(HostStat::cx_total);
  ++host->stat(HostStat::cx_active);
  ++host->stat(HostStat::cx_pending);
  *out = host;
  return Admit::kOk;
}

void HostCache::connectDone(Host& host) {
  if (host.pending() == 0) return;
  --host.stat(HostStat::cx_pending);
  if (host.shared) host.shared->pending.fetch_sub(1, std::memory_order_relaxed);
}

void HostCache::connectionClosed(Host& host, uint64_t nowUs) {
  if (host.active() > 0) {
    --host.stat(HostStat::cx_active);
    if (host.shared) host.shared->active.fetch_sub(1, std::memory_order_relaxed);
  }
  if (host.active() == 0 && !host.idleNode.linked()) {
    host.idleSinceUs = nowUs;
    idle_.pushBack(&host);  // appended in time order: the list stays oldest-first
  }
}

size_t HostCache::sweep(uint64_t nowUs, uint64_t cleanupUs) {
  size_t removed = 0;
  while (Host* oldest = idle_.front()) {
    if (oldest->idleSinceUs + cleanupUs > nowUs) break;
    erase(*oldest);
    ++removed;
  }
  removedIdle_ += removed;
  return removed;
}

void HostCache::erase(Host& host) {
  if (eraseHook_) eraseHook_(host);
  idle_.remove(&host);
  releaseShared(host);
  const SocketAddress key = host.address;  // the key must outlive the host it names
  map_.erase(key);
}

void HostCache::releaseShared(Host& host) {
  if (!host.shared) return;
  host.shared->active.fetch_sub(host.active(), std::memory_order_relaxed);
  host.shared->pending.fetch_sub(host.pending(), std::memory_order_relaxed);
  shared_->release(host.address, host.shared);
  host.shared = nullptr;
}

}  // namespace splicegate
