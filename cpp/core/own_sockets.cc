#include "own_sockets.h"

#include <sys/socket.h>

#include <utility>

namespace splicegate {

OwnSockets& OwnSockets::process() {
  // Never destroyed: a loop thread may still close its last upstream socket during process exit.
  static OwnSockets* const registry = new OwnSockets();
  return *registry;
}

OwnSockets::Registration& OwnSockets::Registration::operator=(Registration&& o) noexcept {
  if (this != &o) {
    reset();
    owner_ = std::exchange(o.owner_, nullptr);
    key_ = o.key_;
  }
  return *this;
}

void OwnSockets::Registration::reset() {
  if (owner_ == nullptr) return;
  owner_->remove(key_);
  owner_ = nullptr;
}

OwnSockets::Registration OwnSockets::add(int fd, const SocketAddress& remote) {
  Key key;
  key.remote = remote;
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(fd, key.local.sockaddrPtr(), &len) < 0 || key.local.port() == 0) return Registration();
  return add(key);
}

OwnSockets::Registration OwnSockets::add(const Key& key) {
  Shard& shard = shardFor(key.local);
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    ++shard.counts[key];
  }
  size_.fetch_add(1, std::memory_order_relaxed);
  return Registration(this, key);
}

void OwnSockets::remove(const Key& key) {
  Shard& shard = shardFor(key.local);
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto it = shard.counts.find(key);
    if (it == shard.counts.end()) return;
    if (--it->second == 0) shard.counts.erase(it);
  }
  size_.fetch_sub(1, std::memory_order_relaxed);
}

bool OwnSockets::contains(const SocketAddress& peer, const SocketAddress& destination) const {
  if (size() == 0) return false;
  const Key key{peer, destination};
  const Shard& shard = shardFor(peer);
  std::lock_guard<std::mutex> lock(shard.mutex);
  return shard.counts.find(key) != shard.counts.end();
}

}  // namespace splicegate
