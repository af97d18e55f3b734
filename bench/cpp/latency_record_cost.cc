// Micro-benchmark: what latency recording adds per relayed connection in the core — one attach()
// (per-host slot lookup) and the four record() calls a connection makes — in nanoseconds, over a
// realistic spread of destinations. Printed as one JSON line for bench/latency-cost.ts.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "../../cpp/core/event_loop.h"
#include "../../cpp/core/socket_address.h"
#include "../../cpp/core/worker_latency.h"

using namespace splicegate;

int main(int argc, char** argv) {
  const int connections = argc > 1 ? std::stoi(argv[1]) : 2000000;
  const int hosts = argc > 2 ? std::stoi(argv[2]) : 1000;
  std::vector<SocketAddress> destinations;
  for (int i = 0; i < hosts; ++i) {
    destinations.push_back(*SocketAddress::fromIp("10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1), 443));
  }
  WorkerLatency latency;
  uint64_t sink = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < connections; ++i) {
    // Skewed popularity: a few hosts get most connections, as in real egress traffic.
    const int pick = (i % 10 < 7) ? (i % 8) : (i % hosts);
    const HostRef ref = latency.attach(destinations[pick]);
    const uint64_t base = 100 + static_cast<uint64_t>(i % 5000);
    latency.record(ref, LatencyMetric::kProxyOverhead, base / 50);
    latency.record(ref, LatencyMetric::kConnect, base);
    latency.record(ref, LatencyMetric::kTtfb, base * 3);
    latency.record(ref, LatencyMetric::kDuration, base * 40);
    if (i % 100000 == 0) latency.rebalance();  // housekeeping runs every few seconds in the core
    sink += static_cast<uint64_t>(ref.slot);
  }
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  // Plus the clock reads recording needs beyond what the core reads anyway (three per connection).
  const auto clockStart = std::chrono::steady_clock::now();
  for (int i = 0; i < connections; ++i) sink += EventLoop::monotonicUs();
  const double clockNs = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - clockStart).count();
  std::printf("{\"connections\":%d,\"hosts\":%d,\"record_ns_per_connection\":%.1f,\"clock_read_ns\":%.1f,\"sink\":%llu}\n",
              connections, hosts, ns / connections, clockNs / connections, static_cast<unsigned long long>(sink % 7));
  return 0;
}
