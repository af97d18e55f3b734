#include "own_sockets.h"

#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

namespace splicegate {

namespace {

// The live registries, by the index a Registration keeps instead of a pointer. Written under the
// mutex when one is made or destroyed; read without it by a Registration, which exists only after
// its registry's add() returned and dies before its registry.
std::atomic<OwnSockets*> gRegistries[OwnSockets::kMaxRegistries];
std::mutex gRegistriesMutex;

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

// Index sizes: grown by half when more than 4/5 full, halved when less than 1/4 full (never
// below kMinCapacity), so an index is 1/4 to 4/5 full (1/2 to 4/5 while connections only grow),
// and a burst of connections gives its index back as they close (its entries' blocks once the
// shard is empty).
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
  local.copyIpTo(localIp);
  remote.copyIpTo(remoteIp);
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
  return static_cast<size_t>(mix64(h));  // FNV's last bytes reach the high bits only weakly
}

size_t OwnSockets::V4Hash::operator()(const V4Key& k) const noexcept {
  const uint64_t ips = (static_cast<uint64_t>(k.localIp) << 32) | k.remoteIp;
  const uint64_t ports = (static_cast<uint64_t>(k.localPort) << 16) | k.remotePort;
  return static_cast<size_t>(mix64(ips ^ mix64(ports)));
}

bool OwnSockets::asV4(const Key& key, V4Key& out) {
  if (key.localFamily != AF_INET || key.remoteFamily != AF_INET) return false;
  std::memcpy(&out.localIp, key.localIp, 4);
  std::memcpy(&out.remoteIp, key.remoteIp, 4);
  out.localPort = key.localPort;
  out.remotePort = key.remotePort;
  return true;
}

// --- Table --------------------------------------------------------------------------------------

template <class K, class Hash>
size_t OwnSockets::Table<K, Hash>::home(const K& key) const {
  // The hash's high half, multiply-shifted onto [0, capacity): capacities need not be powers of
  // two.
  const uint64_t h = static_cast<uint64_t>(Hash()(key)) >> 32;
  return static_cast<size_t>((h * capacity_) >> 32);
}

template <class K, class Hash>
bool OwnSockets::Table<K, Hash>::contains(const K& key) const {
  if (size_ == 0) return false;
  for (size_t i = home(key);; i = i + 1 == capacity_ ? 0 : i + 1) {
    if (index_[i] == 0) return false;  // the index is never full: this ends
    if (at(index_[i] - 1) == key) return true;
  }
}

template <class K, class Hash>
void OwnSockets::Table<K, Hash>::place(uint32_t entry) {
  size_t i = home(at(entry));
  while (index_[i] != 0) i = i + 1 == capacity_ ? 0 : i + 1;
  index_[i] = entry + 1;
}

template <class K, class Hash>
uint32_t OwnSockets::Table<K, Hash>::insert(const K& key) {
  static_assert(std::is_trivially_copyable<K>::value && sizeof(K) >= sizeof(uint32_t),
                "a free entry holds the free list's next number in its bytes");
  if (capacity_ == 0 || overFull(size_ + 1, capacity_)) {
    const size_t grown = capacity_ + capacity_ / 2;
    resize(grown < kMinCapacity ? kMinCapacity : grown);
  }
  uint32_t entry;
  if (freeHead_ != kNoEntry) {
    entry = freeHead_;
    std::memcpy(&freeHead_, static_cast<const void*>(&at(entry)), sizeof freeHead_);  // a free entry holds the next one's number
  } else {
    entry = used_++;
    if (entry / kBlock == blocks_.size()) blocks_.emplace_back(new K[kBlock]);
  }
  at(entry) = key;
  place(entry);
  ++size_;
  return entry;
}

template <class K, class Hash>
void OwnSockets::Table<K, Hash>::remove(uint32_t entry) {
  size_t hole = home(at(entry));
  while (index_[hole] != entry + 1) hole = hole + 1 == capacity_ ? 0 : hole + 1;  // it is there
  // Backward-shift deletion (Knuth, Algorithm R): move back every later slot of the run that the
  // hole now separates from its home, so a probe never stops early at the emptied slot.
  for (size_t j = hole;;) {
    j = j + 1 == capacity_ ? 0 : j + 1;
    if (index_[j] == 0) break;
    const size_t k = home(at(index_[j] - 1));
    const bool staysPut = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
    if (staysPut) continue;
    index_[hole] = index_[j];
    hole = j;
  }
  index_[hole] = 0;
  at(entry) = K{};
  std::memcpy(static_cast<void*>(&at(entry)), &freeHead_, sizeof freeHead_);
  freeHead_ = entry;
  if (--size_ == 0) {
    clear();  // an idle shard holds no memory
  } else if (capacity_ > kMinCapacity && size_ * 4 < capacity_) {
    resize(capacity_ / 2 < kMinCapacity ? kMinCapacity : capacity_ / 2);
  }
}

template <class K, class Hash>
void OwnSockets::Table<K, Hash>::resize(size_t capacity) {
  const std::unique_ptr<uint32_t[]> old = std::move(index_);
  const size_t oldCapacity = capacity_;
  index_.reset(new uint32_t[capacity]());
  capacity_ = static_cast<uint32_t>(capacity);
  for (size_t i = 0; i < oldCapacity; ++i) {
    if (old[i] != 0) place(old[i] - 1);
  }
}

template <class K, class Hash>
void OwnSockets::Table<K, Hash>::clear() {
  blocks_.clear();
  blocks_.shrink_to_fit();
  index_.reset();
  capacity_ = 0;
  used_ = 0;
  freeHead_ = kNoEntry;
}

// --- Registration -------------------------------------------------------------------------------

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
  registryAt(registry_).remove(kind_, entry_);
  kind_ = Kind::kNone;
}

// --- OwnSockets ---------------------------------------------------------------------------------

static_assert(OwnSockets::kMaxRegistries <= UINT16_MAX + 1, "a Registration names its registry in 2 bytes");
static_assert(sizeof(OwnSockets::Registration) == 8, "a Registration is in every connection");

OwnSockets::Registration OwnSockets::add(int fd, const SocketAddress& remote) {
  SocketAddress local;
  socklen_t len = SocketAddress::capacity();
  if (::getsockname(fd, local.sockaddrPtr(), &len) < 0 || local.port() == 0) return Registration();
  return add(Key(local, remote));
}

OwnSockets::Registration OwnSockets::add(const Key& key) {
  // The shard in the entry's low 4 bits: kShards is 16.
  static_assert(kShards == 16, "Registration::entry_ keeps the shard in 4 bits");
  const size_t shardIndex = shardOf(key.localPort);
  Shard& shard = shards_[shardIndex];
  V4Key v4;
  const bool isV4 = asV4(key, v4);
  uint32_t entry;
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    entry = isV4 ? shard.v4.insert(v4) : shard.other.insert(key);
  }
  size_.fetch_add(1, std::memory_order_relaxed);
  return Registration(index_, isV4 ? Registration::Kind::kV4 : Registration::Kind::kOther,
                      (entry << 4) | static_cast<uint32_t>(shardIndex));
}

void OwnSockets::remove(Registration::Kind kind, uint32_t entry) {
  Shard& shard = shards_[entry & (kShards - 1)];
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (kind == Registration::Kind::kV4) shard.v4.remove(entry >> 4);
    else shard.other.remove(entry >> 4);
  }
  size_.fetch_sub(1, std::memory_order_relaxed);
}

bool OwnSockets::contains(const SocketAddress& peer, const SocketAddress& destination) const {
  if (size() == 0) return false;
  const Key key(peer, destination);
  const Shard& shard = shards_[shardOf(key.localPort)];
  V4Key v4;
  const bool isV4 = asV4(key, v4);
  std::lock_guard<std::mutex> lock(shard.mutex);
  return isV4 ? shard.v4.contains(v4) : shard.other.contains(key);
}

}  // namespace splicegate
