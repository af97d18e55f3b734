// Unit tests for the latency histograms: HdrHistogram's bucket layout (expected indexes were taken
// from hdr-histogram-js 3.0.1 with the same parameters), merging, clamping, the per-host table's
// memory bound and busiest-host selection, and the native export format. Plain checks and a
// closing "N passed, N failed" line; ctest runs the binary.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "test_harness.h"
#include "../core/hdr_histogram.h"
#include "../core/host_latency.h"
#include "../core/latency_export.h"
#include "../core/socket_address.h"
#include "../core/worker_latency.h"

using namespace splicegate;

#include "alloc_counter.h"

namespace {

using splicegate::testing::run;

constexpr uint64_t kHour = kDefaultHighestTrackableUs;

SocketAddress host(uint32_t n, uint16_t port = 443) {
  char ip[32];
  std::snprintf(ip, sizeof ip, "10.%u.%u.%u", (n >> 16) & 255, (n >> 8) & 255, n & 255);
  return *SocketAddress::fromIp(ip, port);
}

// value -> (index, lowest equivalent, highest equivalent), from hdr-histogram-js.
struct Expected {
  uint64_t value;
  size_t index;
  uint64_t lowest;
  uint64_t highest;
};

void checkLayout(int digits, size_t length, int buckets, uint64_t subBuckets, const std::vector<Expected>& table) {
  const HdrLayout layout(kHour, digits);
  CHECK_EQ(layout.countsLength(), length);
  CHECK_EQ(layout.bucketCount(), buckets);
  CHECK_EQ(layout.subBucketCount(), subBuckets);
  for (const Expected& e : table) {
    CHECK_EQ(layout.indexOf(e.value), e.index);
    CHECK_EQ(layout.valueAtIndex(e.index), e.lowest);
    CHECK_EQ(layout.lowestEquivalentValue(e.value), e.lowest);
    CHECK_EQ(layout.highestEquivalentValue(e.value), e.highest);
  }
}

void layoutTests() {
  run("layout: 3 digits, 1 us .. 1 h matches HdrHistogram", [] {
    checkLayout(3, 23552, 22, 2048,
                {{0, 0, 0, 0},
                 {1, 1, 1, 1},
                 {2047, 2047, 2047, 2047},
                 {2048, 2048, 2048, 2049},
                 {2049, 2048, 2048, 2049},
                 {2050, 2049, 2050, 2051},
                 {4095, 3071, 4094, 4095},
                 {4096, 3072, 4096, 4099},
                 {100000, 7706, 99968, 100031},
                 {123456, 8073, 123456, 123519},
                 {1000000, 11169, 999936, 1000447},
                 {3600000000, 23220, 3598712832, 3600809983}});
  });
  run("layout: 2 digits matches HdrHistogram", [] {
    checkLayout(2, 3328, 25, 256,
                {{255, 255, 255, 255},
                 {256, 256, 256, 257},
                 {511, 383, 510, 511},
                 {1000, 506, 1000, 1003},
                 {2048, 640, 2048, 2063},
                 {4097, 768, 4096, 4127},
                 {123456, 1393, 123392, 123903},
                 {3600000000, 3286, 3590324224, 3607101439}});
  });
  run("layout: 1 digit matches HdrHistogram", [] {
    checkLayout(1, 464, 28, 32,
                {{31, 31, 31, 31},
                 {127, 63, 124, 127},
                 {256, 80, 256, 271},
                 {1000, 111, 992, 1023},
                 {1000000, 270, 983040, 1015807},
                 {3600000000, 458, 3489660928, 3623878655}});
  });
  run("layout: every index round-trips through its lowest and highest value", [] {
    for (int digits = 1; digits <= 3; ++digits) {
      const HdrLayout layout(kHour, digits);
      for (size_t i = 0; i < layout.countsLength(); ++i) {
        const uint64_t low = layout.valueAtIndex(i);
        const uint64_t high = layout.highestEquivalentValue(low);
        CHECK_EQ(layout.indexOf(low), i);
        CHECK_EQ(layout.indexOf(high), i);
        if (i + 1 < layout.countsLength()) CHECK_EQ(layout.valueAtIndex(i + 1), high + 1);
      }
      // The last slot covers the configured highest value.
      CHECK(layout.indexOf(kHour) < layout.countsLength());
    }
  });
  run("layout: out-of-range parameters are corrected, not rejected", [] {
    const HdrLayout zero(0, 0);
    CHECK_EQ(zero.significantDigits(), 1);
    CHECK_EQ(zero.highestTrackableValue(), uint64_t{2});
    const HdrLayout big(kHour, 9);
    CHECK_EQ(big.significantDigits(), 5);
  });
}

void histogramTests() {
  run("histogram: merging two equals recording everything into one", [] {
    std::mt19937_64 rng(42);
    std::lognormal_distribution<double> latency(7.0, 2.0);  // ~1 ms median, long tail
    HdrHistogram a, b, all;
    for (int i = 0; i < 50000; ++i) {
      const auto v = static_cast<uint64_t>(latency(rng));
      (i % 3 == 0 ? a : b).record(v);
      all.record(v);
    }
    a.add(b);
    CHECK_EQ(a.totalCount(), all.totalCount());
    CHECK_EQ(a.sum(), all.sum());
    CHECK_EQ(a.max(), all.max());
    for (size_t i = 0; i < all.layout().countsLength(); ++i) CHECK_EQ(a.countAt(i), all.countAt(i));
  });
  run("histogram: adding a coarser histogram re-records its bucket floors", [] {
    CoarseHdrHistogram coarse(kHour, 2);
    HdrHistogram fine, expected;
    for (uint64_t v : {1ull, 300ull, 4097ull, 123456ull, 123457ull}) {
      coarse.record(v);
      expected.record(coarse.layout().lowestEquivalentValue(v));
    }
    fine.add(coarse);
    CHECK_EQ(fine.totalCount(), uint64_t{5});
    CHECK_EQ(fine.sum(), coarse.sum());  // the exact sum survives the re-bucketing
    CHECK_EQ(fine.max(), uint64_t{123457});
    for (size_t i = 0; i < fine.layout().countsLength(); ++i) CHECK_EQ(fine.countAt(i), expected.countAt(i));
  });
  run("histogram: values above the highest trackable value are clamped", [] {
    HdrHistogram h;
    h.record(kHour * 5);
    h.record(kHour);
    h.record(7);
    CHECK_EQ(h.totalCount(), uint64_t{3});
    CHECK_EQ(h.clampedCount(), uint64_t{1});
    CHECK_EQ(h.max(), kHour);
    CHECK_EQ(h.countAtValue(kHour), uint64_t{2});
    CHECK_EQ(h.sum(), 2 * kHour + 7);
  });
  run("histogram: a 32-bit count saturates instead of wrapping", [] {
    CoarseHdrHistogram h(kHour, 2);
    h.recordCount(10, 0xFFFFFFFFull);
    CHECK(!h.saturated());
    h.record(10);
    CHECK(h.saturated());
    CHECK_EQ(h.countAtValue(10), uint64_t{0xFFFFFFFF});
    CHECK_EQ(h.totalCount(), uint64_t{0x100000000});
  });
  run("histogram: record allocates nothing and memoryBytes is the counts array", [] {
    HdrHistogram h;
    CHECK_EQ(h.memoryBytes(), sizeof(HdrHistogram) + 23552 * sizeof(uint64_t));
    CoarseHdrHistogram c(kHour, 2);
    CHECK_EQ(c.memoryBytes(), sizeof(CoarseHdrHistogram) + 3328 * sizeof(uint32_t));
    const size_t before = g_allocations;
    for (uint64_t v = 0; v < 100000; v += 7) h.record(v * 977);
    CHECK_EQ(g_allocations, before);
  });
  run("histogram: forEachNonZero yields lowest values in order; reset empties", [] {
    HdrHistogram h;
    for (uint64_t v : {5000000ull, 1ull, 2500ull, 2501ull}) h.record(v);
    std::vector<uint64_t> values, counts;
    h.forEachNonZero([&](uint64_t v, uint64_t c) {
      values.push_back(v);
      counts.push_back(c);
    });
    CHECK(values == (std::vector<uint64_t>{1, 2500, 4997120}));
    CHECK(counts == (std::vector<uint64_t>{1, 2, 1}));
    h.reset();
    CHECK_EQ(h.totalCount(), uint64_t{0});
    CHECK_EQ(h.nonZeroBuckets(), size_t{0});
  });
}

uint64_t totalOf(const HostHistograms& h, size_t index) { return h.at(index).totalCount(); }

void hostTableTests() {
  run("hosts: memory is fixed at construction, and bounded, with 10,000 live hosts", [] {
    const HostLatencyOptions options;  // defaults: 64 tracked, 1024 candidates, 2 digits
    const size_t bound = HostLatencyTable::memoryBoundBytes(options);
    HostLatencyTable table(options);
    CHECK_EQ(table.memoryBytes(), bound);
    // The documented figure (docs/LATENCY.md, host_latency.h): under 3 MB per worker.
    CHECK(bound < 3u * 1024 * 1024);
    std::printf("     per-host table: %zu bytes (%zu per tracked host's histograms)\n", bound,
                HostHistograms::bytesFor(options.highestTrackableUs, options.significantDigits));
    std::vector<SocketAddress> hosts;
    for (uint32_t i = 0; i < 10000; ++i) hosts.push_back(host(i));
    const size_t before = g_allocations;
    for (int round = 0; round < 3; ++round) {
      for (const SocketAddress& a : hosts) {
        const HostRef ref = table.attach(a);
        table.record(ref, LatencyMetric::kConnect, 150);
        table.record(ref, LatencyMetric::kTtfb, 900);
        table.record(ref, LatencyMetric::kDuration, 50000);
        table.record(ref, LatencyMetric::kProxyOverhead, 3);  // not a per-host metric: ignored
      }
      table.rebalance();
    }
    CHECK_EQ(g_allocations, before);
    CHECK_EQ(table.memoryBytes(), bound);
    CHECK_EQ(table.trackedCount(), size_t{64});
    // No sample lost: tracked hosts plus "other hosts" hold all 30,000 of each metric.
    uint64_t connects = totalOf(table.otherHosts(), 0);
    table.forEachTracked([&](const SocketAddress&, const HostHistograms& h) { connects += totalOf(h, 0); });
    CHECK_EQ(connects, uint64_t{30000});
  });
  run("hosts: memory bound scales with tracked hosts, not live hosts", [] {
    HostLatencyOptions small;
    small.trackedHosts = 8;
    HostLatencyOptions large;
    large.trackedHosts = 128;
    const size_t perHost = HostHistograms::bytesFor(kHour, 2);
    CHECK(perHost < 41000);
    CHECK(HostLatencyTable::memoryBoundBytes(large) - HostLatencyTable::memoryBoundBytes(small) >= 120 * perHost);
    HostLatencyTable table(small);
    CHECK_EQ(table.memoryBytes(), HostLatencyTable::memoryBoundBytes(small));
  });
  run("hosts: the busiest hosts take the slots from hosts seen first", [] {
    HostLatencyOptions options;
    options.trackedHosts = 16;
    options.candidates = 256;
    HostLatencyTable table(options);
    // 5,000 one-off hosts arrive first and fill every slot...
    for (uint32_t i = 0; i < 5000; ++i) table.record(table.attach(host(i)), LatencyMetric::kConnect, 100);
    // ...then 10 busy hosts, interleaved with more one-off traffic.
    for (int round = 0; round < 200; ++round) {
      for (uint32_t b = 0; b < 10; ++b) table.record(table.attach(host(100000 + b, 80)), LatencyMetric::kConnect, 2000);
      table.record(table.attach(host(5000 + static_cast<uint32_t>(round))), LatencyMetric::kConnect, 100);
    }
    table.rebalance();
    size_t busyTracked = 0;
    table.forEachTracked([&](const SocketAddress& a, const HostHistograms&) {
      if (a.port() == 80) ++busyTracked;
    });
    CHECK_EQ(busyTracked, size_t{10});
    // The busy hosts keep their slots (and record there) from now on.
    const HostRef ref = table.attach(host(100003, 80));
    CHECK(ref.slot >= 0);
    uint64_t total = totalOf(table.otherHosts(), 0);
    table.forEachTracked([&](const SocketAddress&, const HostHistograms& h) { total += totalOf(h, 0); });
    CHECK_EQ(total, uint64_t{5000 + 200 * 11});
  });
  run("hosts: a connection holding a reassigned slot records into other hosts", [] {
    HostLatencyOptions options;
    options.trackedHosts = 1;
    options.candidates = 8;
    HostLatencyTable table(options);
    const HostRef quiet = table.attach(host(1));
    CHECK(quiet.slot == 0);
    for (int i = 0; i < 10; ++i) table.attach(host(2));
    table.rebalance();  // host 2 (10 connections) takes the slot from host 1 (1 connection)
    SocketAddress tracked;
    table.forEachTracked([&](const SocketAddress& a, const HostHistograms&) { tracked = a; });
    CHECK(tracked == host(2));
    const uint64_t otherBefore = totalOf(table.otherHosts(), 2);
    table.record(quiet, LatencyMetric::kDuration, 1234);  // host 1's connection closes late
    CHECK_EQ(totalOf(table.otherHosts(), 2), otherBefore + 1);
    table.forEachTracked([&](const SocketAddress&, const HostHistograms& h) { CHECK_EQ(totalOf(h, 2), uint64_t{0}); });
  });
  run("hosts: the candidate index stays consistent through heavy churn", [] {
    HostLatencyOptions options;
    options.trackedHosts = 4;
    options.candidates = 64;
    HostLatencyTable table(options);
    std::mt19937 rng(7);
    for (int i = 0; i < 200000; ++i) table.attach(host(rng() % 3000));
    // Every tracked host is still found (attach returns its own slot, not a new one).
    std::vector<std::pair<SocketAddress, int32_t>> seen;
    for (int i = 0; i < 4; ++i) table.attach(host(9999999));
    table.rebalance();
    table.forEachTracked([&](const SocketAddress& a, const HostHistograms&) { seen.push_back({a, -1}); });
    CHECK_EQ(seen.size(), size_t{4});
    for (auto& s : seen) s.second = table.attach(s.first).slot;
    for (auto& s : seen) CHECK_EQ(table.attach(s.first).slot, s.second);
    CHECK_EQ(table.trackedCount(), size_t{4});
  });
}

void exportTests() {
  run("export: format v1 layout, byte for byte (shared with test/latency/native-format.test.ts)", [] {
    HdrHistogram connect(kHour, 3);
    for (uint64_t v : {1ull, 1ull, 2500ull, 2500ull, 2500ull, 5000000ull}) connect.record(v);
    HdrHistogram ttfb(kHour, 2);
    for (uint64_t v : {1500ull, 250000ull, 4000000000ull}) ttfb.record(v);
    const std::vector<double> out = flattenLatencySets<uint64_t>(
        {{{LatencyMetric::kConnect, &connect}}, {{LatencyMetric::kTtfb, &ttfb}}});
    const std::vector<double> expected = {
        1, 2,                                                                                   // version, sets
        1, 0, 3, 3600000000, 6, 5007502, 5000000, 0, 3, 1, 2, 2500, 3, 4997120, 1,              // set 0
        1, 2, 2, 3600000000, 3, 3600251500, 3600000000, 1, 3, 1496, 1, 249856, 1, 3590324224, 1  // set 1
    };
    CHECK(out == expected);
  });
  run("export: a worker's export has global, per-host and other-hosts sets", [] {
    WorkerLatencyOptions options;
    options.hosts.trackedHosts = 2;
    WorkerLatency latency(options);
    for (uint32_t i = 0; i < 3; ++i) {
      const HostRef ref = latency.attach(host(i));
      latency.record(ref, LatencyMetric::kProxyOverhead, 4);
      latency.record(ref, LatencyMetric::kConnect, 100 + i);
      latency.record(ref, LatencyMetric::kTtfb, 1000);
      latency.record(ref, LatencyMetric::kDuration, 20000);
    }
    const LatencyExport out = exportLatency(latency);
    CHECK(out.hostAddresses == (std::vector<std::string>{"10.0.0.0:443", "10.0.0.1:443"}));
    // global: version, 1 set, 4 blocks; the connect block first with 3 distinct values.
    CHECK(out.global[0] == 1 && out.global[1] == 1 && out.global[2] == 4);
    CHECK(out.global[3] == 0 && out.global[6] == 3 && out.global[10] == 3);
    // hosts: 2 sets of 3 blocks (connect, ttfb, duration); other: 1 set, the third host.
    CHECK(out.hosts[1] == 2 && out.hosts[2] == 3);
    CHECK(out.otherHosts[1] == 1 && out.otherHosts[2] == 3 && out.otherHosts[6] == 1);
    CHECK(latency.memoryBytes() > 4 * 23552 * 8);
  });
}

}  // namespace

int main() {
  layoutTests();
  histogramTests();
  hostTableTests();
  exportTests();
  return splicegate::testing::finish();
}
