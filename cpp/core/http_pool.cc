#include "http_pool.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace splicegate {

bool idleConnectionUsable(int fd) {
  char byte;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void UpstreamLink::onEvents(uint32_t events) {
  if (session_) {
    session_->onEvents(events);
  } else if (pooledFor_) {
    pool_.idleEvent(*this, events);
  }
  // Neither: retired, its socket closed; the event was queued before that.
}

HttpPool::~HttpPool() {
  clear();
  disposeRetired();
}

UpstreamLink* HttpPool::newLink(EventHandler& holder) {
  auto* link = new UpstreamLink(*this);
  link->session_ = &holder;
  return link;
}

void HttpPool::retire(UpstreamLink* link) {
  if (!link) return;
  age_.remove(link);
  link->session_ = nullptr;
  link->pooledFor_ = nullptr;
  retired_.push_back(link);
}

void HttpPool::disposeRetired() {
  for (UpstreamLink* link : retired_) delete link;
  retired_.clear();
}

void HttpPool::discard(Idle& entry, Stat counted) {
  stats_.add(counted);
  stats_.sub(Stat::upstream_cx_active);
  // The registry entry goes before the fd closes (the kernel may reuse the 4-tuple after).
  entry.upstream.registration = OwnSockets::Registration{};
  entry.upstream.fd.reset();
  retire(entry.link);
  entry.link = nullptr;
  hosts_.connectionClosed(*entry.host, EventLoop::monotonicUs());
  addIdle(-1);
}

void HttpPool::idleEvent(UpstreamLink& link, uint32_t events) {
  // Writability is the tail of the last exchange (its request acknowledged); all else is the
  // server's doing: a response nobody asked for (a 408 before its close, say), its FIN, a reset,
  // urgent data.
  if (!(events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
  auto it = byHost_.find(link.pooledFor_->address);
  if (it == byHost_.end()) return;
  std::vector<Idle>& list = it->second;
  auto entry = std::find_if(list.begin(), list.end(), [&link](const Idle& e) { return e.link == &link; });
  if (entry == list.end()) return;
  // Readable alone may be old news: the session that pooled it may have read those bytes (its
  // response's last) earlier in this batch, and epoll filled in this event before either.
  const bool readableOnly = !(events & (EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR));
  if (readableOnly && idleConnectionUsable(entry->upstream.fd.get())) return;
  discard(*entry);
  list.erase(entry);
  if (list.empty()) byHost_.erase(it);
}

bool HttpPool::discardLink(UpstreamLink& link, Stat counted) {
  if (!link.pooledFor_) return false;
  auto it = byHost_.find(link.pooledFor_->address);
  if (it == byHost_.end()) return false;
  std::vector<Idle>& list = it->second;
  auto entry = std::find_if(list.begin(), list.end(), [&link](const Idle& e) { return e.link == &link; });
  if (entry == list.end()) return false;
  discard(*entry, counted);
  list.erase(entry);
  if (list.empty()) byHost_.erase(it);
  return true;
}

size_t HttpPool::evictOldest(size_t n, Stat counted) {
  size_t closed = 0;
  while (closed < n) {
    UpstreamLink* oldest = age_.front();
    if (!oldest) break;
    age_.remove(oldest);  // retiring does too; this way a link missing from byHost_ cannot loop
    if (discardLink(*oldest, counted)) ++closed;
  }
  return closed;
}

HttpPool::Taken HttpPool::take(const SocketAddress& destination, EventHandler& holder, bool verify) {
  Taken out;
  auto it = byHost_.find(destination);
  if (it == byHost_.end()) return out;
  std::vector<Idle>& list = it->second;
  while (!list.empty()) {
    Idle entry = std::move(list.back());
    list.pop_back();
    // Every event of an idle connection that an earlier batch reported was handled (idleEvent), so
    // only one still waiting in this batch can say it is dead (or one after the batch's
    // epoll_wait, which verify is for).
    if ((verify || entry.link->eventPending()) && !idleConnectionUsable(entry.upstream.fd.get())) {
      discard(entry);
      continue;
    }
    addIdle(-1);
    age_.remove(entry.link);
    entry.link->pooledFor_ = nullptr;
    entry.link->session_ = &holder;
    out.upstream = std::move(entry.upstream);
    out.link = entry.link;
    out.host = entry.host;
    break;
  }
  if (list.empty()) byHost_.erase(it);
  return out;
}

bool HttpPool::put(Host& host, RegisteredUpstream upstream, UpstreamLink* link, uint64_t nowUs) {
  std::vector<Idle>* list = nullptr;
  if (maxIdlePerHost_ != 0) {
    list = &byHost_[host.address];
    if (list->size() >= maxIdlePerHost_) list = nullptr;
  }
  if (!list) {
    // Closed with upstream (registry entry first: RegisteredUpstream's member order).
    retire(link);
    return false;
  }
  // At the total bound the oldest makes room: the newest is the likeliest to be asked for again,
  // and the oldest the nearest to idle_timeout (and to the server's own keep-alive timeout).
  // Not a host's own: its list is full only at max_idle_per_host, handled above.
  if (maxIdle_ != 0 && idleCount() >= maxIdle_) {
    evictOldest(idleCount() - maxIdle_ + 1, Stat::http_pool_evicted_max_idle);
    list = &byHost_[host.address];  // evicting may have emptied and erased this host's list
  }
  link->session_ = nullptr;
  link->pooledFor_ = &host;
  list->push_back(Idle{std::move(upstream), link, &host, nowUs});
  age_.pushBack(link);
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
