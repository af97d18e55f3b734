// An IPv4 or IPv6 socket address with value semantics: parsing from the control layer's literal
// form, formatting as "ip:port" / "[v6]:port", comparison, and hashing for host-keyed maps.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>

namespace splicegate {

class SocketAddress {
 public:
  SocketAddress() { storage_.ss_family = AF_UNSPEC; }

  // host is a literal IP ("10.0.0.1", "::1"); no name resolution ever happens in the core.
  static std::optional<SocketAddress> fromIp(const std::string& host, uint16_t port);
  static SocketAddress fromSockaddr(const sockaddr* sa, socklen_t len);
  // An IPv4 address from its number (host byte order, 10.0.0.1 = 0x0a000001), for tables and tests
  // that generate addresses.
  static SocketAddress fromIpv4(uint32_t ip, uint16_t port);

  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  void setPort(uint16_t port);
  bool isAnyAddress() const;  // 0.0.0.0 or ::
  // Copies the IP's bytes (network order) to out, which holds 16: 4 for IPv4, 16 for IPv6, none
  // for another family. Returns how many.
  size_t copyIpTo(uint8_t* out) const;

  const sockaddr* sockaddrPtr() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* sockaddrPtr() { return reinterpret_cast<sockaddr*>(&storage_); }
  socklen_t length() const;
  static socklen_t capacity() { return sizeof(sockaddr_storage); }

  // Same family, IP and port. An IPv4-mapped IPv6 address is not equal to its IPv4 form.
  bool operator==(const SocketAddress& other) const;
  bool sameIp(const SocketAddress& other) const;

  std::string ipString() const;
  std::string toString() const;  // "10.0.0.1:80", "[::1]:80"
  size_t hash() const;

 private:
  sockaddr_storage storage_{};
};

struct SocketAddressHash {
  size_t operator()(const SocketAddress& a) const { return a.hash(); }
};

}  // namespace splicegate
