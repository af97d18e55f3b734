// Destination policy: may this connection go to this original destination? Compiled once from
// ordered rules (first match wins) into a structure whose check() costs one binary search over the
// address space plus a short walk up the CIDRs that contain the address, and never allocates.
//
// Order of judgement (docs/POLICY.md):
//  1. IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) destinations are
//     judged as their embedded IPv4 address, so an IPv6 spelling cannot slip past an IPv4 rule.
//     The unspecified address is judged as the loopback address Linux connects it to (0.0.0.0
//     as 127.0.0.1, :: as ::1).
//  2. deny_special: loopback, unspecified, link-local (incl. cloud metadata), multicast and every
//     address of this host, AnyIP ranges included (any port) are denied, unless the first matching
//     rule is an allow whose matching CIDR lies inside that special range (e.g. allow
//     169.254.169.254/32, or an AnyIP range's own CIDR; a catch-all 0.0.0.0/0 does not count).
//  3. The rules in order; the first whose CIDRs contain the address and whose ports contain the
//     port decides.
//  4. The default.
//
// Threading: one owner (a worker's loop thread) calls check(), countDenied() and
// refreshLocalAddresses(); counters may be read from another thread (relaxed atomics, as Stats).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "local_routes.h"
#include "policy_rules.h"
#include "socket_address.h"
#include "sys_error.h"

namespace splicegate {

struct PolicyDecision {
  enum class By : uint8_t { kRule, kSpecial, kDefault };
  bool allow = true;
  By by = By::kDefault;
  uint32_t rule = 0;  // index into the rules when by == kRule
};

// What made a decision, as logs and the access log name it: the deciding rule's name, "special"
// (the built-in denies) or "default". ruleNames: the deciding policy's rule names, in order, or
// nullptr when there is no such policy; a rule index outside them also reads "default".
const std::string& decisionName(const PolicyDecision& decision, const std::vector<std::string>* ruleNames);

using Uint128 = unsigned __int128;

// One address family's compiled rules: the CIDRs as a containment forest, flattened into sorted
// disjoint address intervals, each pointing at the deepest CIDR that contains it.
template <typename Key>
class PrefixTable {
 public:
  static constexpr int kBits = static_cast<int>(sizeof(Key) * 8);
  static constexpr uint32_t kNoRule = UINT32_MAX;

  struct Entry {
    Key network;
    uint8_t prefix;
    uint32_t rule;
    const std::vector<PortRange>* ports;  // empty = all ports
  };
  struct Match {
    uint32_t rule = kNoRule;
    // The matching CIDR lies inside a built-in special range, or names exactly one address: an
    // allow through it overrides deny_special (policy.h, step 2).
    bool namesSpecial = false;
    // The matching CIDR, as the first and last address it covers: whether it lies inside one of
    // this host's local ranges is known only at check time (they change while the policy lives).
    Key first = 0;
    Key last = 0;
  };

  // entries: every (CIDR, rule) pair of this family; specials: the built-in ranges.
  void build(std::vector<Entry> entries, const std::vector<std::pair<Key, uint8_t>>& specials);
  Match lookup(Key key, uint16_t port) const;
  size_t nodeCount() const { return nodes_.size(); }

 private:
  struct Node {
    Key first;
    Key last;
    int32_t parent;
    uint32_t minRule;   // smallest rule index listed on this exact CIDR
    uint32_t chainMin;  // smallest over this CIDR and all that contain it: stops the walk early
    uint32_t pieceBegin;
    uint32_t pieceEnd;
    bool namesSpecial;
  };
  // Ports of one CIDR resolved to the first matching rule: disjoint, sorted by first port.
  struct Piece {
    uint16_t first;
    uint16_t last;
    uint32_t rule;
  };

  void emit(Key start, int32_t node);
  void buildPieces(const Entry* begin, const Entry* end);

  std::vector<Key> starts_;       // interval i is [starts_[i], starts_[i+1])
  std::vector<int32_t> nodeAt_;   // deepest CIDR containing interval i, or -1
  std::vector<Node> nodes_;
  std::vector<Piece> pieces_;
};

// What "this host" is (refreshLocalAddresses() snapshots it): every interface address (getifaddrs)
// as a host route, and every local route of the local routing table, AnyIP ranges included
// (local_routes.h). Allocates and asks the kernel, so owners with several policies call it once
// and hand the list to setLocalRoutes().
SysError listThisHost(std::vector<LocalRoute>& out);

class DestinationPolicy {
 public:
  explicit DestinationPolicy(const PolicyRules& rules);
  DestinationPolicy(const DestinationPolicy&) = delete;
  DestinationPolicy& operator=(const DestinationPolicy&) = delete;

  // The decision for one original destination (after any port override). No allocation, no lock.
  PolicyDecision check(const SocketAddress& destination) const;

  // Counts a deny in policy_denied and in its rule's (or the special) counter. Single writer.
  void countDenied(const PolicyDecision& decision);

  // This host's addresses and local ranges, for the "every address of this host" special: a
  // listThisHost() snapshot. The owner calls it at start, on every address or local-route notice
  // and periodically (addresses come and go with DHCP, VIPs, containers); it allocates, so never
  // on the per-connection path.
  SysError refreshLocalAddresses();
  // Replace the snapshot: with routes (any prefix length), or with single addresses (for tests).
  void setLocalRoutes(const std::vector<LocalRoute>& routes);
  void setLocalAddresses(const std::vector<SocketAddress>& addresses);
  bool isLocalAddress(const SocketAddress& address) const;
  bool denySpecial() const { return denySpecial_; }

  size_t ruleCount() const { return ruleNames_.size(); }
  const std::string& ruleName(uint32_t rule) const { return ruleNames_[rule]; }
  const std::vector<std::string>& ruleNames() const { return ruleNames_; }

  // Counters as one block, in the order of counterNames(): policy.<rule>.denied for each rule,
  // then policy.special.denied, then policy_denied. Names are built once; values copied in bulk.
  const std::vector<std::string>& counterNames() const { return counterNames_; }
  void exportCounters(double* out) const;
  uint64_t deniedTotal() const { return load(counterCount() - 1); }
  uint64_t deniedByRule(uint32_t rule) const { return load(rule); }
  uint64_t deniedSpecial() const { return load(ruleNames_.size()); }
  size_t counterCount() const { return ruleNames_.size() + 2; }

 private:
  uint64_t load(size_t i) const { return counters_[i].load(std::memory_order_relaxed); }
  void bump(size_t i) { counters_[i].store(counters_[i].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }

  bool defaultAllow_;
  bool denySpecial_;
  std::vector<std::string> ruleNames_;
  std::vector<uint8_t> ruleAllow_;
  PrefixTable<uint32_t> v4_;
  PrefixTable<Uint128> v6_;
  // This host as sorted, disjoint, non-adjacent [first, last] intervals (one per address, or one
  // per AnyIP range); a lookup is one binary search.
  std::vector<std::pair<uint32_t, uint32_t>> localV4_;
  std::vector<std::pair<Uint128, Uint128>> localV6_;
  std::vector<std::string> counterNames_;
  std::unique_ptr<std::atomic<uint64_t>[]> counters_;
};

}  // namespace splicegate
