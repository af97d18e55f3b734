// A minimal intrusive doubly linked list: O(1) unlink without allocation, used for the per-worker
// connection set and the connect-timeout FIFO (all connects share one timeout, so FIFO order is
// deadline order and the head is always the next to expire).
#pragma once

#include <cstddef>

namespace splicegate {

struct ListNode {
  ListNode* prev = nullptr;
  ListNode* next = nullptr;
  bool linked() const { return prev != nullptr; }
};

template <typename T, ListNode T::*Member>
class IntrusiveList {
 public:
  IntrusiveList() { head_.prev = head_.next = &head_; }
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;

  bool empty() const { return head_.next == &head_; }
  size_t size() const { return size_; }

  void pushBack(T* item) {
    ListNode* node = &(item->*Member);
    node->prev = head_.prev;
    node->next = &head_;
    head_.prev->next = node;
    head_.prev = node;
    ++size_;
  }

  static void unlinkNode(ListNode* node) {
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = nullptr;
  }
  void remove(T* item) {
    ListNode* node = &(item->*Member);
    if (!node->linked()) return;
    unlinkNode(node);
    --size_;
  }

  T* front() const { return empty() ? nullptr : fromNode(head_.next); }

  T* popFront() {
    T* item = front();
    if (item) remove(item);
    return item;
  }

  template <typename F>
  void forEachSafe(F&& fn) {
    ListNode* node = head_.next;
    while (node != &head_) {
      ListNode* next = node->next;
      fn(fromNode(node));
      node = next;
    }
  }

 private:
  static T* fromNode(ListNode* node) {
    // offsetof on a pointer-to-member: compute the member's offset from a null-based object.
    const size_t offset = reinterpret_cast<size_t>(&(static_cast<T*>(nullptr)->*Member));
    return reinterpret_cast<T*>(reinterpret_cast<char*>(node) - offset);
  }

  ListNode head_;
  size_t size_ = 0;
};

}  // namespace splicegate
