#include "warm_pool.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "upstream_socket.h"

namespace splicegate {

namespace {
// EPOLLIN as well as RDHUP: on a client-speaks-first protocol any byte from the server means the
// socket is not the fresh stream a client expects.
constexpr uint32_t kWarmEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
}  // namespace

void WarmSocket::onEvents(uint32_t events) { pool->onEvents(*this, events); }

WarmPool::~WarmPool() {
  while (age_.popFront()) {
  }
  for (auto& entry : byHost_) ctx_.stats.sub(Stat::upstream_cx_active, entry.second.size());
}

bool WarmPool::enabledFor(const Host& host) const {
  const CoreOptions& o = ctx_.options;
  // Original source binds each upstream socket to its client's IP: a warm one has no client yet.
  if (o.preconnectPerHost == 0 || o.originalSource) return false;
  return std::find(o.preconnectPorts.begin(), o.preconnectPorts.end(), host.address.port()) != o.preconnectPorts.end();
}

void WarmPool::topUp(const Host& host) {
  if (!enabledFor(host)) return;
  auto& sockets = byHost_[&host];
  Stats& stats = ctx_.stats;
  while (sockets.size() < ctx_.options.preconnectPerHost) {
    auto socket = std::make_unique<WarmSocket>();
    socket->pool = this;
    socket->host = &host;
    socket->createdUs = ctx_.loop.nowUs();
    const UpstreamOpen opened =
        openUpstream(host.address, ctx_.options.upstreamMark, socket->fd, &socket->registration);
    if (opened != UpstreamOpen::kInProgress) return;  // try again on the next use of the host
    if (ctx_.loop.add(socket->fd.get(), kWarmEvents, socket.get())) return;
    stats.add(Stat::upstream_cx_total);
    stats.add(Stat::upstream_cx_active);
    stats.add(Stat::upstream_cx_preconnect);
    age_.pushBack(socket.get());
    sockets.push_back(std::move(socket));
  }
}

RegisteredUpstream WarmPool::take(const Host& host) {
  auto it = byHost_.find(&host);
  if (it == byHost_.end()) return RegisteredUpstream();
  auto& sockets = it->second;
  for (size_t i = 0; i < sockets.size();) {
    WarmSocket& s = *sockets[i];
    if (!s.connected) {
      ++i;
      continue;
    }
    // The server may have closed it since the last event we saw: peek before handing it out.
    char byte;
    const ssize_t n = ::recv(s.fd.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN) {
      std::unique_ptr<WarmSocket> owned = detach(s);
      ctx_.stats.add(Stat::upstream_cx_preconnect_used);
      // Still counted in upstream_cx_active and still in the registry: the connection owns both now.
      RegisteredUpstream upstream{std::move(owned->fd), std::move(owned->registration)};
      // The empty shell outlives the batch: an event of it may still name the shell, and finds it
      // without an fd (onEvents ignores it). Freed with the dropped ones after the batch.
      graveyard_.push_back(std::move(owned));
      return upstream;
    }
    drop(s);  // closed, errored or spoke first; drop() erased it from `sockets`
  }
  return RegisteredUpstream();
}

void WarmPool::expire(uint64_t nowUs) {
  const uint64_t ttlUs = static_cast<uint64_t>(ctx_.options.preconnectTtlMs) * 1000;
  while (WarmSocket* oldest = age_.front()) {
    if (oldest->createdUs + ttlUs > nowUs) break;
    drop(*oldest);
  }
}

size_t WarmPool::evictOldest(size_t n) {
  size_t dropped = 0;
  while (dropped < n) {
    WarmSocket* oldest = age_.front();
    if (!oldest) break;
    drop(*oldest, Stat::upstream_cx_preconnect_evicted_fd_pressure);
    ++dropped;
  }
  return dropped;
}

void WarmPool::dropHost(const Host& host) {
  auto it = byHost_.find(&host);
  if (it == byHost_.end()) return;
  while (!it->second.empty()) drop(*it->second.back());
  byHost_.erase(&host);
}

void WarmPool::onEvents(WarmSocket& socket, uint32_t events) {
  if (!socket.fd) return;  // dropped earlier in this batch
  if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP | EPOLLIN)) {
    drop(socket);
    return;
  }
  if (events & EPOLLOUT) socket.connected = true;
}

std::unique_ptr<WarmSocket> WarmPool::detach(WarmSocket& socket) {
  age_.remove(&socket);
  auto& sockets = byHost_[socket.host];
  auto it = std::find_if(sockets.begin(), sockets.end(), [&](const auto& p) { return p.get() == &socket; });
  std::unique_ptr<WarmSocket> owned = std::move(*it);
  sockets.erase(it);
  return owned;
}

void WarmPool::drop(WarmSocket& socket, Stat counted) {
  std::unique_ptr<WarmSocket> owned = detach(socket);
  owned->registration.reset();  // before the close: the 4-tuple is free for reuse after it
  owned->fd.reset();  // closing also removes it from epoll
  ctx_.stats.sub(Stat::upstream_cx_active);
  ctx_.stats.add(counted);
  graveyard_.push_back(std::move(owned));
}

}  // namespace splicegate
