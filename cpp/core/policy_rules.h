// The destination policy as plain data: what the control layer validated (src/config/policy.ts) and
// the addon copies once into CoreOptions. DestinationPolicy (policy.h) compiles it into its lookup
// structure. Kept apart from policy.h so that core_options.h stays light.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "socket_address.h"

namespace splicegate {

// An IPv4 or IPv6 network. bytes holds the address in network order (IPv4 in bytes[0..3]). Host bits
// below the prefix are ignored when compiled (the control layer refuses them; see docs/POLICY.md).
struct IpCidr {
  int family = 0;  // AF_INET or AF_INET6
  uint8_t prefix = 0;
  uint8_t bytes[16] = {};
};

// "10.0.0.0/8", "::1/128"; a bare address is a host route (/32, /128). No zone ids, no hostnames.
std::optional<IpCidr> parseCidr(std::string_view text);

// Whether ip (port ignored) lies in one of the CIDRs; an IPv4-mapped IPv6 address (::ffff:a.b.c.d)
// is judged as its IPv4 address. A linear scan, for short lists (PROXY protocol trusted sources).
bool cidrsContain(const std::vector<IpCidr>& cidrs, const SocketAddress& ip);

struct PortRange {
  uint16_t first = 0;
  uint16_t last = 65535;
};

struct PolicyRule {
  std::string name;  // the counter is policy.<name>.denied
  bool allow = false;
  std::vector<IpCidr> cidrs;
  std::vector<PortRange> ports;  // empty = every port
};

struct PolicyRules {
  bool defaultAllow = true;  // when no rule matches
  bool denySpecial = true;   // built-in denies before the rules (policy.h)
  std::vector<PolicyRule> rules;  // ordered: the first match wins
};

// Fills out.rules from the compact form the control layer sends (src/config/policy-native.ts):
// names and actions per rule, then 7 words per CIDR [rule, family 4|6, prefix, address as four
// big-endian words] and 3 words per port range [rule, first, last]. Returns an error message, or
// an empty string when every entry was in range.
std::string decodePolicyWords(const std::vector<std::string>& names, const uint8_t* actions, const uint32_t* cidrs,
                              size_t cidrWords, const uint32_t* ports, size_t portWords, PolicyRules& out);

}  // namespace splicegate
