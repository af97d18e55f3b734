#include "http_address.h"

#include <arpa/inet.h>

#include <cstring>

namespace splicegate::http {

namespace {

// 1..65535, decimal digits only, no sign, no leading zero.
bool parsePort(const char* p, size_t n, uint16_t& out) {
  if (n == 0 || n > 5 || p[0] == '0') return false;
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (p[i] < '0' || p[i] > '9') return false;
    v = v * 10 + static_cast<uint32_t>(p[i] - '0');
  }
  if (v > 65535) return false;
  out = static_cast<uint16_t>(v);
  return true;
}

}  // namespace

std::optional<SocketAddress> parseHostPort(const char* data, size_t length) {
  // INET6_ADDRSTRLEN-sized copy for inet_pton, which wants a terminated string.
  char ip[INET6_ADDRSTRLEN + 1];
  const char* portStart = nullptr;
  size_t ipLength = 0;
  int family = AF_INET;
  if (length > 0 && data[0] == '[') {
    const void* close = std::memchr(data, ']', length);
    if (close == nullptr) return std::nullopt;
    const char* end = static_cast<const char*>(close);
    ipLength = static_cast<size_t>(end - data - 1);
    if (end + 1 >= data + length || end[1] != ':') return std::nullopt;
    portStart = end + 2;
    if (ipLength == 0 || ipLength >= sizeof ip) return std::nullopt;
    std::memcpy(ip, data + 1, ipLength);
    family = AF_INET6;
  } else {
    // IPv4: the last colon separates the port; an unbracketed IPv6 literal has more than one.
    const void* colon = std::memchr(data, ':', length);
    if (colon == nullptr) return std::nullopt;
    const char* c = static_cast<const char*>(colon);
    ipLength = static_cast<size_t>(c - data);
    if (ipLength == 0 || ipLength > 15) return std::nullopt;
    std::memcpy(ip, data, ipLength);
    portStart = c + 1;
  }
  ip[ipLength] = '\0';
  uint16_t port = 0;
  if (!parsePort(portStart, static_cast<size_t>(data + length - portStart), port)) return std::nullopt;
  // inet_pton accepts only the canonical literal forms: no zone id, no leading zeros in IPv4.
  uint8_t raw[16];
  if (::inet_pton(family, ip, raw) != 1) return std::nullopt;
  return SocketAddress::fromIp(ip, port);
}

}  // namespace splicegate::http
