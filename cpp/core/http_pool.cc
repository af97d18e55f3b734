#include "http_pool.h"

#include <sys/socket.h>

#include <cerrno>

#include "event_loop.h"

namespace splicegate {

bool idleConnectionUsable(int fd) {
  char byte;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

HttpPool::~HttpPool() { clear(); }

void HttpPool::discard(Idle& entry) {
  stats_.add(Stat::http_pool_discarded);
  stats_.sub(Stat::upstream_cx_active);
  // The registry entry goes before the fd closes (the kernel may reuse the 4-tuple after).
  entry.upstream.registration = OwnSockets::Registration{};
  entry.upstream.fd.reset();
  hosts_.connectionClosed(*entry.host, EventLoop::monotonicUs());
  addIdle(-1);
}

HttpPool::Taken HttpPool::take(const SocketAddress& destination) {
  Taken out;
  auto it = byHost_.find(destination);
  if (it == byHost_.end()) return out;
  std::vector<Idle>& list = it->second;
  while (!list.empty()) {
    Idle entry = std::move(list.back());
    list.pop_back();
    if (!idleConnectionUsable(entry.upstream.fd.get())) {
      discard(entry);
      continue;
    }
    addIdle(-1);
    out.upstream = std::move(entry.upstream);
    out.host = entry.host;
    break;
  }
  if (list.empty()) byHost_.erase(it);
  return out;
}

bool HttpPool::put(Host& host, RegisteredUpstream upstream, uint64_t nowUs) {
  if (maxIdlePerHost_ == 0) return false;
  std::vector<Idle>& list = byHost_[host.address];
  if (list.size() >= maxIdlePerHost_) return false;
  list.push_back(Idle{std::move(upstream), &host, nowUs});
  addIdle(1);
  return true;
}

void HttpPool::expire(uint64_t nowUs) {
  for (auto it = byHost_.begin(); it != byHost_.end();) {
    std::vector<Idle>& list = it->second;
    // Oldest first: entries are appended as they become idle.
    size_t keep = 0;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].sinceUs + idleTimeoutUs_ <= nowUs) {
        discard(list[i]);
      } else {
        if (keep != i) list[keep] = std::move(list[i]);
        ++keep;
      }
    }
    list.resize(keep);
    it = list.empty() ? byHost_.erase(it) : std::next(it);
  }
}

void HttpPool::clear() {
  for (auto& [address, list] : byHost_) {
    for (Idle& entry : list) discard(entry);
  }
  byHost_.clear();
}

}  // namespace splicegate
