// Unit tests for the destination policy: rule matching (CIDRs, ports, first match, default), the
// built-in special denies and their override, IPv4 embedded in IPv6, host addresses and AnyIP
// ranges, counters, no allocation per check, and a randomized comparison against a plain
// first-match reference.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "test_harness.h"
#include "../core/policy.h"
#include "../core/socket_address.h"

using namespace splicegate;

#include "alloc_counter.h"

namespace {

using splicegate::testing::run;
using By = PolicyDecision::By;

SocketAddress dst(const char* ip, uint16_t port) {
  auto a = SocketAddress::fromIp(ip, port);
  if (!a) {
    std::fprintf(stderr, "bad test address %s\n", ip);
    std::abort();
  }
  return *a;
}

LocalRoute route(uint8_t family, const char* network, uint8_t length) {
  LocalRoute r;
  r.family = family;
  r.length = length;
  if (inet_pton(family, network, r.address) != 1) {
    std::fprintf(stderr, "bad test route %s\n", network);
    std::abort();
  }
  return r;
}

PortRange ports(uint16_t first, uint16_t last) { return PortRange{first, last}; }

PolicyRule rule(const char* name, bool allow, std::vector<const char*> cidrs, std::vector<PortRange> portList = {}) {
  PolicyRule r;
  r.name = name;
  r.allow = allow;
  for (const char* c : cidrs) {
    auto parsed = parseCidr(c);
    if (!parsed) {
      std::fprintf(stderr, "bad test cidr %s\n", c);
      std::abort();
    }
    r.cidrs.push_back(*parsed);
  }
  r.ports = std::move(portList);
  return r;
}

PolicyRules rulesOf(std::vector<PolicyRule> list, bool defaultAllow = true, bool denySpecial = true) {
  PolicyRules rules;
  rules.defaultAllow = defaultAllow;
  rules.denySpecial = denySpecial;
  rules.rules = std::move(list);
  return rules;
}

bool deniedBy(const DestinationPolicy& p, const char* ip, uint16_t port, uint32_t ruleIndex) {
  const PolicyDecision d = p.check(dst(ip, port));
  return !d.allow && d.by == By::kRule && d.rule == ruleIndex;
}
bool allowedBy(const DestinationPolicy& p, const char* ip, uint16_t port, uint32_t ruleIndex) {
  const PolicyDecision d = p.check(dst(ip, port));
  return d.allow && d.by == By::kRule && d.rule == ruleIndex;
}
bool special(const DestinationPolicy& p, const char* ip, uint16_t port) {
  const PolicyDecision d = p.check(dst(ip, port));
  return !d.allow && d.by == By::kSpecial;
}
bool byDefault(const DestinationPolicy& p, const char* ip, uint16_t port, bool allow) {
  const PolicyDecision d = p.check(dst(ip, port));
  return d.allow == allow && d.by == By::kDefault;
}

void parseTests() {
  run("parseCidr: IPv4, IPv6, bare addresses as host routes, bad input refused", [] {
    auto a = parseCidr("10.0.5.0/24");
    CHECK(a && a->family == AF_INET && a->prefix == 24 && a->bytes[0] == 10 && a->bytes[2] == 5);
    auto b = parseCidr("fd00:ec2::254");
    CHECK(b && b->family == AF_INET6 && b->prefix == 128 && b->bytes[0] == 0xfd && b->bytes[15] == 0x54);
    auto c = parseCidr("::/0");
    CHECK(c && c->family == AF_INET6 && c->prefix == 0);
    CHECK(parseCidr("10.0.0.1")->prefix == 32);
    auto d = parseCidr("2001:db8::1/128");  // a prefix of three digits
    CHECK(d && d->family == AF_INET6 && d->prefix == 128);
    auto e = parseCidr("2001:db8::/112");
    CHECK(e && e->prefix == 112);
    CHECK(!parseCidr("10.0.0.0/33"));
    CHECK(!parseCidr("::/129"));
    CHECK(!parseCidr("10.0.0.0/"));
    CHECK(!parseCidr("10.0.0.0/2x"));
    CHECK(!parseCidr("example.com/8"));
    CHECK(!parseCidr("fe80::1%eth0/64"));
  });

  // The same words test/policy.test.ts expects src/config/policy-native.ts to produce.
  run("decodePolicyWords: the control layer's compact form decodes to the rules; bad entries refused", [] {
    const std::vector<std::string> names = {"no-db", "web"};
    const uint8_t actions[] = {0, 1};
    const uint32_t cidrs[] = {0, 4, 24, 0x0a000500u, 0, 0, 0,  //
                              1, 6, 32, 0x20010db8u, 0, 0, 0};
    const uint32_t portWords[] = {0, 5432, 5432, 0, 6379, 6380};
    PolicyRules out;
    CHECK(decodePolicyWords(names, actions, cidrs, 14, portWords, 6, out).empty());
    CHECK_EQ(out.rules.size(), 2u);
    CHECK(out.rules[0].name == "no-db" && !out.rules[0].allow && out.rules[1].allow);
    const IpCidr want4 = *parseCidr("10.0.5.0/24");
    const IpCidr want6 = *parseCidr("2001:db8::/32");
    CHECK(out.rules[0].cidrs.size() == 1 && out.rules[0].cidrs[0].family == AF_INET && out.rules[0].cidrs[0].prefix == 24);
    CHECK(std::memcmp(out.rules[0].cidrs[0].bytes, want4.bytes, 16) == 0);
    CHECK(out.rules[1].cidrs.size() == 1 && out.rules[1].cidrs[0].family == AF_INET6 && out.rules[1].cidrs[0].prefix == 32);
    CHECK(std::memcmp(out.rules[1].cidrs[0].bytes, want6.bytes, 16) == 0);
    CHECK(out.rules[0].ports.size() == 2 && out.rules[0].ports[1].first == 6379 && out.rules[0].ports[1].last == 6380);
    CHECK(out.rules[1].ports.empty());
    const uint32_t badRule[] = {2, 4, 24, 0, 0, 0, 0};
    CHECK(!decodePolicyWords(names, actions, badRule, 7, portWords, 0, out).empty());
    const uint32_t badPrefix[] = {0, 4, 33, 0, 0, 0, 0};
    CHECK(!decodePolicyWords(names, actions, badPrefix, 7, portWords, 0, out).empty());
    const uint32_t badPorts[] = {0, 10, 9};
    CHECK(!decodePolicyWords(names, actions, cidrs, 7, badPorts, 3, out).empty());
    CHECK(!decodePolicyWords(names, actions, cidrs, 6, portWords, 0, out).empty());
  });
}

void matchingTests() {
  run("issue example: deny no-db on its CIDR and ports only; web allows 80/443; default decides the rest", [] {
    DestinationPolicy p(rulesOf({rule("no-db", false, {"10.0.5.0/24"}, {ports(5432, 5432), ports(6379, 6380)}),
                                 rule("web", true, {"0.0.0.0/0", "::/0"}, {ports(80, 80), ports(443, 443)})},
                                /*defaultAllow=*/false));
    CHECK(deniedBy(p, "10.0.5.7", 5432, 0));
    CHECK(deniedBy(p, "10.0.5.255", 6379, 0));
    CHECK(deniedBy(p, "10.0.5.0", 6380, 0));
    CHECK(byDefault(p, "10.0.5.7", 6381, false));  // just past the range
    CHECK(byDefault(p, "10.0.5.7", 5431, false));
    CHECK(byDefault(p, "10.0.6.7", 5432, false));  // just outside the CIDR
    CHECK(allowedBy(p, "10.0.5.7", 443, 1));
    CHECK(allowedBy(p, "93.184.216.34", 80, 1));
    CHECK(allowedBy(p, "2001:db8::1", 443, 1));
    CHECK(byDefault(p, "2001:db8::1", 22, false));
  });

  run("first match wins, in both orders, including a broad rule before a narrow one", [] {
    DestinationPolicy denyFirst(rulesOf({rule("deny-net", false, {"192.0.2.0/24"}), rule("allow-host", true, {"192.0.2.10/32"})}));
    CHECK(deniedBy(denyFirst, "192.0.2.10", 80, 0));
    DestinationPolicy allowFirst(rulesOf({rule("allow-host", true, {"192.0.2.10/32"}), rule("deny-net", false, {"192.0.2.0/24"})}));
    CHECK(allowedBy(allowFirst, "192.0.2.10", 80, 0));
    CHECK(deniedBy(allowFirst, "192.0.2.11", 80, 1));
    // A later rule on the same CIDR only gets the ports the earlier one left.
    DestinationPolicy samePrefix(rulesOf({rule("a", true, {"198.51.100.0/24"}, {ports(1000, 2000)}),
                                          rule("b", false, {"198.51.100.0/24"}, {ports(1500, 3000)})}));
    CHECK(allowedBy(samePrefix, "198.51.100.1", 1500, 0));
    CHECK(allowedBy(samePrefix, "198.51.100.1", 2000, 0));
    CHECK(deniedBy(samePrefix, "198.51.100.1", 2001, 1));
    CHECK(deniedBy(samePrefix, "198.51.100.1", 3000, 1));
    CHECK(byDefault(samePrefix, "198.51.100.1", 3001, true));
    // A narrow rule later on a port the broad one does not cover.
    DestinationPolicy nested(rulesOf({rule("wide", false, {"10.0.0.0/8"}, {ports(22, 22)}), rule("narrow", true, {"10.1.2.0/24"})}));
    CHECK(deniedBy(nested, "10.1.2.3", 22, 0));
    CHECK(allowedBy(nested, "10.1.2.3", 23, 1));
    CHECK(byDefault(nested, "10.1.3.3", 23, true));
  });

  run("default allow and default deny when nothing matches; an empty policy allows", [] {
    DestinationPolicy allow(rulesOf({rule("x", false, {"203.0.113.0/24"})}, true));
    DestinationPolicy deny(rulesOf({rule("x", true, {"203.0.113.0/24"})}, false));
    CHECK(byDefault(allow, "198.51.100.1", 80, true));
    CHECK(byDefault(deny, "198.51.100.1", 80, false));
    CHECK(byDefault(deny, "2001:db8::1", 80, false));
    DestinationPolicy empty(rulesOf({}));
    CHECK(byDefault(empty, "198.51.100.1", 80, true));
    CHECK(byDefault(empty, "2001:db8::1", 80, true));
    // What is not an IP address is nowhere to connect to: denied whatever the default says.
    const PolicyDecision none = empty.check(SocketAddress{});
    CHECK(!none.allow);
    CHECK(none.by == PolicyDecision::By::kSpecial);
  });

  run("IPv4 and IPv6 rules do not cross: ::/0 matches no IPv4 destination, 0.0.0.0/0 no IPv6 one", [] {
    DestinationPolicy p(rulesOf({rule("v6", false, {"::/0"}), rule("v4", true, {"0.0.0.0/0"})}, false));
    CHECK(allowedBy(p, "198.51.100.1", 80, 1));
    CHECK(deniedBy(p, "2001:db8::1", 80, 0));
  });
}

void specialTests() {
  run("deny_special: loopback, unspecified, link-local, metadata, multicast denied on any port", [] {
    DestinationPolicy p(rulesOf({rule("all", true, {"0.0.0.0/0", "::/0"})}));
    for (const char* ip : {"127.0.0.1", "127.255.0.9", "0.0.0.0", "169.254.169.254", "169.254.1.1", "224.0.0.1",
                           "239.255.255.250", "::1", "::", "fe80::1", "febf::1", "fd00:ec2::254", "ff02::1"}) {
      for (uint16_t port : {uint16_t{1}, uint16_t{80}, uint16_t{65535}}) {
        if (!special(p, ip, port)) {
          std::fprintf(stderr, "  not special: %s:%u\n", ip, port);
          CHECK(false);
        }
      }
    }
    // Neighbours of the special ranges are ordinary (here allowed by the catch-all rule 0).
    for (const char* ip : {"1.0.0.0", "128.0.0.1", "169.253.255.255", "169.255.0.0", "223.255.255.255", "240.0.0.1",
                           "::2", "fec0::1", "fd00:ec2::253", "fe7f::1", "10.0.0.1", "192.168.1.1"}) {
      if (!allowedBy(p, ip, 80, 0)) {
        std::fprintf(stderr, "  not allowed by rule 0: %s\n", ip);
        CHECK(false);
      }
    }
  });

  run("deny_special: false turns the built-ins off; the rules and default then decide", [] {
    DestinationPolicy p(rulesOf({rule("x", false, {"10.0.0.0/8"})}, true, /*denySpecial=*/false));
    CHECK(byDefault(p, "127.0.0.1", 80, true));
    CHECK(byDefault(p, "169.254.169.254", 80, true));
    CHECK(byDefault(p, "::1", 80, true));
  });

  run("an explicit allow naming a special range overrides it; a catch-all allow does not", [] {
    DestinationPolicy p(rulesOf({rule("metadata", true, {"169.254.169.254/32"}, {ports(80, 80)}),
                                 rule("loopback", true, {"127.0.0.0/8"}),
                                 rule("v6-metadata", true, {"fd00:ec2::254"}),
                                 rule("everything", true, {"0.0.0.0/0", "::/0"})}));
    CHECK(allowedBy(p, "169.254.169.254", 80, 0));
    CHECK(special(p, "169.254.169.254", 443));  // the allow names port 80 only
    CHECK(special(p, "169.254.169.253", 80));   // not the address it names
    CHECK(allowedBy(p, "127.0.0.1", 5432, 1));
    CHECK(allowedBy(p, "::ffff:127.0.0.1", 5432, 1));  // judged as IPv4: the IPv4 allow applies
    CHECK(allowedBy(p, "fd00:ec2::254", 80, 2));
    CHECK(special(p, "::1", 80));       // "::/0" does not name ::1
    CHECK(special(p, "224.0.0.1", 80));  // "0.0.0.0/0" does not name multicast
    // A deny rule on a special address still reports the special deny (checked before the rules).
    DestinationPolicy d(rulesOf({rule("deny-md", false, {"169.254.169.254/32"})}));
    CHECK(special(d, "169.254.169.254", 80));
  });

  run("the unspecified address is judged as the loopback address Linux connects it to", [] {
    // connect() to 0.0.0.0 reaches 127.0.0.1, to :: reaches ::1: with deny_special off, a rule
    // denying loopback on a port must not be passed by naming 0.0.0.0 (or ::, ::ffff:0.0.0.0).
    DestinationPolicy p(rulesOf({rule("no-lo-db", false, {"127.0.0.1/32", "::1"}, {ports(5432, 5432)})}, true,
                                /*denySpecial=*/false));
    CHECK(deniedBy(p, "127.0.0.1", 5432, 0));
    CHECK(deniedBy(p, "0.0.0.0", 5432, 0));
    CHECK(deniedBy(p, "::ffff:0.0.0.0", 5432, 0));
    CHECK(deniedBy(p, "::", 5432, 0));
    CHECK(deniedBy(p, "::1", 5432, 0));
    CHECK(byDefault(p, "0.0.0.0", 80, true));  // other ports: the default, as for 127.0.0.1
    // With deny_special on, an allow naming loopback opens 0.0.0.0 only where it opens 127.0.0.1.
    DestinationPolicy q(rulesOf({rule("lo-web", true, {"127.0.0.1/32"}, {ports(80, 80)})}));
    CHECK(allowedBy(q, "0.0.0.0", 80, 0));
    CHECK(special(q, "0.0.0.0", 5432));
    CHECK(special(q, "::", 80));
  });

  run("IPv4-mapped, NAT64 and 6to4 destinations are judged by their embedded IPv4 address", [] {
    DestinationPolicy p(rulesOf({rule("no-db", false, {"10.0.5.0/24"}, {ports(5432, 5432)}),
                                 rule("v6-allow", true, {"::/0"})}));
    CHECK(deniedBy(p, "10.0.5.1", 5432, 0));
    CHECK(deniedBy(p, "::ffff:10.0.5.1", 5432, 0));
    CHECK(deniedBy(p, "64:ff9b::10.0.5.1", 5432, 0));
    CHECK(deniedBy(p, "2002:0a00:0501::1", 5432, 0));
    CHECK(deniedBy(p, "2002:a00:501:ffff:1:2:3:4", 5432, 0));
    // As IPv4 they are not matched by the IPv6 catch-all: the default applies.
    CHECK(byDefault(p, "::ffff:10.0.6.1", 5432, true));
    CHECK(byDefault(p, "64:ff9b::10.0.6.1", 5432, true));
    CHECK(special(p, "::ffff:169.254.169.254", 80));
    CHECK(special(p, "64:ff9b::a9fe:a9fe", 80));
    CHECK(special(p, "2002:7f00:1::", 80));
    CHECK(special(p, "::ffff:127.0.0.1", 80));
    // Not embedded: 64:ff9b:1::/48 and other IPv6 stay IPv6.
    CHECK(allowedBy(p, "64:ff9b:1::10.0.5.1", 5432, 1));
    CHECK(allowedBy(p, "2003:a00:501::1", 5432, 1));
  });

  run("every address of this host is denied on any port; a host-route allow names it", [] {
    DestinationPolicy p(rulesOf({rule("site", true, {"10.9.0.0/16"}), rule("exact", true, {"10.8.0.1/32"})}));
    CHECK(allowedBy(p, "10.9.9.9", 22, 0));
    p.setLocalAddresses({dst("10.9.9.9", 0), dst("2001:db8::5", 0), dst("10.8.0.1", 0)});
    CHECK(p.isLocalAddress(dst("10.9.9.9", 1)));
    CHECK(special(p, "10.9.9.9", 22));
    CHECK(special(p, "10.9.9.9", 9901));
    CHECK(special(p, "::ffff:10.9.9.9", 22));
    CHECK(special(p, "2001:db8::5", 443));
    CHECK(allowedBy(p, "10.9.9.8", 22, 0));  // the neighbour is not local
    CHECK(allowedBy(p, "10.8.0.1", 22, 1));  // named exactly by an allow
    p.setLocalAddresses({});
    CHECK(allowedBy(p, "10.9.9.9", 22, 0));  // the snapshot was replaced, not appended to
  });

  run("this host's own 6to4 / NAT64 addresses are this host: judging them as their IPv4 does not open them", [] {
    // A destination in 2002::/16 or 64:ff9b::/96 is judged as its embedded IPv4 address, but
    // connect() goes to the IPv6 address itself: when that is one of this host's, it is a local
    // service whatever the IPv4 address is.
    DestinationPolicy p(rulesOf({rule("web", true, {"0.0.0.0/0"}, {ports(80, 80)})}));
    p.setLocalAddresses({dst("2002:a00:1::1", 0), dst("64:ff9b::a00:2", 0)});
    p.setLocalRoutes({route(AF_INET6, "2002:a00:1::1", 128), route(AF_INET6, "64:ff9b::a00:2", 128),
                      route(AF_INET6, "2002:cb00:7100::", 48)});
    CHECK(p.isLocalAddress(dst("2002:a00:1::1", 0)));
    CHECK(p.isLocalAddress(dst("2002:cb00:7100::9", 0)));
    CHECK(special(p, "2002:a00:1::1", 80));
    CHECK(special(p, "64:ff9b::a00:2", 80));
    CHECK(special(p, "2002:cb00:7100:1::5", 80));  // inside a local (AnyIP) 6to4 range
    CHECK(special(p, "2002:a00:1::1", 22));
    // Their neighbours, and the IPv4 addresses they embed, are ordinary destinations.
    CHECK(allowedBy(p, "2002:a00:1::2", 80, 0));
    CHECK(allowedBy(p, "64:ff9b::a00:3", 80, 0));
    CHECK(allowedBy(p, "10.0.0.1", 80, 0));
    CHECK(!p.isLocalAddress(dst("10.0.0.1", 0)));
    // With deny_special off nothing is special.
    DestinationPolicy off(rulesOf({rule("web", true, {"0.0.0.0/0"}, {ports(80, 80)})}, true, /*denySpecial=*/false));
    off.setLocalRoutes({route(AF_INET6, "2002:a00:1::1", 128)});
    CHECK(allowedBy(off, "2002:a00:1::1", 80, 0));
  });

  run("a range routed as local (AnyIP) is this host on every address in it; its neighbours are not", [] {
    DestinationPolicy p(rulesOf({rule("all", true, {"0.0.0.0/0", "::/0"})}));
    p.setLocalRoutes({route(AF_INET, "192.0.2.0", 24), route(AF_INET, "198.51.100.7", 32), route(AF_INET6, "2001:db8:5::", 64),
                      route(AF_INET, "198.51.100.8", 31), route(AF_INET, "198.51.100.0", 29)});  // overlapping, adjacent
    for (const char* ip : {"192.0.2.0", "192.0.2.77", "192.0.2.255", "::ffff:192.0.2.9", "198.51.100.0", "198.51.100.9",
                           "2001:db8:5::", "2001:db8:5:0:ffff:ffff:ffff:ffff"}) {
      CHECK(special(p, ip, 8080));
      CHECK(p.isLocalAddress(dst(ip, 0)));
    }
    for (const char* ip : {"192.0.1.255", "192.0.3.0", "198.51.100.10", "2001:db8:4:ffff:ffff:ffff:ffff:ffff", "2001:db8:5:1::"}) {
      CHECK(allowedBy(p, ip, 8080, 0));
    }
    // Host bits in a route are ignored, as the kernel ignores them; an empty list clears.
    p.setLocalRoutes({route(AF_INET, "203.0.113.77", 25)});
    CHECK(special(p, "203.0.113.0", 1));
    CHECK(special(p, "203.0.113.127", 1));
    CHECK(allowedBy(p, "203.0.113.128", 1, 0));
    CHECK(allowedBy(p, "192.0.2.77", 1, 0));
    // A local default route (everything is this host) and the top of the address space. (Under
    // p's catch-all allow, which lies inside a local /0, the first would be open: next test.)
    DestinationPolicy q(rulesOf({}));
    q.setLocalRoutes({route(AF_INET, "0.0.0.0", 0), route(AF_INET6, "ffff:ffff::", 32)});
    CHECK(special(q, "8.8.8.8", 53));
    CHECK(special(q, "255.255.255.255", 53));
    CHECK(special(q, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 53));
    CHECK(byDefault(q, "2001:db8::1", 53, true));
  });

  run("an allow whose CIDR lies inside an AnyIP range opens it (the range's own CIDR, a part, one address); a wider one does not", [] {
    DestinationPolicy p(rulesOf({rule("one", true, {"192.0.2.10/32"}), rule("half", true, {"192.0.2.128/25"}, {ports(80, 80)}),
                                 rule("wide", true, {"192.0.0.0/16", "2001:db8::/32"})}));
    p.setLocalRoutes({route(AF_INET, "192.0.2.0", 24), route(AF_INET6, "2001:db8:5::", 64)});
    CHECK(allowedBy(p, "192.0.2.10", 80, 0));
    CHECK(allowedBy(p, "192.0.2.200", 80, 1));
    CHECK(special(p, "192.0.2.200", 81));  // "half" names port 80 only; "wide" is wider than the range
    CHECK(special(p, "192.0.2.11", 80));
    CHECK(special(p, "2001:db8:5::1", 80));
    CHECK(allowedBy(p, "192.0.3.1", 80, 2));  // outside the range: an ordinary destination
    // The range's own CIDR, learnt after the rules were compiled, opens the whole range.
    DestinationPolicy exact(rulesOf({rule("anyip", true, {"192.0.2.0/24", "2001:db8:5::/64"}, {ports(443, 443)})}));
    exact.setLocalRoutes({route(AF_INET, "192.0.2.0", 24), route(AF_INET6, "2001:db8:5::", 64)});
    CHECK(allowedBy(exact, "192.0.2.77", 443, 0));
    CHECK(allowedBy(exact, "2001:db8:5::9", 443, 0));
    CHECK(special(exact, "192.0.2.77", 22));
    // Built-in ranges stay as they were: a CIDR inside this host's range is not one inside them.
    DestinationPolicy loop(rulesOf({rule("lo", true, {"127.0.0.0/8"})}));
    loop.setLocalRoutes({route(AF_INET, "127.0.0.0", 8)});
    CHECK(allowedBy(loop, "127.0.0.5", 1, 0));
    DestinationPolicy meta(rulesOf({rule("ll", true, {"169.254.0.0/17"})}));
    meta.setLocalRoutes({route(AF_INET, "169.254.0.0", 17)});  // inside the link-local range
    CHECK(allowedBy(meta, "169.254.3.3", 1, 0));  // names a CIDR inside a built-in range: opens
    DestinationPolicy wider(rulesOf({rule("w", true, {"169.254.0.0/15"})}));
    wider.setLocalRoutes({route(AF_INET, "169.254.0.0", 15)});
    CHECK(special(wider, "169.254.3.3", 1));  // wider than the built-in range: the built-in deny holds
  });

  run("local routes that touch are one range: an allow covering both opens them; one reaching past them does not", [] {
    // Two AnyIP /24s side by side are one block of this host's addresses: an allow naming exactly
    // that block lies inside it. An allow that starts inside this host's addresses but reaches past
    // them is wider than them, as one that starts before them is.
    DestinationPolicy both(rulesOf({rule("both", true, {"198.51.100.0/23"})}));
    both.setLocalRoutes({route(AF_INET, "198.51.100.0", 24), route(AF_INET, "198.51.101.0", 24)});
    CHECK(allowedBy(both, "198.51.100.7", 80, 0));
    CHECK(allowedBy(both, "198.51.101.7", 80, 0));
    DestinationPolicy past(rulesOf({rule("past", true, {"198.51.100.0/23"})}));
    past.setLocalRoutes({route(AF_INET, "198.51.99.0", 24), route(AF_INET, "198.51.100.0", 24)});
    CHECK(special(past, "198.51.100.7", 80));  // local [.99.0, .100.255]; the allow ends at .101.255
    CHECK(special(past, "198.51.99.7", 80));
    CHECK(allowedBy(past, "198.51.101.7", 80, 0));  // not this host: an ordinary destination
  });

  run("refreshLocalAddresses takes this host's interface addresses and local routes (loopback at least)", [] {
    DestinationPolicy p(rulesOf({}, true, true));
    CHECK(!p.isLocalAddress(dst("127.0.0.1", 0)));
    CHECK(!p.refreshLocalAddresses());
    CHECK(p.isLocalAddress(dst("127.0.0.1", 0)));
    CHECK(p.isLocalAddress(dst("127.1.2.3", 0)));  // the whole of 127.0.0.0/8 is routed as local
    CHECK(!p.isLocalAddress(dst("192.0.2.123", 0)));  // TEST-NET-1: on no real interface
  });
}

void counterTests() {
  run("denied counters: per rule, special, total; exported in the order of the names", [] {
    DestinationPolicy p(rulesOf({rule("no-db", false, {"10.0.5.0/24"}), rule("web", true, {"0.0.0.0/0"})}, false));
    const std::vector<std::string> expected = {"policy.no-db.denied", "policy.web.denied", "policy.special.denied", "policy_denied"};
    CHECK(p.counterNames() == expected);
    for (const char* ip : {"10.0.5.1", "10.0.5.2", "127.0.0.1", "8.8.8.8"}) p.countDenied(p.check(dst(ip, 80)));
    p.countDenied(p.check(dst("2001:db8::1", 80)));  // denied by default: only the total
    CHECK_EQ(p.deniedByRule(0), 2u);
    CHECK_EQ(p.deniedByRule(1), 0u);
    CHECK_EQ(p.deniedSpecial(), 1u);
    CHECK_EQ(p.deniedTotal(), 4u);
    double out[4] = {-1, -1, -1, -1};
    p.exportCounters(out);
    CHECK(out[0] == 2 && out[1] == 0 && out[2] == 1 && out[3] == 4);
  });

  run("decisionName: the deciding rule's name, special or default; an unknown policy or rule reads default", [] {
    DestinationPolicy p(rulesOf({rule("no-db", false, {"10.0.5.0/24"}), rule("web", true, {"0.0.0.0/0"})}, true));
    CHECK(decisionName(p.check(dst("10.0.5.1", 80)), &p.ruleNames()) == "no-db");
    CHECK(decisionName(p.check(dst("8.8.8.8", 80)), &p.ruleNames()) == "web");
    CHECK(decisionName(p.check(dst("127.0.0.1", 80)), &p.ruleNames()) == "special");
    CHECK(decisionName(p.check(dst("2001:db8::1", 80)), &p.ruleNames()) == "default");
    PolicyDecision outOfRange;
    outOfRange.by = PolicyDecision::By::kRule;
    outOfRange.rule = 2;
    CHECK(decisionName(outOfRange, &p.ruleNames()) == "default");
    outOfRange.rule = 0;
    CHECK(decisionName(outOfRange, nullptr) == "default");
  });

  run("check() allocates nothing, for either family and every kind of decision", [] {
    std::vector<PolicyRule> list;
    for (int i = 0; i < 200; ++i) {
      const std::string cidr = "10." + std::to_string(i) + ".0.0/16";
      PolicyRule r = rule("r", i % 2 == 0, {"2001:db8::/32"}, {ports(static_cast<uint16_t>(1000 + i), static_cast<uint16_t>(1000 + i))});
      r.name = "r" + std::to_string(i);
      r.cidrs.push_back(*parseCidr(cidr));
      list.push_back(std::move(r));
    }
    DestinationPolicy p(rulesOf(std::move(list), false));
    const std::vector<SocketAddress> targets = {dst("10.5.1.1", 1005), dst("10.5.1.1", 80), dst("127.0.0.1", 80),
                                                dst("2001:db8::9", 1100), dst("::ffff:10.7.0.1", 1007), dst("8.8.8.8", 53)};
    const size_t before = g_allocations;
    size_t allowed = 0;
    for (int round = 0; round < 1000; ++round) {
      for (const SocketAddress& t : targets) allowed += p.check(t).allow ? 1 : 0;
    }
    CHECK_EQ(g_allocations, before);
    CHECK_EQ(allowed, 1000u);  // only [2001:db8::9]:1100, by the even (allow) rule r100
  });
}

// --- randomized comparison with the plain definition ---------------------------------------------

struct Ref {
  const PolicyRules& rules;
  std::vector<SocketAddress> locals;
};

bool cidrContains(const IpCidr& c, const uint8_t* bytes, int family) {
  if (c.family != family) return false;
  for (int bit = 0; bit < c.prefix; ++bit) {
    const int byte = bit / 8;
    const int mask = 0x80 >> (bit % 8);
    if ((c.bytes[byte] & mask) != (bytes[byte] & mask)) return false;
  }
  return true;
}

bool portsContain(const std::vector<PortRange>& list, uint16_t port) {
  if (list.empty()) return true;
  for (const PortRange& r : list) {
    if (port >= r.first && port <= r.last) return true;
  }
  return false;
}

// First rule whose CIDR contains the (IPv4) address and whose ports contain the port, straight
// from the definition. Only IPv4 here: the family-specific structure is the same template.
PolicyDecision reference(const PolicyRules& rules, uint32_t ip, uint16_t port) {
  uint8_t bytes[4] = {static_cast<uint8_t>(ip >> 24), static_cast<uint8_t>(ip >> 16), static_cast<uint8_t>(ip >> 8), static_cast<uint8_t>(ip)};
  for (size_t i = 0; i < rules.rules.size(); ++i) {
    const PolicyRule& r = rules.rules[i];
    bool hit = false;
    for (const IpCidr& c : r.cidrs) hit = hit || cidrContains(c, bytes, AF_INET);
    if (hit && portsContain(r.ports, port)) return PolicyDecision{r.allow, By::kRule, static_cast<uint32_t>(i)};
  }
  return PolicyDecision{rules.defaultAllow, By::kDefault, 0};
}

void randomizedTests() {
  run("randomized: nested CIDRs and overlapping port ranges agree with the first-match definition", [] {
    std::mt19937 rng(12345);
    for (int round = 0; round < 40; ++round) {
      PolicyRules rules;
      rules.denySpecial = false;
      rules.defaultAllow = round % 2 == 0;
      const int count = 1 + static_cast<int>(rng() % 60);
      // Addresses from a small space (10.0.0.0/20) so CIDRs nest and collide often.
      for (int i = 0; i < count; ++i) {
        PolicyRule r;
        r.name = "r" + std::to_string(i);
        r.allow = rng() % 2 == 0;
        const int cidrs = 1 + static_cast<int>(rng() % 3);
        for (int c = 0; c < cidrs; ++c) {
          IpCidr cidr;
          cidr.family = AF_INET;
          cidr.prefix = static_cast<uint8_t>(rng() % 5 == 0 ? rng() % 20 : 20 + rng() % 13);
          const uint32_t ip = 0x0a000000u | (rng() & 0xfffu);
          cidr.bytes[0] = static_cast<uint8_t>(ip >> 24);
          cidr.bytes[1] = static_cast<uint8_t>(ip >> 16);
          cidr.bytes[2] = static_cast<uint8_t>(ip >> 8);
          cidr.bytes[3] = static_cast<uint8_t>(ip);  // host bits left set on purpose: compile masks them
          r.cidrs.push_back(cidr);
        }
        const int ranges = static_cast<int>(rng() % 4);
        for (int k = 0; k < ranges; ++k) {
          const auto a = static_cast<uint16_t>(rng() % 40);
          const auto b = static_cast<uint16_t>(a + rng() % 10);
          r.ports.push_back(ports(a, b));
        }
        rules.rules.push_back(std::move(r));
      }
      // The reference ignores host bits by the same rule the policy documents: mask them.
      PolicyRules masked = rules;
      for (PolicyRule& r : masked.rules) {
        for (IpCidr& c : r.cidrs) {
          for (int bit = c.prefix; bit < 32; ++bit) c.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
        }
      }
      DestinationPolicy p(rules);
      for (int probe = 0; probe < 3000; ++probe) {
        const uint32_t ip = 0x0a000000u | (rng() & 0x1fffu);
        const auto port = static_cast<uint16_t>(rng() % 45);
        char text[32];
        std::snprintf(text, sizeof text, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
        const PolicyDecision got = p.check(dst(text, port));
        const PolicyDecision want = reference(masked, ip, port);
        if (got.allow != want.allow || got.by != want.by || (want.by == By::kRule && got.rule != want.rule)) {
          std::fprintf(stderr, "  round %d: %s:%u got (%d,%d,%u) want (%d,%d,%u)\n", round, text, port, got.allow,
                       static_cast<int>(got.by), got.rule, want.allow, static_cast<int>(want.by), want.rule);
          CHECK(false);
        }
      }
    }
  });
}

}  // namespace

int main() {
  parseTests();
  matchingTests();
  specialTests();
  counterTests();
  randomizedTests();
  return splicegate::testing::finish();
}
