#include "own_sockets.h"

#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace splicegate {

namespace {

// The live registries, by the index a Registration keeps instead of a pointer. Written under the
// mutex when one is made or destroyed; read without it by a Registration, which exists only after
// its registry's add() returned and dies before its registry.
std::atomic<OwnSockets*> gRegistries[OwnSockets::kMaxRegistries];
std::mutex gRegistriesMutex;

// The IP bytes of an IPv4 or IPv6 address into out[16]; other families leave it zero.
void copyIp(const SocketAddress& address, uint8_t* out) {
  if (address.family() == AF_INET) {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in*>(address.sockaddrPtr())->sin_addr, 4);
  } else if (address.family() == AF_INET6) {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in6*>(address.sockaddrPtr())->sin6_addr, 16);
  }
}

// murmur3's 64-bit finaliser: within one shard every local port has the same low bits, so the
// slot index needs all bits mixed.
uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

// Table sizes: grown by half when more than 4/5 full, halved when less than 1/4 full (never
// below kMinCapacity), so a table stays between 1/2 and 4/5 full once it has grown, and a burst
// of connections gives its memory back when they close.
constexpr uint32_t kMinCapacity = 8;
bool overFull(size_t size, size_t capacity) { return size * 5 > capacity * 4; }

}  // namespace

OwnSockets& OwnSockets::process() {
  // Never destroyed: a loop thread may still close its last upstream socket during process exit.
  static OwnSockets* const registry = new OwnSockets();
  return *registry;
}

OwnSockets::OwnSockets() {
  std::lock_guard<std::mutex> lock(gRegistriesMutex);
  for (size_t i = 0; i < kMaxRegistries; ++i) {
    if (gRegistries[i].load(std::memory_order_relaxed) == nullptr) {
      index_ = static_cast<uint16_t>(i);
      gRegistries[i].store(this, std::memory_order_release);
      return;
    }
  }
  // A programming error (registries are one per process), not an input: nothing to recover.
  std::fprintf(stderr, "splicegate: more than %zu OwnSockets registries alive\n", kMaxRegistries);
  std::abort();
}

OwnSockets::~OwnSockets() {
  std::lock_guard<std::mutex> lock(gRegistriesMutex);
  gRegistries[index_].store(nullptr, std::memory_order_release);
}

OwnSockets& OwnSockets::registryAt(uint16_t index) {
  return *gRegistries[index].load(std::memory_order_acquire);
}

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

bool OwnSockets::asV4(const Key& key, V4Key& out) {
  if (key.localFamily != AF_INET || key.remoteFamily != AF_INET || key.localPort == 0) return false;
  std::memcpy(&out.localIp, key.localIp, 4);
  std::memcpy(&out.remoteIp, key.remoteIp, 4);
  out.localPort = key.localPort;
  out.remotePort = key.remotePort;
  return true;
}

// --- V4Table ------------------------------------------------------------------------------------

size_t OwnSockets::V4Table::home(const V4Key& key) const {
  const uint64_t ips = (static_cast<uint64_t>(key.localIp) << 32) | key.remoteIp;
  const uint64_t ports = (static_cast<uint64_t>(key.localPort) << 16) | key.remotePort;
  const uint32_t h = static_cast<uint32_t>(mix64(ips ^ mix64(ports)) >> 32);
  // Multiply-shift onto [0, capacity): capacities need not be powers of two.
  return static_cast<size_t>((static_cast<uint64_t>(h) * capacity_) >> 32);
}

size_t OwnSockets::V4Table::find(const V4Key& key) const {
  if (size_ == 0) return capacity_;
  for (size_t i = home(key);; i = i + 1 == capacity_ ? 0 : i + 1) {
    if (slots_[i].localPort == 0) return capacity_;  // the table is never full: this ends
    if (slots_[i] == key) return i;
  }
}

bool OwnSockets::V4Table::contains(const V4Key& key) const { return find(key) != capacity_; }

void OwnSockets::V4Table::insert(const V4Key& key) {
  if (capacity_ == 0 || overFull(size_ + 1, capacity_)) {
    const size_t grown = capacity_ + capacity_ / 2;
    resize(grown < kMinCapacity ? kMinCapacity : grown);
  }
  size_t i = home(key);
  while (slots_[i].localPort != 0) i = i + 1 == capacity_ ? 0 : i + 1;
  slots_[i] = key;
  ++size_;
}

bool OwnSockets::V4Table::remove(const V4Key& key) {
  size_t hole = find(key);
  if (hole == capacity_) return false;
  // Backward-shift deletion (Knuth, Algorithm R): move back every later slot of the run that
  // the hole now separates from its home, so a probe never stops early at the emptied slot.
  for (size_t j = hole;;) {
    j = j + 1 == capacity_ ? 0 : j + 1;
    if (slots_[j].localPort == 0) break;
    const size_t k = home(slots_[j]);
    const bool staysPut = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
    if (staysPut) continue;
    slots_[hole] = slots_[j];
    hole = j;
  }
  slots_[hole] = V4Key{};
  --size_;
  if (size_ == 0) {
    slots_.reset();  // an idle registry holds no table
    capacity_ = 0;
  } else if (capacity_ > kMinCapacity && size_ * 4 < capacity_) {
    resize(capacity_ / 2 < kMinCapacity ? kMinCapacity : capacity_ / 2);
  }
  return true;
}

void OwnSockets::V4Table::resize(size_t capacity) {
  std::unique_ptr<V4Key[]> old = std::move(slots_);
  const size_t oldCapacity = capacity_;
  slots_.reset(new V4Key[capacity]);
  capacity_ = static_cast<uint32_t>(capacity);
  for (size_t i = 0; i < oldCapacity; ++i) {
    if (old[i].localPort == 0) continue;
    size_t j = home(old[i]);
    while (slots_[j].localPort != 0) j = j + 1 == capacity_ ? 0 : j + 1;
    slots_[j] = old[i];
  }
}

// --- Registration -------------------------------------------------------------------------------

OwnSockets::Registration::Registration(uint16_t registry, const V4Key& key) : registry_(registry), kind_(Kind::kV4) {
  entry_.v4 = key;
}

OwnSockets::Registration::Registration(uint16_t registry, const Key* key) : registry_(registry), kind_(Kind::kOther) {
  std::memcpy(entry_.other, &key, sizeof key);
}

const OwnSockets::Key* OwnSockets::Registration::otherKey() const {
  const Key* key = nullptr;
  std::memcpy(&key, entry_.other, sizeof key);
  return key;
}

OwnSockets::Registration& OwnSockets::Registration::operator=(Registration&& o) noexcept {
  if (this != &o) {
    reset();
    entry_ = o.entry_;
    registry_ = o.registry_;
    kind_ = std::exchange(o.kind_, Kind::kNone);
  }
  return *this;
}

void OwnSockets::Registration::reset() {
  if (kind_ == Kind::kNone) return;
  OwnSockets& owner = registryAt(registry_);
  if (kind_ == Kind::kV4) owner.remove(entry_.v4);
  else owner.remove(*otherKey());
  kind_ = Kind::kNone;
}

// --- OwnSockets ---------------------------------------------------------------------------------

OwnSockets::Registration OwnSockets::add(int fd, const SocketAddress& remote) {
  SocketAddress local;
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(fd, local.sockaddrPtr(), &len) < 0 || local.port() == 0) return Registration();
  return add(Key(local, remote));
}

OwnSockets::Registration OwnSockets::add(const Key& key) {
  Shard& shard = shardFor(key.localPort);
  V4Key v4;
  if (asV4(key, v4)) {
    {
      std::lock_guard<std::mutex> lock(shard.mutex);
      shard.v4.insert(v4);
    }
    size_.fetch_add(1, std::memory_order_relaxed);
    return Registration(index_, v4);
  }
  const Key* stored = nullptr;
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto it = shard.counts.try_emplace(key, 0).first;
    ++it->second;
    stored = &it->first;
  }
  size_.fetch_add(1, std::memory_order_relaxed);
  return Registration(index_, stored);
}

void OwnSockets::remove(const V4Key& key) {
  Shard& shard = shardFor(key.localPort);
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (!shard.v4.remove(key)) return;
  }
  size_.fetch_sub(1, std::memory_order_relaxed);
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
  V4Key v4;
  if (asV4(key, v4)) {
    std::lock_guard<std::mutex> lock(shard.mutex);
    return shard.v4.contains(v4);
  }
  std::lock_guard<std::mutex> lock(shard.mutex);
  return shard.counts.find(key) != shard.counts.end();
}

}  // namespace splicegate
