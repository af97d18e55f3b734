#include "policy_set.h"

#include <unordered_map>

namespace splicegate {

namespace {

// Same names, same order as DestinationPolicy::counterNames().
std::vector<std::string> ownNames(const PolicyRules& rules) {
  std::vector<std::string> names;
  names.reserve(rules.rules.size() + 2);
  for (const PolicyRule& rule : rules.rules) names.push_back("policy." + rule.name + ".denied");
  names.push_back("policy.special.denied");
  names.push_back("policy_denied");
  return names;
}

// Names in order of first appearance; slots[p][i] is where policy p's counter i lands.
void merge(const std::vector<std::vector<std::string>>& perPolicy, std::vector<std::string>& names,
           std::vector<std::vector<uint32_t>>* slots) {
  std::unordered_map<std::string, uint32_t> index;
  for (const std::vector<std::string>& own : perPolicy) {
    std::vector<uint32_t> mine;
    mine.reserve(own.size());
    for (const std::string& name : own) {
      auto [it, added] = index.emplace(name, static_cast<uint32_t>(names.size()));
      if (added) names.push_back(name);
      mine.push_back(it->second);
    }
    if (slots) slots->push_back(std::move(mine));
  }
}

}  // namespace

PolicySet::PolicySet(const std::vector<PolicyRules>& rules) {
  std::vector<std::vector<std::string>> perPolicy;
  for (const PolicyRules& r : rules) {
    policies_.push_back(std::make_unique<DestinationPolicy>(r));
    perPolicy.push_back(policies_.back()->counterNames());
  }
  merge(perPolicy, names_, &slots_);
}

std::vector<std::string> PolicySet::counterNames(const std::vector<PolicyRules>& rules) {
  std::vector<std::vector<std::string>> perPolicy;
  for (const PolicyRules& r : rules) perPolicy.push_back(ownNames(r));
  std::vector<std::string> names;
  merge(perPolicy, names, nullptr);
  return names;
}

SysError PolicySet::refreshLocalAddresses() {
  bool needed = false;
  for (const auto& p : policies_) needed = needed || p->denySpecial();
  if (!needed) return {};
  std::vector<LocalRoute> routes;
  if (SysError e = listThisHost(routes)) return e;
  for (const auto& p : policies_) {
    if (p->denySpecial()) p->setLocalRoutes(routes);
  }
  return {};
}

void PolicySet::exportCounters(double* out) const {
  for (size_t i = 0; i < names_.size(); ++i) out[i] = 0;
  std::vector<double> own;
  for (size_t p = 0; p < policies_.size(); ++p) {
    own.resize(policies_[p]->counterCount());
    policies_[p]->exportCounters(own.data());
    for (size_t i = 0; i < own.size(); ++i) out[slots_[p][i]] += own[i];
  }
}

const std::string& PolicySet::decidedBy(uint32_t policy, const PolicyDecision& decision) const {
  return decisionName(decision, policy < policies_.size() ? &policies_[policy]->ruleNames() : nullptr);
}

}  // namespace splicegate
