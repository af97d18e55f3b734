// The native latency export: histograms flattened into plain doubles, so the addon hands each
// worker's latency to JavaScript as a few Float64Arrays instead of value by value. Decoded by
// src/latency/native-format.ts; docs/LATENCY.md has the same description.
//
// Format version 1. Every number is a double; all integers involved stay below 2^53, so exact.
//
//   array := version (= 1), setCount, set x setCount
//   set   := blockCount, block x blockCount
//   block := metricId, significantDigits, highestTrackableValue,
//            totalCount, sum, max, clampedCount,
//            pairCount, (valueAtIndex, count) x pairCount
//
// metricId is a LatencyMetric (latency_metric.h). valueAtIndex is the lowest value of a non-empty
// bucket, in increasing order; recording it with count into an HdrHistogram with
// lowestDiscernibleValue 1 and the block's highestTrackableValue and significantDigits rebuilds
// the bucket exactly. sum and max are of recorded (clamped) values; clampedCount counts values
// that were above highestTrackableValue. If a 32-bit per-host count saturated, the pairs add up
// to less than totalCount.
//
// A worker's export (LatencyExport) is four such pieces:
//   global       one set: every metric of this worker
//   hosts        one set per tracked host, in the order of hostAddresses (per-host metrics only)
//   otherHosts   one set: per-host metrics of every host without a slot
#pragma once

#include <string>
#include <vector>

#include "hdr_histogram.h"
#include "host_latency.h"
#include "latency_metric.h"
#include "worker_latency.h"

namespace splicegate {

inline constexpr double kLatencyExportVersion = 1;

template <typename Count>
void appendLatencyBlock(std::vector<double>& out, LatencyMetric metric, const BasicHdrHistogram<Count>& h) {
  out.push_back(static_cast<double>(metric));
  out.push_back(h.layout().significantDigits());
  out.push_back(static_cast<double>(h.layout().highestTrackableValue()));
  out.push_back(static_cast<double>(h.totalCount()));
  out.push_back(static_cast<double>(h.sum()));
  out.push_back(static_cast<double>(h.max()));
  out.push_back(static_cast<double>(h.clampedCount()));
  const size_t pairCountAt = out.size();
  out.push_back(0);
  size_t pairs = 0;
  h.forEachNonZero([&](uint64_t value, uint64_t count) {
    out.push_back(static_cast<double>(value));
    out.push_back(static_cast<double>(count));
    ++pairs;
  });
  out[pairCountAt] = static_cast<double>(pairs);
}

// One histogram with the metric it measures: the unit flattenLatencySets works on.
template <typename Count>
struct NamedHistogram {
  LatencyMetric metric;
  const BasicHdrHistogram<Count>* histogram;
};

// The pure core of the format: sets of named histograms -> one array.
template <typename Count>
std::vector<double> flattenLatencySets(const std::vector<std::vector<NamedHistogram<Count>>>& sets) {
  std::vector<double> out{kLatencyExportVersion, static_cast<double>(sets.size())};
  for (const auto& set : sets) {
    out.push_back(static_cast<double>(set.size()));
    for (const auto& named : set) appendLatencyBlock(out, named.metric, *named.histogram);
  }
  return out;
}

inline std::vector<NamedHistogram<uint32_t>> namedHostHistograms(const HostHistograms& h) {
  std::vector<NamedHistogram<uint32_t>> set;
  for (size_t i = 0; i < kHostLatencyMetricCount; ++i) set.push_back({kHostLatencyMetrics[i], &h.at(i)});
  return set;
}

struct LatencyExport {
  std::vector<double> global;
  std::vector<std::string> hostAddresses;  // "10.0.0.7:443", "[2001:db8::1]:443"
  std::vector<double> hosts;
  std::vector<double> otherHosts;
};

// Snapshot of one worker. Allocates (not a hot-path call); run it on the worker's loop thread.
inline LatencyExport exportLatency(const WorkerLatency& latency) {
  LatencyExport out;
  std::vector<NamedHistogram<uint64_t>> global;
  for (size_t m = 0; m < kLatencyMetricCount; ++m) {
    global.push_back({static_cast<LatencyMetric>(m), &latency.global(static_cast<LatencyMetric>(m))});
  }
  out.global = flattenLatencySets<uint64_t>({global});

  std::vector<std::vector<NamedHistogram<uint32_t>>> hostSets;
  latency.hosts().forEachTracked([&](const SocketAddress& address, const HostHistograms& h) {
    out.hostAddresses.push_back(address.toString());
    hostSets.push_back(namedHostHistograms(h));
  });
  out.hosts = flattenLatencySets(hostSets);
  out.otherHosts = flattenLatencySets<uint32_t>({namedHostHistograms(latency.hosts().otherHosts())});
  return out;
}

}  // namespace splicegate
