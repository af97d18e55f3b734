// A fixed-size HDR histogram with exactly HdrHistogram's bucket layout (lowestDiscernibleValue = 1),
// so the control layer can rebuild it bit for bit in hdr-histogram-js: a value exported as the
// lowest value of its bucket lands in the same bucket there when recorded with the same
// highestTrackableValue and significant digits.
//
// One writer, no lock, no allocation after construction: record() is a few shifts and an add. The
// counts array is allocated once, in the constructor, and never resized.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>

namespace splicegate {

// 1 hour in microseconds: the longest latency the core records; longer values are clamped to it.
inline constexpr uint64_t kDefaultHighestTrackableUs = 3'600'000'000ull;

// HdrHistogram's index arithmetic for lowestDiscernibleValue = 1 (unitMagnitude 0). With d
// significant digits the first 2^m values (2^m >= 2 * 10^d) each have their own slot; above that,
// each power-of-two range ("bucket") is split into 2^(m-1) equal sub-buckets, so the relative
// error stays below 1 / 2^(m-1) everywhere.
class HdrLayout {
 public:
  // significantDigits is clamped to 1..5 and highestTrackableValue to at least 2, as HdrHistogram
  // itself requires; the core never throws, so out-of-range input is corrected, not rejected.
  HdrLayout(uint64_t highestTrackableValue, int significantDigits);

  size_t indexOf(uint64_t value) const {
    const int bucket = leadingZeroCountBase_ - __builtin_clzll(value | subBucketMask_);
    const uint64_t subBucket = value >> bucket;
    return (static_cast<size_t>(bucket + 1) << subBucketHalfCountMagnitude_) +
           static_cast<size_t>(subBucket - subBucketHalfCount_);
  }
  // The lowest value that lands in index (HdrHistogram's valueFromIndex).
  uint64_t valueAtIndex(size_t index) const;
  uint64_t lowestEquivalentValue(uint64_t value) const { return valueAtIndex(indexOf(value)); }
  uint64_t highestEquivalentValue(uint64_t value) const;

  size_t countsLength() const { return countsLength_; }
  int bucketCount() const { return bucketCount_; }
  uint64_t subBucketCount() const { return subBucketHalfCount_ * 2; }
  // As configured: record() clamps larger values to this.
  uint64_t highestTrackableValue() const { return highestTrackableValue_; }
  int significantDigits() const { return significantDigits_; }

  bool operator==(const HdrLayout& o) const {
    return highestTrackableValue_ == o.highestTrackableValue_ && significantDigits_ == o.significantDigits_;
  }
  bool sameBuckets(const HdrLayout& o) const {
    return countsLength_ == o.countsLength_ && subBucketHalfCount_ == o.subBucketHalfCount_;
  }

 private:
  uint64_t highestTrackableValue_;
  int significantDigits_;
  int subBucketHalfCountMagnitude_;
  uint64_t subBucketHalfCount_;
  uint64_t subBucketMask_;
  int leadingZeroCountBase_;
  int bucketCount_;
  size_t countsLength_;
};

// Count is uint64_t for the per-worker histograms and uint32_t for the coarse per-host ones (half
// the memory). A uint32_t count that would wrap saturates instead and sets saturated(): the
// histogram then under-reports that bucket, which is visible, rather than reporting garbage.
template <typename Count>
class BasicHdrHistogram {
  static_assert(std::is_unsigned_v<Count>, "counts are unsigned");

 public:
  explicit BasicHdrHistogram(uint64_t highestTrackableValue = kDefaultHighestTrackableUs, int significantDigits = 3)
      : layout_(highestTrackableValue, significantDigits), counts_(new Count[layout_.countsLength()]()) {}

  BasicHdrHistogram(BasicHdrHistogram&&) noexcept = default;
  BasicHdrHistogram& operator=(BasicHdrHistogram&&) noexcept = default;

  // Values above highestTrackableValue are clamped to it (and counted in clampedCount()).
  void record(uint64_t value) { recordCount(value, 1); }

  void recordCount(uint64_t value, uint64_t count) {
    if (value > layout_.highestTrackableValue()) {
      value = layout_.highestTrackableValue();
      clamped_ += count;
    }
    addAt(layout_.indexOf(value), count);
    total_ += count;
    sum_ += value * count;
    if (value > max_) max_ = value;
  }

  // Adds every count of other. Same layout: slot by slot; otherwise each of other's buckets is
  // re-recorded by its lowest value (HdrHistogram's add() does the same).
  template <typename OtherCount>
  void add(const BasicHdrHistogram<OtherCount>& other) {
    if (layout_.sameBuckets(other.layout())) {
      for (size_t i = 0; i < layout_.countsLength(); ++i) {
        if (other.countAt(i) != 0) addAt(i, other.countAt(i));
      }
      total_ += other.totalCount();
      sum_ += other.sum();
      if (other.max() > max_) max_ = other.max();
    } else {
      const uint64_t sumBefore = sum_;
      other.forEachNonZero([this](uint64_t value, uint64_t count) { recordCount(value, count); });
      // recordCount summed bucket floors; the exact sum is known, keep it. Values other could
      // hold above our range were clamped by recordCount: cap its max the same way.
      sum_ = sumBefore + other.sum();
      const uint64_t otherMax = other.max() > layout_.highestTrackableValue() ? layout_.highestTrackableValue() : other.max();
      if (otherMax > max_) max_ = otherMax;
    }
    clamped_ += other.clampedCount();
    if (other.saturated()) saturated_ = true;
  }

  void reset() {
    for (size_t i = 0; i < layout_.countsLength(); ++i) counts_[i] = 0;
    total_ = sum_ = max_ = clamped_ = 0;
    saturated_ = false;
  }

  // Calls fn(valueAtIndex, count) for every non-empty bucket, lowest value first.
  template <typename F>
  void forEachNonZero(F&& fn) const {
    if (total_ == 0) return;
    for (size_t i = 0; i < layout_.countsLength(); ++i) {
      if (counts_[i] != 0) fn(layout_.valueAtIndex(i), static_cast<uint64_t>(counts_[i]));
    }
  }
  size_t nonZeroBuckets() const {
    size_t n = 0;
    forEachNonZero([&n](uint64_t, uint64_t) { ++n; });
    return n;
  }

  Count countAt(size_t index) const { return counts_[index]; }
  uint64_t countAtValue(uint64_t value) const { return counts_[layout_.indexOf(value)]; }
  // Sum of recorded counts (exact even if a uint32_t bucket saturated).
  uint64_t totalCount() const { return total_; }
  // Sum of recorded values (after clamping), for means and Prometheus' _sum.
  uint64_t sum() const { return sum_; }
  uint64_t max() const { return max_; }
  uint64_t clampedCount() const { return clamped_; }
  bool saturated() const { return saturated_; }
  const HdrLayout& layout() const { return layout_; }

  // Bytes this histogram holds: the object plus its counts array.
  size_t memoryBytes() const { return bytesFor(layout_); }
  static size_t bytesFor(const HdrLayout& layout) {
    return sizeof(BasicHdrHistogram) + layout.countsLength() * sizeof(Count);
  }

 private:
  void addAt(size_t index, uint64_t count) {
    if constexpr (sizeof(Count) < sizeof(uint64_t)) {
      constexpr uint64_t kMax = std::numeric_limits<Count>::max();
      const uint64_t next = static_cast<uint64_t>(counts_[index]) + count;
      if (next > kMax) {
        counts_[index] = static_cast<Count>(kMax);
        saturated_ = true;
        return;
      }
      counts_[index] = static_cast<Count>(next);
    } else {
      counts_[index] += count;
    }
  }

  HdrLayout layout_;
  std::unique_ptr<Count[]> counts_;
  uint64_t total_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
  uint64_t clamped_ = 0;
  bool saturated_ = false;
};

// Per-worker histograms: 3 significant digits, 64-bit counts.
using HdrHistogram = BasicHdrHistogram<uint64_t>;
// Per-host histograms: coarser and 32-bit (see host_latency.h for the memory budget).
using CoarseHdrHistogram = BasicHdrHistogram<uint32_t>;

}  // namespace splicegate
