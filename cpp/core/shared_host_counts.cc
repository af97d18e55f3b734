#include "shared_host_counts.h"

namespace splicegate {

SharedHostCounts::Slot* SharedHostCounts::acquire(const SocketAddress& address) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::unique_ptr<Slot>& slot = slots_[address];
  if (!slot) slot = std::make_unique<Slot>();
  ++slot->holders;
  return slot.get();
}

void SharedHostCounts::release(const SocketAddress& address, Slot* slot) {
  std::lock_guard<std::mutex> lock(mutex_);
  // The counts are back to 0 when the last holder goes (each holder gave back what it reserved);
  // a slot still counted elsewhere keeps its address.
  if (--slot->holders == 0) slots_.erase(address);
}

SharedHostCounts::Reserve SharedHostCounts::reserve(Slot& slot, uint64_t maxActive, uint64_t maxPending) {
  // Add first, then check: two workers racing for the last place cannot both get it (one of them
  // sees the other's add and gives its own back), at worst both refuse.
  if (slot.active.fetch_add(1, std::memory_order_relaxed) >= maxActive) {
    slot.active.fetch_sub(1, std::memory_order_relaxed);
    return Reserve::kConnectionOverflow;
  }
  if (slot.pending.fetch_add(1, std::memory_order_relaxed) >= maxPending) {
    slot.pending.fetch_sub(1, std::memory_order_relaxed);
    slot.active.fetch_sub(1, std::memory_order_relaxed);
    return Reserve::kPendingOverflow;
  }
  return Reserve::kOk;
}

size_t SharedHostCounts::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slots_.size();
}

SharedHostCounts& SharedHostCounts::process() {
  // Leaked on purpose: an orphaned loop may still release slots while static destructors run.
  static SharedHostCounts* counts = new SharedHostCounts;
  return *counts;
}

}  // namespace splicegate
