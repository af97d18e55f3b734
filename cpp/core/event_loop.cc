#include "event_loop.h"

#include <time.h>

#include <cerrno>

namespace splicegate {

std::unique_ptr<EventLoop> EventLoop::create(SysError& err) {
  UniqueFd fd(::epoll_create1(EPOLL_CLOEXEC));
  if (!fd) {
    err = SysError::fromErrno("epoll_create1");
    return nullptr;
  }
  return std::unique_ptr<EventLoop>(new EventLoop(std::move(fd)));
}

SysError EventLoop::add(int fd, uint32_t events, EventHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) return SysError::fromErrno("epoll_ctl");
  return {};
}

SysError EventLoop::addTracked(int fd, uint32_t events, TrackedEventHandler* handler) {
  static_assert(alignof(TrackedEventHandler) > kTrackedBit, "the tag needs a free low bit");
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = reinterpret_cast<uintptr_t>(handler) | kTrackedBit;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) return SysError::fromErrno("epoll_ctl");
  return {};
}

SysError EventLoop::modify(int fd, uint32_t events, EventHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) < 0) return SysError::fromErrno("epoll_ctl");
  return {};
}

void EventLoop::remove(int fd) {
  epoll_event ev{};
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, &ev);
}

int EventLoop::waitAndDispatch(int timeoutMs) {
  epoll_event events[kMaxEventsPerBatch];
  int n;
  do {
    n = ::epoll_wait(epoll_.get(), events, kMaxEventsPerBatch, timeoutMs);
  } while (n < 0 && errno == EINTR);
  refreshNow();
  if (n > 0 && batchCollectedForTests_) batchCollectedForTests_();
  // Every handler of the batch stays alive until the batch ends (nothing is freed before), so the
  // tracked ones can all be marked first.
  for (int i = 0; i < n; ++i) {
    if (events[i].data.u64 & kTrackedBit) trackedHandler(events[i].data.u64)->eventPending_ = true;
  }
  for (int i = 0; i < n; ++i) {
    const uint64_t data = events[i].data.u64;
    EventHandler* handler;
    if (data & kTrackedBit) {
      TrackedEventHandler* t = trackedHandler(data);
      t->eventPending_ = false;
      handler = t;
    } else {
      handler = static_cast<EventHandler*>(events[i].data.ptr);
    }
    handler->onEvents(events[i].events);
  }
  return n < 0 ? 0 : n;
}

uint64_t EventLoop::monotonicUs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

void EventLoop::refreshNow() { nowUs_ = monotonicUs(); }

}  // namespace splicegate
