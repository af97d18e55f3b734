// libFuzzer target: SocketAddress's parsing and formatting (cpp/core/socket_address.*).
//
// Input: byte 0 picks the entry point, bytes 1-2 are a port, the rest is the payload.
//   even: the payload is host text for fromIp(), read as a C string (the core's callers pass text
//         that the control layer validated; everything after a NUL is ignored here, as inet_pton
//         would).
//   odd:  the payload is raw sockaddr bytes for fromSockaddr() (what accept/getsockopt hand back).
// Checks, beyond "no crash, no sanitizer report": a parsed address formats to text that parses
// back to the same address (==, hash, isAnyAddress agree), and a sockaddr copy of it is equal.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../core/socket_address.h"

using splicegate::SocketAddress;

namespace {

void require(bool ok, const char* what, const std::string& detail) {
  if (ok) return;
  std::fprintf(stderr, "socket_address_fuzz: %s (%s)\n", what, detail.c_str());
  std::abort();
}

// Every query must work on any address; the round trip only exists for AF_INET / AF_INET6.
void checkAddress(const SocketAddress& a) {
  const std::string text = a.toString();
  const std::string ip = a.ipString();
  (void)a.hash();
  (void)a.isAnyAddress();
  require(a.sameIp(a) && a == a, "address not equal to itself", text);
  if (a.family() != AF_INET && a.family() != AF_INET6) {
    require(a.length() == 0 && a.port() == 0, "unspecified family with a length or port", text);
    return;
  }
  require(a.length() == (a.family() == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)), "length of family", text);
  const std::string expected = a.family() == AF_INET6 ? "[" + ip + "]:" + std::to_string(a.port()) : ip + ":" + std::to_string(a.port());
  require(text == expected, "toString is not ip:port / [ip]:port", text);

  const auto back = SocketAddress::fromIp(ip, a.port());
  require(back.has_value(), "ipString does not parse back", text);
  require(*back == a && back->hash() == a.hash() && back->family() == a.family(), "round trip changed the address", text + " -> " + back->toString());
  require(back->isAnyAddress() == (ip == "0.0.0.0" || ip == "::"), "isAnyAddress disagrees with the text", text);

  const SocketAddress copy = SocketAddress::fromSockaddr(a.sockaddrPtr(), a.length());
  require(copy == a, "fromSockaddr copy differs", text);
  SocketAddress moved = a;
  moved.setPort(static_cast<uint16_t>(a.port() + 1));
  require(moved.port() == static_cast<uint16_t>(a.port() + 1) && moved.sameIp(a) && !(moved == a), "setPort", text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const bool raw = (data[0] & 1) != 0;
  const uint16_t port = static_cast<uint16_t>(data[1] << 8 | data[2]);
  const uint8_t* payload = data + 3;
  const size_t n = size - 3;

  if (!raw) {
    const std::string host(reinterpret_cast<const char*>(payload), strnlen(reinterpret_cast<const char*>(payload), n));
    const auto a = SocketAddress::fromIp(host, port);
    if (!a) return 0;
    require(a->port() == port, "port not kept", host);
    checkAddress(*a);
    return 0;
  }
  // socklen_t is what the kernel reports; it may exceed the storage, which fromSockaddr clamps.
  sockaddr_storage storage{};
  std::memcpy(&storage, payload, n < sizeof storage ? n : sizeof storage);
  checkAddress(SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&storage), static_cast<socklen_t>(n)));
  return 0;
}
