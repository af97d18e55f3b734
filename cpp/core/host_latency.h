// Per-host latency histograms with a memory bound that does not depend on how many hosts are live.
//
// Strategy: the busiest K hosts of a worker (trackedHosts, default 64) get their own histograms;
// every other host records into one shared "other hosts" set. Each host histogram set is coarser
// than the per-worker one: 2 significant digits (< 0.8% relative error) with 32-bit counts, over
// the same 1 µs .. 1 h range.
//
// Which hosts are "busiest" is decided with the Space-Saving algorithm over connection counts: a
// fixed table of candidates (default 1024) counts connections per host; when it is full, a new
// host replaces a little-used untracked candidate and inherits its count + 1 (so counts are over-
// rather than under-estimates). A host gets a free histogram slot on its first connection; once
// all K are taken, rebalance() (housekeeping, not the hot path) hands the slot of the least busy
// tracked host to a clearly busier candidate: the old host's histograms are merged into "other
// hosts" first, so no sample is ever lost, only its attribution. Counts halve at each rebalance,
// so "busiest" means "busiest recently".
//
// Memory (defaults, per worker, x86-64), fixed at construction, independent of live hosts:
//   one tracked host's histograms: 3 x (3,328 counts x 4 B + object) ~= 40 KB
//   65 sets (64 tracked + other)                              ~= 2.6 MB
//   1024 candidates x 144 B + index 2048 x 4 B + scratch      ~= 160 KB
// memoryBoundBytes(options) gives the exact figure; the unit test checks it with 10,000 hosts.
//
// Single-threaded: attach/record/rebalance and the export must all run on the worker's loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "hdr_histogram.h"
#include "latency_metric.h"
#include "socket_address.h"

namespace splicegate {

struct HostLatencyOptions {
  size_t trackedHosts = 64;  // K: hosts with histograms of their own
  size_t candidates = 1024;  // Space-Saving table; raised to at least 2 * trackedHosts
  int significantDigits = 2;
  uint64_t highestTrackableUs = kDefaultHighestTrackableUs;
};

// The per-host metrics (kHostLatencyMetrics) of one host, or of all "other hosts".
class HostHistograms {
 public:
  HostHistograms(uint64_t highestTrackableUs, int significantDigits);

  void record(LatencyMetric metric, uint64_t us) {
    const int slot = hostMetricSlot(metric);
    if (slot >= 0) histograms_[slot].record(us);
  }
  // index is a position in kHostLatencyMetrics.
  const CoarseHdrHistogram& at(size_t index) const { return histograms_[index]; }
  void add(const HostHistograms& other);
  void reset();
  size_t memoryBytes() const;
  static size_t bytesFor(uint64_t highestTrackableUs, int significantDigits);

 private:
  static_assert(kHostLatencyMetricCount == 3, "update the initialiser in host_latency.cc");
  CoarseHdrHistogram histograms_[kHostLatencyMetricCount];
};

// What a connection keeps to record into its host's histograms: a slot and the generation it was
// handed out in. If the slot has since gone to another host, the generation no longer matches and
// the samples go to "other hosts" instead of to the wrong host.
struct HostRef {
  int32_t slot = -1;
  uint32_t generation = 0;
};

class HostLatencyTable {
 public:
  explicit HostLatencyTable(const HostLatencyOptions& options = {});
  HostLatencyTable(const HostLatencyTable&) = delete;
  HostLatencyTable& operator=(const HostLatencyTable&) = delete;

  // Once per connection, when its destination is known: counts the connection towards the host's
  // "busiest" score and says where its samples go. O(1) expected, no allocation.
  HostRef attach(const SocketAddress& host);
  void record(HostRef ref, LatencyMetric metric, uint64_t us) { histogramsFor(ref).record(metric, us); }

  // Housekeeping (e.g. every few seconds on the loop thread): swaps tracked hosts that went quiet
  // for busier candidates, then halves every count. Cost O(candidates log K + swaps x 40 KB).
  void rebalance();

  // fn(const SocketAddress&, const HostHistograms&) for every tracked host.
  template <typename F>
  void forEachTracked(F&& fn) const {
    for (const Slot& slot : slots_) {
      if (slot.candidate >= 0) fn(candidates_[slot.candidate].address, slot.histograms);
    }
  }
  const HostHistograms& otherHosts() const { return other_; }
  size_t trackedCount() const { return options_.trackedHosts - freeSlots_.size(); }
  const HostLatencyOptions& options() const { return options_; }

  // Bytes held now; never changes after construction.
  size_t memoryBytes() const;
  // The same figure computed from the options alone: the bound, whatever the traffic.
  static size_t memoryBoundBytes(const HostLatencyOptions& options);

 private:
  struct Candidate {
    SocketAddress address;
    uint64_t hits = 0;
    int32_t slot = -1;  // tracked: index in slots_
  };
  struct Slot {
    Slot(uint64_t highestTrackableUs, int significantDigits) : histograms(highestTrackableUs, significantDigits) {}
    HostHistograms histograms;
    int32_t candidate = -1;  // -1: free
    uint32_t generation = 0;
  };

  static HostLatencyOptions normalized(HostLatencyOptions options);
  static size_t indexSizeFor(size_t candidates);

  HostHistograms& histogramsFor(HostRef ref) {
    if (ref.slot >= 0) {
      Slot& slot = slots_[static_cast<size_t>(ref.slot)];
      if (slot.generation == ref.generation) return slot.histograms;
    }
    return other_;
  }
  int32_t find(const SocketAddress& address) const;
  int32_t admit(const SocketAddress& address);
  int32_t evictionVictim();
  void indexInsert(int32_t candidate);
  void indexErase(int32_t candidate);
  void assignSlot(int32_t slot, int32_t candidate);
  void releaseSlot(int32_t slot);

  HostLatencyOptions options_;
  std::vector<Candidate> candidates_;  // reserved once; grows up to options_.candidates
  std::vector<int32_t> index_;         // open addressing, linear probing: candidate index or -1
  size_t indexMask_;
  std::vector<Slot> slots_;
  std::vector<int32_t> freeSlots_;
  HostHistograms other_;
  std::vector<int32_t> rankedCandidates_;  // rebalance scratch, reserved once
  std::vector<int32_t> rankedSlots_;
  size_t victimCursor_ = 0;
};

}  // namespace splicegate
