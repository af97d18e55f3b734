// Micro-benchmark: what the access log costs per connection, split by thread. On the loop thread:
// the sampler, one append into the bounded buffer and filling the record (what WorkerCore does at
// a close), and the swap per drain. On the worker's JS thread: formatting the JSON line. Printed as
// one JSON line for bench/access-log-cost.ts.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "../../cpp/core/access_log.h"
#include "../../cpp/core/worker_events.h"

using namespace splicegate;

int main(int argc, char** argv) {
  const int connections = argc > 1 ? std::stoi(argv[1]) : 2000000;
  const size_t batch = 8192;  // ACCESS_LOG_CAPACITY: one drain's worth at most
  const SocketAddress client = *SocketAddress::fromIp("10.10.1.2", 41432);
  const SocketAddress destination = *SocketAddress::fromIp("93.184.216.34", 443);
  const std::string listener = "egress";
  BoundedBuffer<AccessRecord> buffer(batch);
  AccessSampler sampler(1.0, 1);
  std::vector<AccessRecord> drained;
  std::vector<PolicyRules> policies(1);
  AccessLogNames names(policies);
  uint64_t sink = 0;
  double loopNs = 0;
  double formatNs = 0;
  std::string lines;
  for (int done = 0; done < connections;) {
    const int n = std::min<int>(static_cast<int>(batch), connections - done);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      if (!sampler.take()) continue;
      AccessRecord* r = buffer.append();
      if (!r) continue;
      r->wallTimeMs = 1764266400123ULL + static_cast<uint64_t>(i);
      r->setListener(listener);
      r->client.set(client);
      r->destination.set(destination);
      r->source = DestinationSource::kSoOriginalDst;
      r->policy = AccessRecord::Policy::kAllow;
      r->bytesSent = 517 + static_cast<uint64_t>(i);
      r->bytesReceived = 100000 + static_cast<uint64_t>(i);
      r->connectUs = 400 + static_cast<uint64_t>(i % 100);
      r->ttfbUs = 1000;
      r->durationUs = 25000;
    }
    buffer.swapOut(drained);
    auto t1 = std::chrono::steady_clock::now();
    lines.clear();
    lines.reserve(drained.size() * 400);
    for (const AccessRecord& r : drained) appendAccessLine(r, names, 1, lines);
    auto t2 = std::chrono::steady_clock::now();
    sink += lines.size();
    loopNs += std::chrono::duration<double, std::nano>(t1 - t0).count();
    formatNs += std::chrono::duration<double, std::nano>(t2 - t1).count();
    done += n;
  }
  std::printf("{\"connections\":%d,\"loop_ns_per_connection\":%.1f,\"format_ns_per_connection\":%.1f,\"line_bytes\":%.0f,\"record_bytes\":%zu,\"sink\":%llu}\n",
              connections, loopNs / connections, formatNs / connections,
              static_cast<double>(lines.size()) / static_cast<double>(drained.size()), sizeof(AccessRecord),
              static_cast<unsigned long long>(sink));
  return 0;
}
