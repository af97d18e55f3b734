// A minimal intrusive doubly linked list: O(1) unlink without allocation, used for the per-worker
// connection set and the connect-timeout FIFO (all connects share one timeout, so FIFO order is
// deadline order and the head is always the next to expire).
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace splicegate {

// The object whose field `field` is at `member`: the offset is read from the pointer-to-member,
// since offsetof is not defined for classes that are not standard-layout.
template <typename T, typename M>
T* containerOf(M* member, M T::*field) {
  const size_t offset = reinterpret_cast<size_t>(&(static_cast<T*>(nullptr)->*field));
  return reinterpret_cast<T*>(reinterpret_cast<char*>(member) - offset);
}

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
  static T* fromNode(ListNode* node) { return containerOf(node, Member); }

  ListNode head_;
  size_t size_ = 0;
};

// Lists that never hold the same item at once may share one node in it, to keep a small object
// small: the item's `Tag` byte names the list that holds it (0: none), and each list touches the
// node only while its own tag is there. Removing an item from a list that does not hold it is a
// no-op, as with IntrusiveList, so a close path may remove from all of them.
template <typename T, ListNode T::*Member, uint8_t T::*Tag, uint8_t kTag>
class SharedNodeList {
  static_assert(kTag != 0, "tag 0 means: in no list");

 public:
  bool empty() const { return list_.empty(); }
  size_t size() const { return list_.size(); }
  static bool holds(const T& item) { return item.*Tag == kTag; }

  void pushBack(T* item) {
    assert(item->*Tag == 0 && "the shared node is still in another list");
    item->*Tag = kTag;
    list_.pushBack(item);
  }
  void remove(T* item) {
    if (item->*Tag != kTag) return;
    list_.remove(item);
    item->*Tag = 0;
  }
  T* front() const { return list_.front(); }
  T* popFront() {
    T* item = list_.popFront();
    if (item) item->*Tag = 0;
    return item;
  }
  template <typename F>
  void forEachSafe(F&& fn) {
    list_.forEachSafe(std::forward<F>(fn));
  }

 private:
  IntrusiveList<T, Member> list_;
};

}  // namespace splicegate
