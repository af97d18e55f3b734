// A worker's destination policies: one compiled DestinationPolicy per CoreOptions::policies entry
// ([0] the top-level policy, then the listeners' own), one host-address snapshot shared by all of
// them, and their counters merged by name, so /stats shows policy.<rule>.denied once however many
// policies carry a rule of that name (and policy_denied / policy.special.denied once in all).
//
// Threading: the loop thread checks, counts and refreshes; exportCounters() may run on another
// thread (the counters are relaxed atomics and the set itself never changes after construction).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "policy.h"
#include "policy_rules.h"
#include "sys_error.h"

namespace splicegate {

class PolicySet {
 public:
  explicit PolicySet(const std::vector<PolicyRules>& rules);

  // The merged counter names for these policies, in exportCounters() order, without compiling them
  // (the control layer names its counter block once at start from the same options).
  static std::vector<std::string> counterNames(const std::vector<PolicyRules>& rules);

  size_t size() const { return policies_.size(); }
  bool empty() const { return policies_.empty(); }
  // nullptr when there is no such policy.
  DestinationPolicy* at(uint32_t index) { return index < policies_.size() ? policies_[index].get() : nullptr; }

  // One listThisHost for every policy that has deny_special on; keeps the last snapshot on failure.
  // Allocates: at start and from the housekeeping timer only, never per connection.
  SysError refreshLocalAddresses();

  const std::vector<std::string>& counterNames() const { return names_; }
  // counterNames().size() values; counters sharing a name are summed.
  void exportCounters(double* out) const;

  // What decided a deny, for logs: the rule's name, "special" or "default".
  const std::string& decidedBy(uint32_t policy, const PolicyDecision& decision) const;

 private:
  std::vector<std::unique_ptr<DestinationPolicy>> policies_;
  std::vector<std::string> names_;
  std::vector<std::vector<uint32_t>> slots_;  // per policy, per own counter: index into names_
};

}  // namespace splicegate
