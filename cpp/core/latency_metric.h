// The latencies the core measures, in microseconds. The ids are part of the native export format
// (latency_export.h) and of src/latency/metrics.ts: append new ones, never renumber.
#pragma once

#include <cstddef>
#include <cstdint>

namespace splicegate {

enum class LatencyMetric : uint8_t {
  // connect() started -> upstream connection established.
  kConnect = 0,
  // Client connection accepted -> upstream connect() started: time the proxy itself adds.
  kProxyOverhead = 1,
  // Upstream connection established -> its first byte sent on towards the client.
  kTtfb = 2,
  // Client connection accepted -> connection closed.
  kDuration = 3,
  kCount
};

inline constexpr size_t kLatencyMetricCount = static_cast<size_t>(LatencyMetric::kCount);

inline constexpr const char* kLatencyMetricNames[kLatencyMetricCount] = {"connect", "proxy_overhead", "ttfb",
                                                                         "duration"};

// Per-host histograms keep only what depends on the host; proxy_overhead is the proxy's own.
inline constexpr LatencyMetric kHostLatencyMetrics[] = {LatencyMetric::kConnect, LatencyMetric::kTtfb,
                                                        LatencyMetric::kDuration};
inline constexpr size_t kHostLatencyMetricCount = sizeof(kHostLatencyMetrics) / sizeof(kHostLatencyMetrics[0]);

// Position of m in kHostLatencyMetrics, or -1 when it is not kept per host.
inline constexpr int hostMetricSlot(LatencyMetric m) {
  for (size_t i = 0; i < kHostLatencyMetricCount; ++i) {
    if (kHostLatencyMetrics[i] == m) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace splicegate
