#include "socket_address.h"

#include <arpa/inet.h>

#include <cstring>
#include <functional>

namespace splicegate {

std::optional<SocketAddress> SocketAddress::fromIp(const std::string& host, uint16_t port) {
  SocketAddress out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage_);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    return out;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    return out;
  }
  return std::nullopt;
}

SocketAddress SocketAddress::fromIpv4(uint32_t ip, uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(ip);
  sin.sin_port = htons(port);
  return fromSockaddr(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
}

SocketAddress SocketAddress::fromSockaddr(const sockaddr* sa, socklen_t len) {
  SocketAddress out;
  if (len > sizeof(out.storage_)) len = sizeof(out.storage_);
  std::memcpy(&out.storage_, sa, len);
  return out;
}

uint16_t SocketAddress::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

size_t SocketAddress::copyIpTo(uint8_t* out) const {
  if (family() == AF_INET) {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, 4);
    return 4;
  }
  if (family() == AF_INET6) {
    std::memcpy(out, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, 16);
    return 16;
  }
  return 0;
}

void SocketAddress::setPort(uint16_t port) {
  if (family() == AF_INET) reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
  if (family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
}

bool SocketAddress::isAnyAddress() const {
  if (family() == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr == htonl(INADDR_ANY);
  }
  if (family() == AF_INET6) {
    return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
  }
  return false;
}

socklen_t SocketAddress::length() const {
  if (family() == AF_INET) return sizeof(sockaddr_in);
  if (family() == AF_INET6) return sizeof(sockaddr_in6);
  return 0;
}

bool SocketAddress::sameIp(const SocketAddress& other) const {
  if (family() != other.family()) return false;
  if (family() == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(&other.storage_)->sin_addr.s_addr;
  }
  if (family() == AF_INET6) {
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(&other.storage_)->sin6_addr,
                       sizeof(in6_addr)) == 0;
  }
  return true;
}

bool SocketAddress::operator==(const SocketAddress& other) const {
  return sameIp(other) && port() == other.port();
}

std::string SocketAddress::ipString() const {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
  } else if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf, sizeof buf);
  } else {
    return "unspec";
  }
  return buf;
}

std::string SocketAddress::toString() const {
  const std::string ip = ipString();
  if (family() == AF_INET6) return "[" + ip + "]:" + std::to_string(port());
  return ip + ":" + std::to_string(port());
}

size_t SocketAddress::hash() const {
  // FNV-1a over family, IP bytes and port: cheap and good enough for a host map.
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  };
  const uint16_t fam = static_cast<uint16_t>(family());
  const uint16_t p = port();
  mix(&fam, sizeof fam);
  if (family() == AF_INET) mix(&reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, 4);
  if (family() == AF_INET6) mix(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, 16);
  mix(&p, sizeof p);
  return static_cast<size_t>(h);
}

}  // namespace splicegate
