// libFuzzer target for the PROXY protocol parser and writer (cpp/core/proxy_protocol.h).
//
// Build and run (clang; see docs/ARCHITECTURE.md, "PROXY protocol"):
//   cmake -S . -B build/fuzz -DSPLICEGATE_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug
//   cmake --build build/fuzz --target proxy_protocol_fuzz
//   mkdir -p build/fuzz/proxy_protocol_work
//   build/fuzz/proxy_protocol_fuzz build/fuzz/proxy_protocol_work cpp/fuzz/proxy_protocol_corpus -max_total_time=300
//
// For each input it checks, beyond "no crash, no out-of-bounds read" (ASan/UBSan):
//  1. parse is prefix-consistent: every prefix before the first verdict is need_more with a
//     `want` past it, and every prefix from the verdict on gives the same verdict; a done header
//     ends exactly where its verdict came and is no longer than kMaxHeaderLength;
//  2. a done header re-parses to itself when written back (for PROXY headers with addresses);
//  3. parse(write(a, b)) == (a, b) for two addresses taken from the input, in v1 and v2.
// A broken invariant aborts, which libFuzzer reports as a crash with the input saved.

#include <arpa/inet.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../core/proxy_protocol.h"
#include "fuzz_assert.h"

using namespace splicegate;
using namespace splicegate::proxy_protocol;

namespace {

bool sameHeader(const Header& a, const Header& b) {
  return a.version == b.version && a.command == b.command && a.family == b.family &&
         a.length == b.length && a.source == b.source && a.destination == b.destination;
}

bool sameResult(const ParseResult& a, const ParseResult& b) {
  if (a.status != b.status) return false;
  if (a.status == ParseStatus::need_more) return a.want == b.want;
  if (a.status == ParseStatus::error) return a.error == b.error;
  return sameHeader(a.header, b.header);
}

// Parses data[0, n) from a heap copy of exactly n bytes, so reading byte n is an ASan report.
ParseResult parseExact(const uint8_t* data, size_t n) {
  std::vector<uint8_t> copy(data, data + n);
  return parse(copy.data(), n);
}

void checkPrefixes(const uint8_t* data, size_t size) {
  // Past kMaxHeaderLength + 1 bytes nothing can change a verdict; keep the quadratic check bounded.
  const size_t limit = size < kMaxHeaderLength + 1 ? size : kMaxHeaderLength + 1;
  size_t decidedAt = 0;
  ParseResult verdict;
  for (size_t n = 0; n <= limit; ++n) {
    const ParseResult r = parseExact(data, n);
    if (decidedAt == 0 && r.status == ParseStatus::need_more) {
      FUZZ_ASSERT(r.want > n);
      FUZZ_ASSERT(r.want <= kMaxHeaderLength);
      continue;
    }
    if (decidedAt == 0) {
      decidedAt = n;
      verdict = r;
      if (r.status == ParseStatus::done) {
        FUZZ_ASSERT(r.header.length == n);
        FUZZ_ASSERT(r.header.length <= kMaxHeaderLength);
        FUZZ_ASSERT(r.header.version == 1 || r.header.version == 2);
        const bool hasAddresses = r.header.family != AF_UNSPEC;
        FUZZ_ASSERT(!hasAddresses || r.header.command == Command::proxy);
        FUZZ_ASSERT(r.header.source.family() == r.header.family);
        FUZZ_ASSERT(r.header.destination.family() == r.header.family);
      }
      continue;
    }
    FUZZ_ASSERT(sameResult(r, verdict));
  }
  // The whole input, however long, answers as its prefixes did.
  const ParseResult whole = parseExact(data, size);
  if (decidedAt != 0) FUZZ_ASSERT(sameResult(whole, verdict));

  // A decoded header written back in its own version parses to the same addresses.
  if (decidedAt != 0 && verdict.status == ParseStatus::done && verdict.header.family != AF_UNSPEC) {
    const Header& h = verdict.header;
    uint8_t buf[kMaxWrittenLength];
    const size_t n = write(static_cast<Version>(h.version), h.source, h.destination, buf, sizeof buf);
    FUZZ_ASSERT(n > 0);
    const ParseResult again = parseExact(buf, n);
    FUZZ_ASSERT(again.status == ParseStatus::done);
    FUZZ_ASSERT(again.header.source == h.source);
    FUZZ_ASSERT(again.header.destination == h.destination);
  }
}

// An address from 19 input bytes: a family selector, 16 address bytes, a port.
SocketAddress takeAddress(const uint8_t* p) {
  const uint16_t port = static_cast<uint16_t>((p[17] << 8) | p[18]);
  if (p[0] & 1) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_addr, p + 1, 4);
    sin.sin_port = htons(port);
    return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  std::memcpy(&sin6.sin6_addr, p + 1, 16);
  sin6.sin6_port = htons(port);
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof sin6);
}

// What the header carries for `a` beside `other`: IPv4 stays IPv4 only when both are.
SocketAddress onWire(const SocketAddress& a, const SocketAddress& other) {
  if (a.family() != AF_INET || other.family() != AF_INET6) return a;
  const auto* sin = reinterpret_cast<const sockaddr_in*>(a.sockaddrPtr());
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr.s6_addr[10] = 0xFF;
  sin6.sin6_addr.s6_addr[11] = 0xFF;
  std::memcpy(&sin6.sin6_addr.s6_addr[12], &sin->sin_addr, 4);
  sin6.sin6_port = sin->sin_port;
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof sin6);
}

void checkRoundTrip(const uint8_t* data, size_t size) {
  if (size < 38) return;
  const SocketAddress src = takeAddress(data + size - 38);
  const SocketAddress dst = takeAddress(data + size - 19);
  for (Version v : {Version::v1, Version::v2}) {
    uint8_t buf[kMaxWrittenLength];
    const size_t n = write(v, src, dst, buf, sizeof buf);
    FUZZ_ASSERT(n > 0);
    const ParseResult r = parseExact(buf, n);
    FUZZ_ASSERT(r.status == ParseStatus::done);
    FUZZ_ASSERT(r.header.length == n);
    FUZZ_ASSERT(r.header.command == Command::proxy);
    FUZZ_ASSERT(r.header.source == onWire(src, dst));
    FUZZ_ASSERT(r.header.destination == onWire(dst, src));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  checkPrefixes(data, size);
  checkRoundTrip(data, size);
  return 0;
}
