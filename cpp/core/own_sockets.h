// The upstream sockets this process has open, by (local address, connected-to address): how a
// connection that one of our own upstream connects looped back into a listener is recognised.
//
// The sidecar topology makes this loop easy to build by mistake: splicegate runs in the host's own
// namespace beside `iptables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-port 9000` and no
// mark/uid exclusion, so its own upstream connect to 10.x:80 is redirected back to its listener
// with the *same* original destination (the listener-address guard cannot see it). Such a
// connection's peer is the local address of our upstream socket, and its original destination is
// the address that socket connected to: together the upstream socket's 4-tuple, which the kernel
// keeps unique, so a genuine client can never be mistaken for a loop.
//
// Process-wide, because the looped connection may be accepted by any worker (they share each
// listener's one socket). Sharded by local port so loop threads rarely meet on one mutex;
// a lookup is a hash and one uncontended lock.
//
// Memory (one entry per upstream socket, so per relayed connection): each shard keeps its entries
// in blocks that never move, found through an open-addressing index of 4-byte entry numbers (no
// node, no malloc per connect). An IPv4 socket, by far the most common, is a 12-byte entry;
// every other pair of families (IPv6, IPv4-mapped forms, anything unusual) a 38-byte one, in a
// second table. A Registration is 8 bytes: the entry's number and the registry's index.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "socket_address.h"

namespace splicegate {

class OwnSockets {
 public:
  // An entry's identity: family, IP bytes and port of both ends (38 bytes, not two 128-byte
  // sockaddr_storage). Equality is SocketAddress's: same family, IP and port, so an IPv4-mapped
  // IPv6 address is not its IPv4 form. Stored as is only for pairs that are not both IPv4.
  struct Key {
    Key() = default;
    Key(const SocketAddress& local, const SocketAddress& remote);
    uint8_t localFamily = 0;
    uint8_t remoteFamily = 0;
    uint16_t localPort = 0;
    uint16_t remotePort = 0;
    uint8_t localIp[16] = {};
    uint8_t remoteIp[16] = {};
    bool operator==(const Key& o) const;
  };

  // An IPv4 4-tuple in 12 bytes (addresses in network order, ports in host order).
  struct V4Key {
    uint32_t localIp = 0;
    uint32_t remoteIp = 0;
    uint16_t localPort = 0;
    uint16_t remotePort = 0;
    bool operator==(const V4Key& o) const {
      return localIp == o.localIp && remoteIp == o.remoteIp && localPort == o.localPort && remotePort == o.remotePort;
    }
  };

  // Removes its entry when destroyed or reset: owned beside the upstream fd it describes.
  // 8 bytes in every connection: the entry's shard and number (entries never move, however the
  // index above them grows or shrinks), its table, and the registry as a 2-byte index
  // (registryAt), not an 8-byte pointer.
  class Registration {
   public:
    Registration() = default;
    ~Registration() { reset(); }
    Registration(Registration&& o) noexcept : entry_(o.entry_), registry_(o.registry_), kind_(o.kind_) {
      o.kind_ = Kind::kNone;
    }
    Registration& operator=(Registration&& o) noexcept;
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    void reset();
    explicit operator bool() const { return kind_ != Kind::kNone; }

   private:
    friend class OwnSockets;
    enum class Kind : uint8_t { kNone, kV4, kOther };
    Registration(uint16_t registry, Kind kind, uint32_t entry) : entry_(entry), registry_(registry), kind_(kind) {}

    uint32_t entry_ = 0;  // shard in the low 4 bits, the entry's number in its table above them
    uint16_t registry_ = 0;
    Kind kind_ = Kind::kNone;
  };

  // Held by a thread from just before connect() until its socket is recorded (or not connecting).
  class ConnectInFlight {
   public:
    explicit ConnectInFlight(OwnSockets& owner) : owner_(owner) {
      owner_.inFlight_.fetch_add(1, std::memory_order_acq_rel);
    }
    ~ConnectInFlight() { owner_.inFlight_.fetch_sub(1, std::memory_order_acq_rel); }
    ConnectInFlight(const ConnectInFlight&) = delete;
    ConnectInFlight& operator=(const ConnectInFlight&) = delete;

   private:
    OwnSockets& owner_;
  };

  // The registry every worker of this process shares.
  static OwnSockets& process();

  // At most kMaxRegistries live at once (one per process, a few more in unit tests): more aborts.
  static constexpr size_t kMaxRegistries = 256;
  OwnSockets();
  ~OwnSockets();
  OwnSockets(const OwnSockets&) = delete;
  OwnSockets& operator=(const OwnSockets&) = delete;

  // Records connecting socket fd (its local address from getsockname) as connected to remote.
  // Empty when the local address cannot be read (the socket is then not connecting anywhere).
  Registration add(int fd, const SocketAddress& remote);
  Registration add(const Key& key);
  // True when an accepted connection from `peer` with original destination `destination` is one
  // of our own upstream sockets come back to us.
  bool contains(const SocketAddress& peer, const SocketAddress& destination) const;
  size_t size() const { return size_.load(std::memory_order_relaxed); }
  // Connects started and not yet recorded, process-wide.
  int connectsInFlight() const { return inFlight_.load(std::memory_order_acquire); }

 private:
  // Both hashes mix every bit: within one shard all local ports share their low 4 bits.
  struct KeyHash {
    size_t operator()(const Key& k) const noexcept;
  };
  struct V4Hash {
    size_t operator()(const V4Key& k) const noexcept;
  };

  // A multiset of keys (the same key twice is two entries: see Shard). Entries live in blocks of
  // kBlock, allocated as needed and never moved, so an entry's number stays valid until it is
  // removed; a removed entry's place is reused (a free list through the entries themselves). The
  // index is linear probing over entry numbers, no tombstones: a removal shifts the rest of its run
  // back. It grows by half above 4/5 full and halves below 1/4 full; the blocks stay at the
  // shard's peak until the table empties, when everything is freed.
  template <class K, class Hash>
  class Table {
   public:
    Table() = default;
    Table(const Table&) = delete;
    Table& operator=(const Table&) = delete;
    uint32_t insert(const K& key);  // the new entry's number (below 2^28: file descriptors are fewer)
    void remove(uint32_t entry);
    bool contains(const K& key) const;
    size_t size() const { return size_; }

   private:
    static constexpr uint32_t kBlock = 256;  // entries per block: 3 KB of IPv4 ones
    static constexpr uint32_t kNoEntry = UINT32_MAX;
    const K& at(uint32_t entry) const { return blocks_[entry / kBlock][entry % kBlock]; }
    K& at(uint32_t entry) { return blocks_[entry / kBlock][entry % kBlock]; }
    size_t home(const K& key) const;
    void place(uint32_t entry);  // into the index, which has room
    void resize(size_t capacity);
    void clear();

    std::vector<std::unique_ptr<K[]>> blocks_;
    std::unique_ptr<uint32_t[]> index_;  // entry number + 1; 0 = empty slot
    uint32_t capacity_ = 0;  // index slots
    uint32_t size_ = 0;      // live entries
    uint32_t used_ = 0;      // entries ever handed out since the table was last empty
    uint32_t freeHead_ = kNoEntry;
  };

  struct Shard {
    mutable std::mutex mutex;
    // Multisets, not sets: connect() may give two sockets the same local address when they go to
    // different destinations, and an upstream_port_override can make remotes equal too.
    Table<V4Key, V4Hash> v4;
    Table<Key, KeyHash> other;
  };
  static constexpr size_t kShards = 16;

  // The registry a Registration's 2-byte index names.
  static OwnSockets& registryAt(uint16_t index);
  // The IPv4 form of key, when both ends are IPv4.
  static bool asV4(const Key& key, V4Key& out);

  static size_t shardOf(uint16_t localPort) { return localPort % kShards; }
  void remove(Registration::Kind kind, uint32_t entry);

  mutable Shard shards_[kShards];
  std::atomic<size_t> size_{0};
  std::atomic<int> inFlight_{0};
  uint16_t index_ = 0;
};

}  // namespace splicegate
