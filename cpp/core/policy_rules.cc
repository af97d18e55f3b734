#include "policy_rules.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace splicegate {

bool cidrsContain(const std::vector<IpCidr>& cidrs, const SocketAddress& ip) {
  uint8_t bytes[16];
  int family = ip.family();
  if (family == AF_INET) {
    std::memcpy(bytes, &reinterpret_cast<const sockaddr_in*>(ip.sockaddrPtr())->sin_addr, 4);
  } else if (family == AF_INET6) {
    const uint8_t* a = reinterpret_cast<const sockaddr_in6*>(ip.sockaddrPtr())->sin6_addr.s6_addr;
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(a, kMapped, 12) == 0) {
      family = AF_INET;
      std::memcpy(bytes, a + 12, 4);
    } else {
      std::memcpy(bytes, a, 16);
    }
  } else {
    return false;
  }
  for (const IpCidr& c : cidrs) {
    if (c.family != family) continue;
    const unsigned full = c.prefix / 8;
    const unsigned rest = c.prefix % 8;
    if (std::memcmp(bytes, c.bytes, full) != 0) continue;
    if (rest != 0) {
      const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
      if ((bytes[full] & mask) != (c.bytes[full] & mask)) continue;
    }
    return true;
  }
  return false;
}

std::optional<IpCidr> parseCidr(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string ip(text.substr(0, slash));
  IpCidr out;
  if (inet_pton(AF_INET, ip.c_str(), out.bytes) == 1) {
    out.family = AF_INET;
  } else if (inet_pton(AF_INET6, ip.c_str(), out.bytes) == 1) {
    out.family = AF_INET6;
  } else {
    return std::nullopt;
  }
  const int maxPrefix = out.family == AF_INET ? 32 : 128;
  if (slash == std::string_view::npos) {
    out.prefix = static_cast<uint8_t>(maxPrefix);
    return out;
  }
  const std::string_view digits = text.substr(slash + 1);
  if (digits.empty() || digits.size() > 3) return std::nullopt;
  int prefix = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    prefix = prefix * 10 + (c - '0');
  }
  if (prefix > maxPrefix) return std::nullopt;
  out.prefix = static_cast<uint8_t>(prefix);
  return out;
}

std::string decodePolicyWords(const std::vector<std::string>& names, const uint8_t* actions, const uint32_t* cidrs,
                              size_t cidrWords, const uint32_t* ports, size_t portWords, PolicyRules& out) {
  if (cidrWords % 7 != 0 || portWords % 3 != 0) return "cidrs/ports must hold 7/3 words per entry";
  const size_t count = names.size();
  out.rules.assign(count, PolicyRule{});
  for (size_t i = 0; i < count; ++i) {
    out.rules[i].name = names[i];
    out.rules[i].allow = actions[i] == 1;
  }
  for (size_t at = 0; at < cidrWords; at += 7) {
    const uint32_t rule = cidrs[at];
    const uint32_t family = cidrs[at + 1];
    const uint32_t prefix = cidrs[at + 2];
    if (rule >= count || (family != 4 && family != 6) || prefix > (family == 4 ? 32u : 128u)) {
      return "cidrs: entry " + std::to_string(at / 7) + " out of range";
    }
    IpCidr cidr;
    cidr.family = family == 4 ? AF_INET : AF_INET6;
    cidr.prefix = static_cast<uint8_t>(prefix);
    for (int w = 0; w < 4; ++w) {
      const uint32_t word = cidrs[at + 3 + w];
      for (int b = 0; b < 4; ++b) cidr.bytes[w * 4 + b] = static_cast<uint8_t>(word >> (24 - 8 * b));
    }
    out.rules[rule].cidrs.push_back(cidr);
  }
  for (size_t at = 0; at < portWords; at += 3) {
    const uint32_t rule = ports[at];
    const uint32_t first = ports[at + 1];
    const uint32_t last = ports[at + 2];
    if (rule >= count || first > last || last > 65535) return "ports: entry " + std::to_string(at / 3) + " out of range";
    out.rules[rule].ports.push_back(PortRange{static_cast<uint16_t>(first), static_cast<uint16_t>(last)});
  }
  return {};
}

}  // namespace splicegate
