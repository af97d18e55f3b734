// Recent events of one worker for the control layer to log (the core cannot log): a bounded buffer
// the loop thread appends to without allocating, drained in bulk (one call, about once a second).
// What does not fit until the next drain is dropped and counted, so a flood of events costs a
// counter increment each, never memory or a log line.
//
// Today it carries policy denies; access-log records (issue 11) become another WorkerEventKind
// with their own fields in WorkerEvent, drained and shipped the same way.
#pragma once

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

// Single-threaded: only the worker's loop thread touches it (the addon drains it there).
class WorkerEventBuffer {
 public:
  explicit WorkerEventBuffer(size_t capacity) : capacity_(capacity) { events_.reserve(capacity); }

  // A slot for one more event (fill it in before the next call), or nullptr when the buffer is full:
  // the event is then counted as dropped.
  WorkerEvent* append() {
    if (events_.size() >= capacity_) {
      ++dropped_;
      return nullptr;
    }
    events_.emplace_back();  // within the reserved capacity: no allocation
    return &events_.back();
  }

  // Copies the buffered events to out, empties the buffer and returns how many were dropped since
  // the previous take.
  uint64_t take(std::vector<WorkerEvent>& out) {
    out.assign(events_.begin(), events_.end());
    events_.clear();
    const uint64_t dropped = dropped_;
    dropped_ = 0;
    return dropped;
  }

  size_t size() const { return events_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  size_t capacity_;
  std::vector<WorkerEvent> events_;
  uint64_t dropped_ = 0;
};

}  // namespace splicegate
