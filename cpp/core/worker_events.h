// Recent events of one worker for the control layer to log (the core cannot log): a bounded buffer
// the loop thread appends to without allocating, drained in bulk (one call, about once a second).
// What does not fit until the next drain is dropped and counted, so a flood of events costs a
// counter increment each, never memory or a log line.
//
// It carries policy denies (WorkerEvent); the access log's records (access_log.h) use the same
// bounded buffer with their own fixed-size record type, drained more often.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "policy.h"
#include "socket_address.h"

namespace splicegate {

enum class WorkerEventKind : uint8_t {
  kPolicyDenied,  // a connection refused by the destination policy
};

struct WorkerEvent {
  static constexpr size_t kNameCapacity = 65;  // listener names are at most 64 characters

  WorkerEventKind kind = WorkerEventKind::kPolicyDenied;
  uint64_t wallTimeMs = 0;  // CLOCK_REALTIME, milliseconds
  SocketAddress source;
  SocketAddress destination;
  char listener[kNameCapacity] = {};  // NUL-terminated, truncated if longer
  // kPolicyDenied: which policy ([0] top level) and what in it denied.
  uint32_t policy = 0;
  PolicyDecision decision;
};

// Only the worker's loop thread touches the items (the addon drains them there). Holds the deny
// events (WorkerEvent) and the access log's records (access_log.h), one buffer each. holding() is
// the one thing another thread may ask: the control layer's periodic drains skip the loop thread,
// and so leave it asleep, while there is nothing to take.
template <typename T>
class BoundedBuffer {
 public:
  explicit BoundedBuffer(size_t capacity) : capacity_(capacity) { items_.reserve(capacity); }

  // A slot for one more item (fill it in before the next call), or nullptr when the buffer is full:
  // the item is then counted as dropped.
  T* append() {
    // A load first: under a stream of appends the flag stays set and its cache line unwritten.
    if (!holding_.load(std::memory_order_relaxed)) holding_.store(true, std::memory_order_relaxed);
    if (items_.size() >= capacity_) {
      ++dropped_;
      return nullptr;
    }
    items_.emplace_back();  // within the reserved capacity: no allocation
    return &items_.back();
  }

  // Copies the buffered items to out, empties the buffer and returns how many were dropped since
  // the previous take.
  uint64_t take(std::vector<T>& out) {
    out.assign(items_.begin(), items_.end());
    return clear();
  }

  // Like take, without copying: out (cleared, given capacity() here so the buffer keeps room for
  // a full batch without allocating on append) trades places with the buffer.
  uint64_t swapOut(std::vector<T>& out) {
    out.clear();
    out.reserve(capacity_);
    items_.swap(out);
    holding_.store(false, std::memory_order_relaxed);
    const uint64_t dropped = dropped_;
    dropped_ = 0;
    return dropped;
  }

  // Any thread: whether an item or a drop has arrived since the last take. Advisory only (no item
  // is read through it): a false that turns true right after is seen by the next drain.
  bool holding() const { return holding_.load(std::memory_order_relaxed); }
  size_t size() const { return items_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  uint64_t clear() {
    items_.clear();
    holding_.store(false, std::memory_order_relaxed);
    const uint64_t dropped = dropped_;
    dropped_ = 0;
    return dropped;
  }

  size_t capacity_;
  std::vector<T> items_;
  uint64_t dropped_ = 0;
  std::atomic<bool> holding_{false};
};

using WorkerEventBuffer = BoundedBuffer<WorkerEvent>;

}  // namespace splicegate
