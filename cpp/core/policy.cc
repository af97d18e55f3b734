#include "policy.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>

namespace splicegate {

namespace {

constexpr uint32_t kNoRule = UINT32_MAX;

template <typename Key>
Key maskFor(int prefix) {
  constexpr int bits = static_cast<int>(sizeof(Key) * 8);
  if (prefix <= 0) return 0;
  return static_cast<Key>(~Key{0}) << (bits - prefix);
}

Uint128 v6Key(const uint8_t* bytes) {
  Uint128 k = 0;
  for (int i = 0; i < 16; ++i) k = (k << 8) | bytes[i];
  return k;
}

uint32_t v4Key(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) | bytes[3];
}

constexpr Uint128 hi64(uint64_t v) { return static_cast<Uint128>(v) << 64; }

// IPv6 forms that carry an IPv4 address; the destination is judged as that IPv4 address.
constexpr Uint128 kMappedPrefix = hi64(0) | (Uint128{0xffff} << 32);           // ::ffff:0:0/96
constexpr Uint128 kNat64Prefix = hi64(0x0064ff9b00000000ULL);                  // 64:ff9b::/96
constexpr Uint128 kSixToFourPrefix = hi64(0x2002000000000000ULL);              // 2002::/16

bool embeddedV4(Uint128 k, uint32_t& v4) {
  const Uint128 top96 = maskFor<Uint128>(96);
  if ((k & top96) == kMappedPrefix || (k & top96) == kNat64Prefix) {
    v4 = static_cast<uint32_t>(k);
    return true;
  }
  if ((k & maskFor<Uint128>(16)) == kSixToFourPrefix) {
    v4 = static_cast<uint32_t>(k >> 80);
    return true;
  }
  return false;
}

// Built-in denies (deny_special). 0.0.0.0/8: connecting to 0.0.0.0 reaches this host on Linux.
const std::vector<std::pair<uint32_t, uint8_t>>& specialV4() {
  static const std::vector<std::pair<uint32_t, uint8_t>> ranges = {
      {0x00000000u, 8},   // unspecified / "this network"
      {0x7f000000u, 8},   // loopback
      {0xa9fe0000u, 16},  // link-local, incl. 169.254.169.254 (cloud metadata)
      {0xe0000000u, 4},   // multicast
  };
  return ranges;
}

const std::vector<std::pair<Uint128, uint8_t>>& specialV6() {
  static const std::vector<std::pair<Uint128, uint8_t>> ranges = {
      {Uint128{0}, 128},                                            // ::
      {Uint128{1}, 128},                                            // ::1
      {hi64(0xfe80000000000000ULL), 10},                            // link-local
      {hi64(0xfd00000000000000ULL | (0x0ec2ULL << 32)) | 0x254, 128},  // fd00:ec2::254 (AWS metadata)
      {hi64(0xff00000000000000ULL), 8},                             // multicast
  };
  return ranges;
}

template <typename Key>
bool inRanges(Key key, const std::vector<std::pair<Key, uint8_t>>& ranges) {
  for (const auto& [network, prefix] : ranges) {
    if ((key & maskFor<Key>(prefix)) == network) return true;
  }
  return false;
}

// Sorts intervals and merges overlapping or adjacent ones, so that at most one contains a key.
template <typename Key>
void normalise(std::vector<std::pair<Key, Key>>& v) {
  std::sort(v.begin(), v.end());
  size_t kept = 0;
  for (const auto& iv : v) {
    if (kept > 0 && (v[kept - 1].second == static_cast<Key>(~Key{0}) || iv.first <= v[kept - 1].second + 1)) {
      v[kept - 1].second = std::max(v[kept - 1].second, iv.second);
    } else {
      v[kept++] = iv;
    }
  }
  v.resize(kept);
}

// The interval of v (sorted, disjoint) that contains key, or nullptr.
template <typename Key>
const std::pair<Key, Key>* intervalOf(Key key, const std::vector<std::pair<Key, Key>>& v) {
  auto it = std::upper_bound(v.begin(), v.end(), key, [](Key k, const std::pair<Key, Key>& iv) { return k < iv.first; });
  if (it == v.begin() || key > std::prev(it)->second) return nullptr;
  return &*std::prev(it);
}

// Step 2 of policy.h for one family: key is special (a built-in range or this host) and the first
// matching rule (m; allow: whether it is an allow) does not open it. A built-in range is opened only
// by an allow whose CIDR lies inside a built-in range or names one address (namesSpecial, fixed
// when the rules are compiled); this host's ranges, which change at run time, also by an allow
// whose CIDR lies inside the local range that holds the key.
template <typename Key>
bool deniedAsSpecial(Key key, const typename PrefixTable<Key>::Match& m, bool allow,
                     const std::vector<std::pair<Key, uint8_t>>& builtIn, const std::vector<std::pair<Key, Key>>& local) {
  const bool opens = m.rule != PrefixTable<Key>::kNoRule && allow;
  if (opens && m.namesSpecial) return false;
  if (inRanges(key, builtIn)) return true;
  const std::pair<Key, Key>* range = intervalOf(key, local);
  if (range == nullptr) return false;
  return !(opens && m.first >= range->first && m.last <= range->second);
}

LocalRoute hostRoute(const SocketAddress& a) {
  LocalRoute r;
  r.family = static_cast<uint8_t>(a.family());
  r.length = static_cast<uint8_t>(a.copyIpTo(r.address) * 8);
  return r;
}

// A destination as a lookup key: IPv4 (including embedded forms) or plain IPv6.
struct DestKey {
  bool isV4 = false;
  // An IPv6 destination judged as its embedded IPv4 address (NAT64, 6to4) that connect() still
  // dials as IPv6: v6 is where the connection goes, so "this host" is asked about it too.
  // (IPv4-mapped addresses are not: connect() dials those over IPv4.)
  bool dialledAsV6 = false;
  uint32_t v4 = 0;
  Uint128 v6 = 0;
  bool valid = false;
};

DestKey keyOf(const SocketAddress& a) {
  DestKey out;
  if (a.family() == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(a.sockaddrPtr());
    out.isV4 = true;
    out.v4 = ntohl(sin->sin_addr.s_addr);
    out.valid = true;
  } else if (a.family() == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a.sockaddrPtr());
    out.v6 = v6Key(sin6->sin6_addr.s6_addr);
    out.isV4 = embeddedV4(out.v6, out.v4);
    out.dialledAsV6 = out.isV4 && !IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr);
    out.valid = true;
  }
  // Linux connects the unspecified address to loopback (0.0.0.0 to 127.0.0.1, :: to ::1, also
  // ::ffff:0.0.0.0): judge where the connection goes, or `0.0.0.0:5432` would pass a rule that
  // denies 127.0.0.1 on 5432.
  if (out.valid && out.isV4 && out.v4 == 0) out.v4 = 0x7f000001u;
  if (out.valid && !out.isV4 && out.v6 == 0) out.v6 = 1;
  return out;
}

const std::string kSpecialName = "special";
const std::string kDefaultName = "default";

}  // namespace

const std::string& decisionName(const PolicyDecision& decision, const std::vector<std::string>* ruleNames) {
  switch (decision.by) {
    case PolicyDecision::By::kRule:
      if (ruleNames && decision.rule < ruleNames->size()) return (*ruleNames)[decision.rule];
      return kDefaultName;
    case PolicyDecision::By::kSpecial:
      return kSpecialName;
    case PolicyDecision::By::kDefault:
      break;
  }
  return kDefaultName;
}

// --- PrefixTable ----------------------------------------------------------------------------------

template <typename Key>
void PrefixTable<Key>::emit(Key start, int32_t node) {
  if (!starts_.empty() && starts_.back() == start) {
    nodeAt_.back() = node;
    return;
  }
  if (!nodeAt_.empty() && nodeAt_.back() == node) return;  // same CIDR continues: one interval
  starts_.push_back(start);
  nodeAt_.push_back(node);
}

// The ports of one CIDR, resolved once: for each port the smallest rule index listing it. Rules
// are painted in order onto the elementary port segments; a union-find "next unpainted segment"
// makes it O(k log k) for k ranges, so 10,000 rules on 0.0.0.0/0 with distinct ports stay cheap.
template <typename Key>
void PrefixTable<Key>::buildPieces(const Entry* begin, const Entry* end) {
  static const std::vector<PortRange> kAll{PortRange{0, 65535}};
  std::vector<uint32_t> bounds;
  for (const Entry* e = begin; e != end; ++e) {
    const auto& ranges = e->ports->empty() ? kAll : *e->ports;
    for (const PortRange& r : ranges) {
      bounds.push_back(r.first);
      bounds.push_back(uint32_t{r.last} + 1);
    }
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  const size_t segments = bounds.size() - 1;
  std::vector<uint32_t> winner(segments, kNoRule);
  std::vector<uint32_t> next(segments + 1);
  for (size_t i = 0; i <= segments; ++i) next[i] = static_cast<uint32_t>(i);
  auto find = [&next](uint32_t i) {
    uint32_t root = i;
    while (next[root] != root) root = next[root];
    while (next[i] != root) i = std::exchange(next[i], root);
    return root;
  };
  auto indexOf = [&bounds](uint32_t value) {
    return static_cast<uint32_t>(std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin());
  };
  for (const Entry* e = begin; e != end; ++e) {  // entries are in rule order
    const auto& ranges = e->ports->empty() ? kAll : *e->ports;
    for (const PortRange& r : ranges) {
      const uint32_t stop = indexOf(uint32_t{r.last} + 1);
      for (uint32_t s = find(indexOf(r.first)); s < stop; s = find(s + 1)) {
        winner[s] = e->rule;
        next[s] = s + 1;
      }
    }
  }
  for (size_t s = 0; s < segments; ++s) {
    if (winner[s] == kNoRule) continue;
    const auto first = static_cast<uint16_t>(bounds[s]);
    const auto last = static_cast<uint16_t>(bounds[s + 1] - 1);
    if (pieces_.size() > nodes_.back().pieceBegin && pieces_.back().rule == winner[s] &&
        uint32_t{pieces_.back().last} + 1 == first) {
      pieces_.back().last = last;
    } else {
      pieces_.push_back(Piece{first, last, winner[s]});
    }
  }
}

template <typename Key>
void PrefixTable<Key>::build(std::vector<Entry> entries, const std::vector<std::pair<Key, uint8_t>>& specials) {
  starts_.clear();
  nodeAt_.clear();
  nodes_.clear();
  pieces_.clear();
  for (Entry& e : entries) e.network &= maskFor<Key>(e.prefix);
  // Parents (shorter prefixes) before children; one CIDR's rules in rule order.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.network != b.network) return a.network < b.network;
    if (a.prefix != b.prefix) return a.prefix < b.prefix;
    return a.rule < b.rule;
  });
  emit(0, -1);
  std::vector<int32_t> open;  // the CIDRs containing the current position, outermost first
  auto closeUntil = [this, &open](bool all, Key position) {
    while (!open.empty() && (all || nodes_[open.back()].last < position)) {
      const Key last = nodes_[open.back()].last;
      open.pop_back();
      if (last != static_cast<Key>(~Key{0})) emit(last + 1, open.empty() ? -1 : open.back());
    }
  };
  for (size_t i = 0; i < entries.size();) {
    size_t j = i;
    while (j < entries.size() && entries[j].network == entries[i].network && entries[j].prefix == entries[i].prefix) ++j;
    closeUntil(false, entries[i].network);
    Node node{};
    node.first = entries[i].network;
    node.last = entries[i].network | static_cast<Key>(~maskFor<Key>(entries[i].prefix));
    node.parent = open.empty() ? -1 : open.back();
    node.minRule = entries[i].rule;
    node.chainMin = node.parent < 0 ? node.minRule : std::min(node.minRule, nodes_[node.parent].chainMin);
    node.namesSpecial = entries[i].prefix == kBits;
    for (const auto& [network, prefix] : specials) {
      if (prefix <= entries[i].prefix && (node.first & maskFor<Key>(prefix)) == network) node.namesSpecial = true;
    }
    node.pieceBegin = node.pieceEnd = static_cast<uint32_t>(pieces_.size());
    nodes_.push_back(node);
    buildPieces(&entries[i], &entries[0] + j);
    nodes_.back().pieceEnd = static_cast<uint32_t>(pieces_.size());
    const auto index = static_cast<int32_t>(nodes_.size() - 1);
    emit(node.first, index);
    open.push_back(index);
    i = j;
  }
  closeUntil(true, 0);
  starts_.shrink_to_fit();
  nodeAt_.shrink_to_fit();
  nodes_.shrink_to_fit();
  pieces_.shrink_to_fit();
}

template <typename Key>
typename PrefixTable<Key>::Match PrefixTable<Key>::lookup(Key key, uint16_t port) const {
  Match match;
  if (nodes_.empty()) return match;
  const size_t interval = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), key) - starts_.begin()) - 1;
  for (int32_t n = nodeAt_[interval]; n >= 0;) {
    const Node& node = nodes_[n];
    if (node.chainMin >= match.rule) break;  // nothing from here outwards can come first
    if (node.minRule < match.rule) {
      const Piece* begin = pieces_.data() + node.pieceBegin;
      const Piece* end = pieces_.data() + node.pieceEnd;
      const Piece* p = std::upper_bound(begin, end, port, [](uint16_t v, const Piece& piece) { return v < piece.first; });
      if (p != begin && port <= (p - 1)->last && (p - 1)->rule < match.rule) {
        match.rule = (p - 1)->rule;
        match.namesSpecial = node.namesSpecial;
        match.first = node.first;
        match.last = node.last;
      }
    }
    n = node.parent;
  }
  return match;
}

template class PrefixTable<uint32_t>;
template class PrefixTable<Uint128>;

// --- DestinationPolicy ----------------------------------------------------------------------------

DestinationPolicy::DestinationPolicy(const PolicyRules& rules)
    : defaultAllow_(rules.defaultAllow), denySpecial_(rules.denySpecial) {
  std::vector<PrefixTable<uint32_t>::Entry> v4;
  std::vector<PrefixTable<Uint128>::Entry> v6;
  for (size_t i = 0; i < rules.rules.size(); ++i) {
    const PolicyRule& rule = rules.rules[i];
    ruleNames_.push_back(rule.name);
    ruleAllow_.push_back(rule.allow ? 1 : 0);
    const auto index = static_cast<uint32_t>(i);
    for (const IpCidr& c : rule.cidrs) {
      if (c.family == AF_INET && c.prefix <= 32) {
        v4.push_back({v4Key(c.bytes), c.prefix, index, &rule.ports});
      } else if (c.family == AF_INET6 && c.prefix <= 128) {
        v6.push_back({v6Key(c.bytes), c.prefix, index, &rule.ports});
      }
    }
  }
  v4_.build(std::move(v4), specialV4());
  v6_.build(std::move(v6), specialV6());
  for (const std::string& name : ruleNames_) counterNames_.push_back("policy." + name + ".denied");
  counterNames_.push_back("policy.special.denied");
  counterNames_.push_back("policy_denied");
  counters_ = std::make_unique<std::atomic<uint64_t>[]>(counterNames_.size());
  for (size_t i = 0; i < counterNames_.size(); ++i) counters_[i].store(0, std::memory_order_relaxed);
}

PolicyDecision DestinationPolicy::check(const SocketAddress& destination) const {
  PolicyDecision out;
  const DestKey key = keyOf(destination);
  if (!key.valid) {  // not an IP destination: nothing to connect to
    out.allow = false;
    out.by = PolicyDecision::By::kSpecial;
    return out;
  }
  const uint16_t port = destination.port();
  bool special = false;
  uint32_t rule = kNoRule;
  if (key.isV4) {
    const auto m = v4_.lookup(key.v4, port);
    rule = m.rule;
    special = denySpecial_ && deniedAsSpecial(key.v4, m, rule != kNoRule && ruleAllow_[rule], specialV4(), localV4_);
    // A NAT64 or 6to4 address of this host itself: judged by its IPv4 address above, but the
    // connection goes to this host. No rule can name it (IPv6 CIDRs inside those prefixes never
    // match, docs/POLICY.md), so nothing opens it.
    if (denySpecial_ && key.dialledAsV6 && intervalOf(key.v6, localV6_) != nullptr) special = true;
  } else {
    const auto m = v6_.lookup(key.v6, port);
    rule = m.rule;
    special = denySpecial_ && deniedAsSpecial(key.v6, m, rule != kNoRule && ruleAllow_[rule], specialV6(), localV6_);
  }
  if (special) {
    out.allow = false;
    out.by = PolicyDecision::By::kSpecial;
    return out;
  }
  if (rule != kNoRule) {
    out.allow = ruleAllow_[rule] != 0;
    out.by = PolicyDecision::By::kRule;
    out.rule = rule;
    return out;
  }
  out.allow = defaultAllow_;
  out.by = PolicyDecision::By::kDefault;
  return out;
}

void DestinationPolicy::countDenied(const PolicyDecision& decision) {
  if (decision.allow) return;
  if (decision.by == PolicyDecision::By::kRule) bump(decision.rule);
  if (decision.by == PolicyDecision::By::kSpecial) bump(ruleNames_.size());
  bump(counterCount() - 1);
}

void DestinationPolicy::exportCounters(double* out) const {
  for (size_t i = 0; i < counterCount(); ++i) out[i] = static_cast<double>(load(i));
}

void DestinationPolicy::setLocalRoutes(const std::vector<LocalRoute>& routes) {
  std::vector<std::pair<uint32_t, uint32_t>> v4;
  std::vector<std::pair<Uint128, Uint128>> v6;
  for (const LocalRoute& r : routes) {
    if (r.family == AF_INET && r.length <= 32) {
      const uint32_t mask = maskFor<uint32_t>(r.length);
      const uint32_t first = v4Key(r.address) & mask;
      v4.emplace_back(first, first | ~mask);
    } else if (r.family == AF_INET6 && r.length <= 128) {
      const Uint128 mask = maskFor<Uint128>(r.length);
      const Uint128 first = v6Key(r.address) & mask;
      v6.emplace_back(first, first | static_cast<Uint128>(~mask));
    }
  }
  normalise(v4);
  normalise(v6);
  localV4_ = std::move(v4);
  localV6_ = std::move(v6);
}

void DestinationPolicy::setLocalAddresses(const std::vector<SocketAddress>& addresses) {
  std::vector<LocalRoute> routes;
  for (const SocketAddress& a : addresses) routes.push_back(hostRoute(a));
  setLocalRoutes(routes);
}

bool DestinationPolicy::isLocalAddress(const SocketAddress& address) const {
  const DestKey key = keyOf(address);
  if (!key.valid) return false;
  if (key.dialledAsV6 && intervalOf(key.v6, localV6_) != nullptr) return true;
  return key.isV4 ? intervalOf(key.v4, localV4_) != nullptr : intervalOf(key.v6, localV6_) != nullptr;
}

SysError listThisHost(std::vector<LocalRoute>& out) {
  std::vector<LocalRoute> routes;
  // Both sources: getifaddrs lists every assigned address whether or not the kernel holds a
  // local route for it at the moment (an interface going down, an IPv6 address still in
  // duplicate address detection), and denying those too is the safe side.
  if (SysError e = dumpLocalRoutes(routes)) return e;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return SysError::fromErrno("getifaddrs");
  for (const ifaddrs* ifa = list; ifa != nullptr; ifa = ifa->ifa_next) {
    if (ifa->ifa_addr == nullptr) continue;
    const int family = ifa->ifa_addr->sa_family;
    if (family == AF_INET) routes.push_back(hostRoute(SocketAddress::fromSockaddr(ifa->ifa_addr, sizeof(sockaddr_in))));
    if (family == AF_INET6) routes.push_back(hostRoute(SocketAddress::fromSockaddr(ifa->ifa_addr, sizeof(sockaddr_in6))));
  }
  freeifaddrs(list);
  out = std::move(routes);
  return {};
}

SysError DestinationPolicy::refreshLocalAddresses() {
  std::vector<LocalRoute> routes;
  if (SysError e = listThisHost(routes)) return e;  // keep the last snapshot
  setLocalRoutes(routes);
  return {};
}

}  // namespace splicegate
