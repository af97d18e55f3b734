// The UDP session table of one worker: one entry per (client, original destination) flow, found by
// that pair, kept in least-recently-used order. Because every session has the same idle timeout,
// LRU order is also expiry order: the tick pops expired sessions from the front, and a full table
// evicts its front (the session idle longest) to make room for a new flow. No socket and no clock
// here, so the unit tests drive it with plain entries (cpp/test/udp_tests.cc); the relay
// (udp_relay.h) derives its sessions from UdpFlow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "intrusive_list.h"
#include "socket_address.h"

namespace splicegate {

struct UdpFlowKey {
  SocketAddress client;
  SocketAddress destination;
  bool operator==(const UdpFlowKey& other) const { return client == other.client && destination == other.destination; }
};

struct UdpFlowKeyHash {
  size_t operator()(const UdpFlowKey& k) const { return k.client.hash() * 31 + k.destination.hash(); }
};

// What the table knows of a session. The table never owns or frees one: its owner does.
class UdpFlow {
 public:
  explicit UdpFlow(const UdpFlowKey& key) : key_(key) {}
  const UdpFlowKey& key() const { return key_; }
  uint64_t lastActivityUs() const { return lastActivityUs_; }

  ListNode lruNode;  // UdpSessionTable's LRU list

 private:
  friend class UdpSessionTable;
  UdpFlowKey key_;
  uint64_t lastActivityUs_ = 0;
};

class UdpSessionTable {
 public:
  explicit UdpSessionTable(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}
  UdpSessionTable(const UdpSessionTable&) = delete;
  UdpSessionTable& operator=(const UdpSessionTable&) = delete;

  size_t size() const { return map_.size(); }
  size_t capacity() const { return capacity_; }
  bool full() const { return map_.size() >= capacity_; }

  // The flow's session, or null. Does not count as activity (see touch).
  UdpFlow* find(const UdpFlowKey& key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : it->second;
  }
  // A new session, most recently used. The caller makes room first (full(), oldest()); a key
  // already present is refused (false).
  bool insert(UdpFlow* flow, uint64_t nowUs) {
    if (full() || !map_.emplace(flow->key(), flow).second) return false;
    flow->lastActivityUs_ = nowUs;
    lru_.pushBack(flow);
    return true;
  }
  // A datagram in either direction: the flow becomes the most recently used.
  void touch(UdpFlow* flow, uint64_t nowUs) {
    flow->lastActivityUs_ = nowUs;
    lru_.remove(flow);
    lru_.pushBack(flow);
  }
  void remove(UdpFlow* flow) {
    if (!flow->lruNode.linked()) return;
    lru_.remove(flow);
    map_.erase(flow->key());
  }
  // The session idle longest: the one a full table evicts.
  UdpFlow* oldest() const { return lru_.front(); }
  // The oldest session if it has been idle for timeoutUs or more at nowUs, else null; the caller
  // closes it (which removes it) and asks again.
  UdpFlow* nextExpired(uint64_t nowUs, uint64_t timeoutUs) const {
    UdpFlow* f = lru_.front();
    return f && f->lastActivityUs_ + timeoutUs <= nowUs ? f : nullptr;
  }

 private:
  size_t capacity_;
  std::unordered_map<UdpFlowKey, UdpFlow*, UdpFlowKeyHash> map_;
  IntrusiveList<UdpFlow, &UdpFlow::lruNode> lru_;
};

}  // namespace splicegate
