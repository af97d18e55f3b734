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
  for (int i = 0; i < n; ++i) {
    static_cast<EventHandler*>(events[i].data.ptr)->onEvents(events[i].events);
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
