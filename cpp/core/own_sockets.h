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
#include <mutex>
#include <unordered_map>

#include "socket_address.h"

namespace splicegate {

class OwnSockets {
 public:
  // One entry exists per upstream socket, so the key is compact: family, IP bytes and port of both
  // ends (38 bytes, not two 128-byte sockaddr_storage). Equality is SocketAddress's: same family,
  // IP and port.
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

  // Removes its entry when destroyed or reset: owned beside the upstream fd it describes. Holds
  // only a pointer to the entry's key (map nodes do not move), 16 bytes in every connection.
  class Registration {
   public:
    Registration() = default;
    ~Registration() { reset(); }
    Registration(Registration&& o) noexcept : owner_(o.owner_), key_(o.key_) { o.owner_ = nullptr; }
    Registration& operator=(Registration&& o) noexcept;
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    void reset();
    explicit operator bool() const { return owner_ != nullptr; }

   private:
    friend class OwnSockets;
    Registration(OwnSockets* owner, const Key* key) : owner_(owner), key_(key) {}
    OwnSockets* owner_ = nullptr;
    const Key* key_ = nullptr;  // the key inside the map's entry, alive while its count is > 0
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

  OwnSockets() = default;
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
  struct Shard {
    mutable std::mutex mutex;
    // A count, not a set: connect() may give two sockets the same local address when they go to
    // different destinations, and an upstream_port_override can make remotes equal too.
    std::unordered_map<Key, uint32_t, KeyHash> counts;
  };
  static constexpr size_t kShards = 16;

  Shard& shardFor(uint16_t localPort) const { return shards_[localPort % kShards]; }
  void remove(const Key& key);

  mutable Shard shards_[kShards];
  std::atomic<size_t> size_{0};
  std::atomic<int> inFlight_{0};
};

}  // namespace splicegate
