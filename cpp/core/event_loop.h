// The worker's epoll instance. Every fd the worker owns is registered here once; the loop's own fd
// is what the worker's LoopDriver waits on (its own native thread by default, or a libuv uv_poll
// in the JS worker thread with tuning.driver: uv), so the relay runs on one thread per worker and
// nothing on it takes a lock.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "sys_error.h"
#include "unique_fd.h"

namespace splicegate {

class EventHandler {
 public:
  virtual void onEvents(uint32_t events) = 0;

 protected:
  ~EventHandler() = default;
};

// A handler that can tell whether an event for it is still waiting in the batch being dispatched:
// a socket that changes hands within a batch asks whether something already happened to it.
// Registered with addTracked. (A separate class, so that the handlers of relayed connections,
// whose size is the memory per idle connection, carry no flag.)
class TrackedEventHandler : public EventHandler {
 public:
  bool eventPending() const { return eventPending_; }

 protected:
  ~TrackedEventHandler() = default;

 private:
  friend class EventLoop;
  bool eventPending_ = false;
};

class EventLoop {
 public:
  static constexpr int kMaxEventsPerBatch = 256;

  static std::unique_ptr<EventLoop> create(SysError& err);

  int fd() const { return epoll_.get(); }
  SysError add(int fd, uint32_t events, EventHandler* handler);
  SysError addTracked(int fd, uint32_t events, TrackedEventHandler* handler);
  SysError modify(int fd, uint32_t events, EventHandler* handler);
  void remove(int fd);

  // Waits up to timeoutMs (0 = just poll) and dispatches one batch. Returns the events handled.
  int waitAndDispatch(int timeoutMs);

  // Tests only: runs after epoll_wait returned a batch and before it is dispatched, on the loop's
  // thread. It stages what no test can time from outside: something that happens after the batch
  // was collected (a server's close) and before its events are handled.
  void setBatchCollectedHookForTests(std::function<void()> hook) { batchCollectedForTests_ = std::move(hook); }

  // Monotonic clock in microseconds, read once per batch so the hot path does not keep asking.
  uint64_t nowUs() const { return nowUs_; }
  void refreshNow();
  static uint64_t monotonicUs();

 private:
  // epoll_event.data of a tracked handler: its address with this bit set (handlers are aligned).
  static constexpr uint64_t kTrackedBit = 1;
  static TrackedEventHandler* trackedHandler(uint64_t data) {
    return reinterpret_cast<TrackedEventHandler*>(static_cast<uintptr_t>(data & ~kTrackedBit));
  }

  explicit EventLoop(UniqueFd epoll) : epoll_(std::move(epoll)) { refreshNow(); }
  UniqueFd epoll_;
  uint64_t nowUs_ = 0;
  std::function<void()> batchCollectedForTests_;
};

}  // namespace splicegate
