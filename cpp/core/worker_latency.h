// Everything one worker records about latency: a fine per-worker histogram per metric (3
// significant digits, 64-bit counts) and the bounded per-host table (host_latency.h). One object
// per WorkerCore, used only on its loop thread.
//
// Recording points (all in microseconds, EventLoop::monotonicUs()):
//   accepted -> connect() started      record(ref, kProxyOverhead, ...)
//   connect() started -> established   record(ref, kConnect, ...)
//   established -> first upstream byte written to the client   record(ref, kTtfb, ...)
//   accepted -> closed                 record(ref, kDuration, ...)
// with ref = attach(destination) taken once, when the destination is known.
#pragma once

#include <cstddef>
#include <cstdint>

#include "hdr_histogram.h"
#include "host_latency.h"
#include "latency_metric.h"

namespace splicegate {

struct WorkerLatencyOptions {
  uint64_t highestTrackableUs = kDefaultHighestTrackableUs;
  int significantDigits = 3;
  HostLatencyOptions hosts;
};

class WorkerLatency {
 public:
  explicit WorkerLatency(const WorkerLatencyOptions& options = {})
      : global_{HdrHistogram(options.highestTrackableUs, options.significantDigits),
                HdrHistogram(options.highestTrackableUs, options.significantDigits),
                HdrHistogram(options.highestTrackableUs, options.significantDigits),
                HdrHistogram(options.highestTrackableUs, options.significantDigits)},
        hosts_(options.hosts) {}

  HostRef attach(const SocketAddress& destination) { return hosts_.attach(destination); }

  // O(1), no allocation. Per-host metrics also go to the host's (or "other hosts'") histograms.
  void record(HostRef host, LatencyMetric metric, uint64_t us) {
    global_[static_cast<size_t>(metric)].record(us);
    hosts_.record(host, metric, us);
  }

  // Call from housekeeping every few seconds (see HostLatencyTable::rebalance).
  void rebalance() { hosts_.rebalance(); }

  const HdrHistogram& global(LatencyMetric metric) const { return global_[static_cast<size_t>(metric)]; }
  const HostLatencyTable& hosts() const { return hosts_; }

  size_t memoryBytes() const {
    size_t bytes = sizeof(WorkerLatency) - sizeof(HostLatencyTable) + hosts_.memoryBytes();
    for (const auto& h : global_) bytes += h.memoryBytes() - sizeof(HdrHistogram);
    return bytes;
  }

 private:
  static_assert(kLatencyMetricCount == 4, "update the global_ initialiser");
  HdrHistogram global_[kLatencyMetricCount];
  HostLatencyTable hosts_;
};

}  // namespace splicegate
