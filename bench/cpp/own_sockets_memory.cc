// Not a test: the heap the own-socket registry (cpp/core/own_sockets.h) costs per upstream socket,
// and the sizes of the per-connection types it and the access log put into every Connection.
// Adds N registrations (IPv4 4-tuples spread over local ports, as connect() spreads them; then
// the same for IPv6) to a fresh registry and reads mallinfo2() before and after: in-use heap
// (uordblks) plus mmapped blocks (hblkhd; a large table is mmapped). Prints one JSON line per case;
// "emptied" is what stays in use after every registration ended: glibc's tcache keeps a few freed
// small chunks per thread, which mallinfo2 counts as in use (tens of KB here), so small figures
// there are the allocator's, not the registry's.
//   own_sockets_memory [N=100000]
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../cpp/core/access_log.h"
#include "../../cpp/core/own_sockets.h"

using namespace splicegate;

namespace {

size_t heapInUse() {
  const struct mallinfo2 m = ::mallinfo2();
  return m.uordblks + m.hblkhd;
}

SocketAddress v4(uint32_t ip, uint16_t port) { return SocketAddress::fromIpv4(ip, port); }

SocketAddress v6(uint32_t low, uint16_t port) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr.s6_addr[0] = 0xfd;
  sin6.sin6_addr.s6_addr[12] = static_cast<uint8_t>(low >> 24);
  sin6.sin6_addr.s6_addr[13] = static_cast<uint8_t>(low >> 16);
  sin6.sin6_addr.s6_addr[14] = static_cast<uint8_t>(low >> 8);
  sin6.sin6_addr.s6_addr[15] = static_cast<uint8_t>(low);
  sin6.sin6_port = htons(port);
  return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
}

// Entry i: local port 1024 + i % 60000 on one of a few local IPs, to one of 64 destinations.
SocketAddress localOf(bool six, size_t i) {
  const uint16_t port = static_cast<uint16_t>(1024 + i % 60000);
  const uint32_t ip = 0x0a000001u + static_cast<uint32_t>(i / 60000);
  return six ? v6(ip, port) : v4(ip, port);
}
SocketAddress remoteOf(bool six, size_t i) {
  const uint32_t ip = 0x5db8d800u + static_cast<uint32_t>(i % 64);
  return six ? v6(ip, 443) : v4(ip, 443);
}

void measure(const char* family, bool six, size_t n) {
  std::vector<OwnSockets::Registration> regs;
  regs.reserve(n);
  OwnSockets* reg = new OwnSockets();
  const size_t before = heapInUse();
  for (size_t i = 0; i < n; ++i) regs.push_back(reg->add(OwnSockets::Key(localOf(six, i), remoteOf(six, i))));
  const size_t after = heapInUse();
  regs.clear();
  const size_t cleared = heapInUse();
  std::printf("{\"case\":\"registry_%s\",\"entries\":%zu,\"heap_bytes\":%zu,\"bytes_per_entry\":%.1f}\n", family, n,
              after - before, static_cast<double>(after - before) / static_cast<double>(n));
  std::printf("{\"case\":\"registry_%s_emptied\",\"heap_bytes_left\":%zd}\n", family,
              static_cast<ssize_t>(cleared) - static_cast<ssize_t>(before));
  delete reg;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100000;
  std::printf("{\"case\":\"sizes\",\"Registration\":%zu,\"Key\":%zu,\"PackedAddress\":%zu,\"AccessRecord\":%zu}\n",
              sizeof(OwnSockets::Registration), sizeof(OwnSockets::Key), sizeof(PackedAddress), sizeof(AccessRecord));
  measure("ipv4", false, n);
  measure("ipv6", true, n);
  return 0;
}
