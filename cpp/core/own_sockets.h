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
// Memory (one entry per upstream socket, so per relayed connection): an IPv4 socket, by far the
// most common, is a 12-byte slot in a per-shard open-addressing table (no node, no bucket, no
// malloc per connect; 15-24 bytes per entry at the table's load of 1/2 to 4/5), and its
// Registration holds the 4-tuple itself, 16 bytes. Every other pair of families (IPv6, an IPv4
// socket's IPv4-mapped forms, anything unusual) keeps a node-based map keyed by both ends' family,
// IP and port; its Registration points at the key inside the node.
//
// Timing: the entry is recorded right after connect() returns, when the kernel has chosen the
// local port. On loopback the looped handshake completes inside connect(), and the woken acceptor
// (another worker, often scheduled onto the connecting thread's CPU ahead of it) may look before
// the entry exists. Connects between connect() and their record are counted (ConnectInFlight),
// so a missed lookup can give them a moment and look again (OriginalDstResolver does, bounded).
// Should it still miss, the looped connection is relayed once more and its own upstream ends the
// chain: a handful of extra connections at worst, never a storm.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

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

  // An IPv4 4-tuple in 12 bytes (addresses in network order, ports in host order). Local port 0
  // marks an empty table slot: connect() never leaves a socket on port 0, and a Key with local
  // port 0 (only a test makes one) is kept in the node-based map instead.
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
  // 16 bytes in every connection: an IPv4 entry's 4-tuple itself (table slots move when a table
  // grows or shrinks, so no pointer into one is kept), or a pointer to the key inside a map node
  // (nodes do not move); and the registry as a 2-byte index (registryAt), not an 8-byte pointer.
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
    union Entry {
      V4Key v4;
      // A `const Key*`, as bytes: a pointer member would align the union to 8 and make the
      // Registration 24 bytes.
      unsigned char other[sizeof(const Key*)];
    };
    static_assert(sizeof(V4Key) == 12 && alignof(V4Key) == 4, "an IPv4 entry is 12 bytes");
    Registration(uint16_t registry, const V4Key& key);
    Registration(uint16_t registry, const Key* key);
    const Key* otherKey() const;

    Entry entry_{};
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
  struct KeyHash {
    // noexcept: the map then keeps no hash in each node (8 bytes per upstream socket).
    size_t operator()(const Key& k) const noexcept;
  };

  // IPv4 entries: linear probing over 12-byte slots, no tombstones (a removal shifts the slots
  // after it back). A multiset: the same 4-tuple twice is two slots (see counts below).
  class V4Table {
   public:
    void insert(const V4Key& key);
    bool remove(const V4Key& key);  // false when absent
    bool contains(const V4Key& key) const;
    size_t size() const { return size_; }
    size_t capacity() const { return capacity_; }

   private:
    size_t home(const V4Key& key) const;
    size_t find(const V4Key& key) const;  // capacity_ when absent
    void resize(size_t capacity);
    std::unique_ptr<V4Key[]> slots_;
    uint32_t capacity_ = 0;
    uint32_t size_ = 0;
  };

  struct Shard {
    mutable std::mutex mutex;
    V4Table v4;
    // A count, not a set: connect() may give two sockets the same local address when they go to
    // different destinations, and an upstream_port_override can make remotes equal too.
    std::unordered_map<Key, uint32_t, KeyHash> counts;
  };
  static constexpr size_t kShards = 16;

  // The registry a Registration's 2-byte index names.
  static OwnSockets& registryAt(uint16_t index);
  // The IPv4 form of key, when both ends are IPv4 and it can be a table slot.
  static bool asV4(const Key& key, V4Key& out);

  Shard& shardFor(uint16_t localPort) const { return shards_[localPort % kShards]; }
  void remove(const V4Key& key);
  void remove(const Key& key);

  mutable Shard shards_[kShards];
  std::atomic<size_t> size_{0};
  std::atomic<int> inFlight_{0};
  uint16_t index_ = 0;
};

}  // namespace splicegate
