#include "own_sockets.h"

#include <sys/socket.h>

#include <cstring>
#include <utility>

namespace splicegate {

OwnSockets& OwnSockets::process() {
  // Never destroyed: a loop thread may still close its last upstream socket during process exit.
  static OwnSockets* const registry = new OwnSockets();
  return *registry;
}

namespace {

// The IP bytes of an IPv4 or IPv6 address into out[16]; other families leave it zero.
void copyIp(const SocketAddress& address, uint8_t* out) {
  if (address.family() == AF_INET) {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in*>(address.sockaddrPtr())->sin_addr, 4);
  } else if (address.family() == AF_INET6) {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in6*>(address.sockaddrPtr())->sin6_addr, 16);
  }
}

}  // namespace

OwnSockets::Key::Key(const SocketAddress& local, const SocketAddress& remote)
    : localFamily(static_cast<uint8_t>(local.family())),
      remoteFamily(static_cast<uint8_t>(remote.family())),
      localPort(local.port()),
      remotePort(remote.port()) {
  copyIp(local, localIp);
  copyIp(remote, remoteIp);
}

bool OwnSockets::Key::operator==(const Key& o) const {
  return localFamily == o.localFamily && remoteFamily == o.remoteFamily && localPort == o.localPort &&
         remotePort == o.remotePort && std::memcmp(localIp, o.localIp, sizeof localIp) == 0 &&
         std::memcmp(remoteIp, o.remoteIp, sizeof remoteIp) == 0;
}

size_t OwnSockets::KeyHash::operator()(const Key& k) const noexcept {
  // FNV-1a over the fields (not the padding-free struct as a whole, to stay layout-independent).
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  };
  mix(&k.localFamily, 1);
  mix(&k.remoteFamily, 1);
  mix(&k.localPort, 2);
  mix(&k.remotePort, 2);
  mix(k.localIp, k.localFamily == AF_INET ? 4 : 16);
  mix(k.remoteIp, k.remoteFamily == AF_INET ? 4 : 16);
  return static_cast<size_t>(h);
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
  owner_->remove(*key_);
  owner_ = nullptr;
  key_ = nullptr;
}

OwnSockets::Registration OwnSockets::add(int fd, const SocketAddress& remote) {
  SocketAddress local;
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(fd, local.sockaddrPtr(), &len) < 0 || local.port() == 0) return Registration();
  return add(Key(local, remote));
}

OwnSockets::Registration OwnSockets::add(const Key& key) {
  Shard& shard = shardFor(key.localPort);
  const Key* stored = nullptr;
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto it = shard.counts.try_emplace(key, 0).first;
    ++it->second;
    stored = &it->first;
  }
  size_.fetch_add(1, std::memory_order_relaxed);
  return Registration(this, stored);
}

void OwnSockets::remove(const Key& key) {
  // key may be the entry's own key: it is read before the entry is erased, never after.
  Shard& shard = shardFor(key.localPort);
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
  const Key key(peer, destination);
  const Shard& shard = shardFor(key.localPort);
  std::lock_guard<std::mutex> lock(shard.mutex);
  return shard.counts.find(key) != shard.counts.end();
}

}  // namespace splicegate
