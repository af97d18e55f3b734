#include "hdr_histogram.h"

namespace splicegate {

namespace {

int clampDigits(int digits) { return digits < 1 ? 1 : (digits > 5 ? 5 : digits); }

// HdrHistogram's getBucketsNeededToCoverValue for unitMagnitude 0.
int bucketsNeededToCover(uint64_t value, uint64_t subBucketCount) {
  uint64_t smallestUntrackable = subBucketCount;
  int needed = 1;
  while (smallestUntrackable <= value) {
    if (smallestUntrackable > (std::numeric_limits<uint64_t>::max() >> 2)) return needed + 1;
    smallestUntrackable <<= 1;
    ++needed;
  }
  return needed;
}

}  // namespace

HdrLayout::HdrLayout(uint64_t highestTrackableValue, int significantDigits)
    : highestTrackableValue_(highestTrackableValue < 2 ? 2 : highestTrackableValue),
      significantDigits_(clampDigits(significantDigits)) {
  uint64_t largestSingleUnit = 2;
  for (int i = 0; i < significantDigits_; ++i) largestSingleUnit *= 10;
  int subBucketCountMagnitude = 0;
  while ((uint64_t{1} << subBucketCountMagnitude) < largestSingleUnit) ++subBucketCountMagnitude;
  subBucketHalfCountMagnitude_ = (subBucketCountMagnitude > 1 ? subBucketCountMagnitude : 1) - 1;
  subBucketHalfCount_ = uint64_t{1} << subBucketHalfCountMagnitude_;
  const uint64_t subBucketCount = subBucketHalfCount_ * 2;
  subBucketMask_ = subBucketCount - 1;
  leadingZeroCountBase_ = 64 - subBucketHalfCountMagnitude_ - 1;
  bucketCount_ = bucketsNeededToCover(highestTrackableValue_, subBucketCount);
  countsLength_ = static_cast<size_t>(bucketCount_ + 1) * static_cast<size_t>(subBucketHalfCount_);
}

uint64_t HdrLayout::valueAtIndex(size_t index) const {
  int bucket = static_cast<int>(index >> subBucketHalfCountMagnitude_) - 1;
  uint64_t subBucket = (index & (subBucketHalfCount_ - 1)) + subBucketHalfCount_;
  if (bucket < 0) {
    subBucket -= subBucketHalfCount_;
    bucket = 0;
  }
  return subBucket << bucket;
}

uint64_t HdrLayout::highestEquivalentValue(uint64_t value) const {
  const int bucket = leadingZeroCountBase_ - __builtin_clzll(value | subBucketMask_);
  const uint64_t subBucket = value >> bucket;
  const int rangeMagnitude = subBucket >= subBucketHalfCount_ * 2 ? bucket + 1 : bucket;
  return lowestEquivalentValue(value) + (uint64_t{1} << rangeMagnitude) - 1;
}

}  // namespace splicegate
