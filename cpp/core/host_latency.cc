#include "host_latency.h"

#include <algorithm>

namespace splicegate {

namespace {

// Candidates looked at when one must make room for a new host: approximate Space-Saving (the
// exact minimum would cost a scan of the whole table per new host on the hot path).
constexpr size_t kVictimSample = 8;

// A busier candidate takes a tracked host's slot only when clearly busier, so two hosts of
// similar traffic do not swap (and lose attribution) at every rebalance.
constexpr uint64_t kTakeoverFactor = 2;

// Spreads FNV-1a's low-entropy low bits before masking (Fibonacci hashing).
size_t spread(size_t hash) { return static_cast<size_t>((static_cast<uint64_t>(hash) * 0x9E3779B97F4A7C15ull) >> 32); }

}  // namespace

// --- HostHistograms --------------------------------------------------------------------------

HostHistograms::HostHistograms(uint64_t highestTrackableUs, int significantDigits)
    : histograms_{CoarseHdrHistogram(highestTrackableUs, significantDigits),
                  CoarseHdrHistogram(highestTrackableUs, significantDigits),
                  CoarseHdrHistogram(highestTrackableUs, significantDigits)} {}

void HostHistograms::add(const HostHistograms& other) {
  for (size_t i = 0; i < kHostLatencyMetricCount; ++i) histograms_[i].add(other.histograms_[i]);
}

void HostHistograms::reset() {
  for (auto& h : histograms_) h.reset();
}

size_t HostHistograms::memoryBytes() const {
  size_t bytes = sizeof(HostHistograms);
  for (const auto& h : histograms_) bytes += h.memoryBytes() - sizeof(CoarseHdrHistogram);
  return bytes;
}

size_t HostHistograms::bytesFor(uint64_t highestTrackableUs, int significantDigits) {
  const HdrLayout layout(highestTrackableUs, significantDigits);
  return sizeof(HostHistograms) +
         kHostLatencyMetricCount * (CoarseHdrHistogram::bytesFor(layout) - sizeof(CoarseHdrHistogram));
}

// --- HostLatencyTable ------------------------------------------------------------------------

HostLatencyOptions HostLatencyTable::normalized(HostLatencyOptions options) {
  // Twice as many candidates as slots: room to notice a busier host before it has a slot.
  options.candidates = std::max(options.candidates, std::max<size_t>(2 * options.trackedHosts, kVictimSample));
  return options;
}

size_t HostLatencyTable::indexSizeFor(size_t candidates) {
  // Power of two, at most half full: short probe sequences.
  size_t size = 16;
  while (size < 2 * candidates) size <<= 1;
  return size;
}

HostLatencyTable::HostLatencyTable(const HostLatencyOptions& options)
    : options_(normalized(options)),
      index_(indexSizeFor(options_.candidates), -1),
      indexMask_(index_.size() - 1),
      other_(options_.highestTrackableUs, options_.significantDigits) {
  candidates_.reserve(options_.candidates);
  slots_.reserve(options_.trackedHosts);
  freeSlots_.reserve(options_.trackedHosts);
  for (size_t i = 0; i < options_.trackedHosts; ++i) {
    slots_.emplace_back(options_.highestTrackableUs, options_.significantDigits);
  }
  // Popped from the back: slot 0 is handed out first.
  for (size_t i = options_.trackedHosts; i > 0; --i) freeSlots_.push_back(static_cast<int32_t>(i - 1));
  rankedCandidates_.reserve(options_.candidates);
  rankedSlots_.reserve(options_.trackedHosts);
}

HostRef HostLatencyTable::attach(const SocketAddress& host) {
  int32_t c = find(host);
  if (c < 0) c = admit(host);
  Candidate& candidate = candidates_[static_cast<size_t>(c)];
  ++candidate.hits;
  if (candidate.slot < 0 && !freeSlots_.empty()) {
    const int32_t slot = freeSlots_.back();
    freeSlots_.pop_back();
    assignSlot(slot, c);
  }
  if (candidate.slot < 0) return HostRef{};
  return HostRef{candidate.slot, slots_[static_cast<size_t>(candidate.slot)].generation};
}

int32_t HostLatencyTable::find(const SocketAddress& address) const {
  for (size_t i = spread(address.hash()) & indexMask_;; i = (i + 1) & indexMask_) {
    const int32_t c = index_[i];
    if (c < 0) return -1;
    if (candidates_[static_cast<size_t>(c)].address == address) return c;
  }
}

// A new host: a fresh candidate while the table has room (no allocation: capacity is reserved),
// otherwise it takes over a little-used untracked candidate and its count + 1 (Space-Saving).
int32_t HostLatencyTable::admit(const SocketAddress& address) {
  if (candidates_.size() < options_.candidates) {
    candidates_.push_back(Candidate{address, 0, -1});
    const auto c = static_cast<int32_t>(candidates_.size() - 1);
    indexInsert(c);
    return c;
  }
  const int32_t c = evictionVictim();
  indexErase(c);
  Candidate& victim = candidates_[static_cast<size_t>(c)];
  victim.address = address;  // hits carried over: the +1 comes from attach()
  indexInsert(c);
  return c;
}

int32_t HostLatencyTable::evictionVictim() {
  // At least half the candidates are untracked (normalized()), so the walk ends quickly.
  int32_t best = -1;
  size_t sampled = 0;
  const size_t n = candidates_.size();
  for (size_t step = 0; step < n && sampled < kVictimSample; ++step) {
    const size_t i = victimCursor_;
    victimCursor_ = (victimCursor_ + 1) % n;
    const Candidate& c = candidates_[i];
    if (c.slot >= 0) continue;
    ++sampled;
    if (best < 0 || c.hits < candidates_[static_cast<size_t>(best)].hits) best = static_cast<int32_t>(i);
  }
  return best;
}

void HostLatencyTable::indexInsert(int32_t candidate) {
  size_t i = spread(candidates_[static_cast<size_t>(candidate)].address.hash()) & indexMask_;
  while (index_[i] >= 0) i = (i + 1) & indexMask_;
  index_[i] = candidate;
}

// Linear-probing deletion by backward shift: no tombstones, so lookups never slow down with churn.
void HostLatencyTable::indexErase(int32_t candidate) {
  size_t hole = spread(candidates_[static_cast<size_t>(candidate)].address.hash()) & indexMask_;
  while (index_[hole] != candidate) hole = (hole + 1) & indexMask_;
  index_[hole] = -1;
  for (size_t i = (hole + 1) & indexMask_; index_[i] >= 0; i = (i + 1) & indexMask_) {
    const size_t home = spread(candidates_[static_cast<size_t>(index_[i])].address.hash()) & indexMask_;
    // Move the entry back into the hole unless its home lies cyclically in (hole, i].
    const bool homeBetween = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
    if (homeBetween) continue;
    index_[hole] = index_[i];
    index_[i] = -1;
    hole = i;
  }
}

void HostLatencyTable::assignSlot(int32_t slot, int32_t candidate) {
  Slot& s = slots_[static_cast<size_t>(slot)];
  s.candidate = candidate;
  candidates_[static_cast<size_t>(candidate)].slot = slot;
}

// The host loses its slot: its samples move to "other hosts" and connections still holding the
// old generation record there too.
void HostLatencyTable::releaseSlot(int32_t slot) {
  Slot& s = slots_[static_cast<size_t>(slot)];
  other_.add(s.histograms);
  s.histograms.reset();
  ++s.generation;
  if (s.candidate >= 0) candidates_[static_cast<size_t>(s.candidate)].slot = -1;
  s.candidate = -1;
}

void HostLatencyTable::rebalance() {
  auto hits = [this](int32_t c) { return candidates_[static_cast<size_t>(c)].hits; };

  rankedSlots_.clear();
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].candidate >= 0) rankedSlots_.push_back(static_cast<int32_t>(i));
  }
  // Only when every slot is taken can a candidate be left out; free slots are filled by attach().
  if (freeSlots_.empty() && !rankedSlots_.empty()) {
    rankedCandidates_.clear();
    for (size_t i = 0; i < candidates_.size(); ++i) {
      if (candidates_[i].slot < 0 && candidates_[i].hits > 0) rankedCandidates_.push_back(static_cast<int32_t>(i));
    }
    const size_t contenders = std::min(rankedCandidates_.size(), rankedSlots_.size());
    std::partial_sort(rankedCandidates_.begin(), rankedCandidates_.begin() + static_cast<ptrdiff_t>(contenders),
                      rankedCandidates_.end(), [&](int32_t a, int32_t b) { return hits(a) > hits(b); });
    std::sort(rankedSlots_.begin(), rankedSlots_.end(), [&](int32_t a, int32_t b) {
      return hits(slots_[static_cast<size_t>(a)].candidate) < hits(slots_[static_cast<size_t>(b)].candidate);
    });
    for (size_t i = 0; i < contenders; ++i) {
      const int32_t challenger = rankedCandidates_[i];
      const int32_t slot = rankedSlots_[i];
      const uint64_t holderHits = hits(slots_[static_cast<size_t>(slot)].candidate);
      if (hits(challenger) <= holderHits * kTakeoverFactor) break;
      releaseSlot(slot);
      assignSlot(slot, challenger);
    }
  }
  for (Candidate& c : candidates_) c.hits >>= 1;
}

size_t HostLatencyTable::memoryBytes() const {
  size_t bytes = sizeof(HostLatencyTable);
  bytes += candidates_.capacity() * sizeof(Candidate);
  bytes += index_.capacity() * sizeof(int32_t);
  bytes += slots_.capacity() * sizeof(Slot);
  for (const Slot& s : slots_) bytes += s.histograms.memoryBytes() - sizeof(HostHistograms);
  bytes += other_.memoryBytes() - sizeof(HostHistograms);
  bytes += (freeSlots_.capacity() + rankedCandidates_.capacity() + rankedSlots_.capacity()) * sizeof(int32_t);
  return bytes;
}

size_t HostLatencyTable::memoryBoundBytes(const HostLatencyOptions& requested) {
  const HostLatencyOptions o = normalized(requested);
  const size_t setCounts = HostHistograms::bytesFor(o.highestTrackableUs, o.significantDigits) - sizeof(HostHistograms);
  return sizeof(HostLatencyTable) + o.candidates * sizeof(Candidate) + indexSizeFor(o.candidates) * sizeof(int32_t) +
         o.trackedHosts * (sizeof(Slot) + setCounts) + setCounts +
         (2 * o.trackedHosts + o.candidates) * sizeof(int32_t);
}

}  // namespace splicegate
