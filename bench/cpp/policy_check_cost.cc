// Micro-benchmark: nanoseconds per DestinationPolicy::check() at 10, 1,000 and 10,000 rules, plus
// the compile time. Printed as one JSON line per case (docs/POLICY.md quotes them).
//
// "mixed": random IPv4 (80%) and IPv6 (20%) rules, prefixes /8../32 and /16../128, half with 1-3
// port ranges; probes are half inside some rule's CIDR, half uniform over the address space, with
// some IPv4-mapped forms. "nested": the worst shape for the walk: the rules stacked on 25 nested
// CIDRs around one address, each CIDR listing hundreds of distinct ports, probed on a port none
// lists, so every check walks all 25 levels and searches each one's port table.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "../../cpp/core/policy.h"

using namespace splicegate;

namespace {

using Clock = std::chrono::steady_clock;

SocketAddress v4(uint32_t ip, uint16_t port) { return SocketAddress::fromIpv4(ip, port); }

SocketAddress v6(const uint8_t* bytes, uint16_t port) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  std::copy(bytes, bytes + 16, sin6.sin6_addr.s6_addr);
  sin6.sin6_port = htons(port);
  return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
}

struct Result {
  double compileMs;
  double nsPerCheck;     // wall clock
  double cpuNsPerCheck;  // this thread's CPU time: the fairer figure on a shared, loaded machine
  size_t allowed;
};

double threadCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

Result measure(const PolicyRules& rules, const std::vector<SocketAddress>& probes, int rounds) {
  const auto c0 = Clock::now();
  DestinationPolicy policy(rules);
  const double compileMs = std::chrono::duration<double, std::milli>(Clock::now() - c0).count();
  size_t allowed = 0;
  for (const SocketAddress& p : probes) allowed += policy.check(p).allow ? 1 : 0;  // warm up
  const auto t0 = Clock::now();
  const double cpu0 = threadCpuNs();
  for (int r = 0; r < rounds; ++r) {
    for (const SocketAddress& p : probes) allowed += policy.check(p).allow ? 1 : 0;
  }
  const double cpuNs = threadCpuNs() - cpu0;
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
  const double checks = static_cast<double>(probes.size()) * rounds;
  return {compileMs, ns / checks, cpuNs / checks, allowed};
}

void print(const char* name, int count, const Result& res) {
  std::printf("{\"case\":\"%s\",\"rules\":%d,\"ns_per_check\":%.1f,\"cpu_ns_per_check\":%.1f,\"compile_ms\":%.2f,\"allowed\":%zu}\n",
              name, count, res.nsPerCheck, res.cpuNsPerCheck, res.compileMs, res.allowed);
}

void mixed(int count, std::mt19937_64& rng) {
  PolicyRules rules;
  rules.defaultAllow = false;
  for (int i = 0; i < count; ++i) {
    PolicyRule r;
    r.name = "r" + std::to_string(i);
    r.allow = rng() % 3 != 0;
    IpCidr c;
    if (rng() % 5 != 0) {
      c.family = AF_INET;
      c.prefix = static_cast<uint8_t>(8 + rng() % 25);
      const uint32_t ip = static_cast<uint32_t>(rng());
      c.bytes[0] = static_cast<uint8_t>(ip >> 24);
      c.bytes[1] = static_cast<uint8_t>(ip >> 16);
      c.bytes[2] = static_cast<uint8_t>(ip >> 8);
      c.bytes[3] = static_cast<uint8_t>(ip);
    } else {
      c.family = AF_INET6;
      c.prefix = static_cast<uint8_t>(16 + rng() % 113);
      c.bytes[0] = 0x20;
      c.bytes[1] = 0x01;
      for (int b = 2; b < 16; ++b) c.bytes[b] = static_cast<uint8_t>(rng());
    }
    r.cidrs.push_back(c);
    if (rng() % 2 == 0) {
      const int ranges = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < ranges; ++k) {
        const auto first = static_cast<uint16_t>(1 + rng() % 10000);
        r.ports.push_back(PortRange{first, static_cast<uint16_t>(first + rng() % 100)});
      }
    }
    rules.rules.push_back(std::move(r));
  }
  std::vector<SocketAddress> probes;
  for (int i = 0; i < 100000; ++i) {
    const auto port = static_cast<uint16_t>(1 + rng() % 10100);
    const PolicyRule& r = rules.rules[rng() % rules.rules.size()];
    const IpCidr& c = r.cidrs[0];
    const bool inside = rng() % 2 == 0;
    if (c.family == AF_INET || !inside) {
      uint32_t ip = static_cast<uint32_t>(rng());
      if (inside) {
        const uint32_t net = (uint32_t{c.bytes[0]} << 24) | (uint32_t{c.bytes[1]} << 16) | (uint32_t{c.bytes[2]} << 8) | c.bytes[3];
        const uint32_t mask = c.prefix == 0 ? 0 : ~uint32_t{0} << (32 - c.prefix);
        ip = (net & mask) | (ip & ~mask);
      }
      if (i % 10 == 0) {  // some IPv4-mapped forms
        uint8_t b[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, static_cast<uint8_t>(ip >> 24), static_cast<uint8_t>(ip >> 16),
                         static_cast<uint8_t>(ip >> 8), static_cast<uint8_t>(ip)};
        probes.push_back(v6(b, port));
      } else {
        probes.push_back(v4(ip, port));
      }
    } else {
      uint8_t b[16];
      for (int k = 0; k < 16; ++k) b[k] = static_cast<uint8_t>(rng());
      for (int bit = 0; bit < c.prefix; ++bit) {
        const int mask = 0x80 >> (bit % 8);
        b[bit / 8] = static_cast<uint8_t>((b[bit / 8] & ~mask) | (c.bytes[bit / 8] & mask));
      }
      probes.push_back(v6(b, port));
    }
  }
  const Result res = measure(rules, probes, 20);
  print("mixed", count, res);
}

void nested(int count) {
  PolicyRules rules;
  const int levels = 25;  // /8 .. /32 around 10.1.2.3
  for (int i = 0; i < count; ++i) {
    PolicyRule r;
    r.name = "n" + std::to_string(i);
    r.allow = false;
    IpCidr c;
    c.family = AF_INET;
    c.prefix = static_cast<uint8_t>(8 + i % levels);
    c.bytes[0] = 10;
    c.bytes[1] = 1;
    c.bytes[2] = 2;
    c.bytes[3] = 3;
    r.cidrs.push_back(c);
    const auto port = static_cast<uint16_t>(2 + 2 * (i / levels));  // even ports only
    r.ports.push_back(PortRange{port, port});
    rules.rules.push_back(std::move(r));
  }
  std::vector<SocketAddress> probes;
  for (int i = 0; i < 1000; ++i) probes.push_back(v4(0x0a010203u, 1));  // port 1: no rule lists it
  const Result res = measure(rules, probes, 200);
  print("nested", count, res);
}

}  // namespace

int main() {
  std::mt19937_64 rng(42);
  for (int count : {10, 1000, 10000}) mixed(count, rng);
  for (int count : {10, 1000, 10000}) nested(count);
  return 0;
}
