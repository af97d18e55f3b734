// One SO_REUSEPORT listening socket owned by one worker. The kernel spreads new connections across
// the workers' sockets, so workers never share an accept queue or a lock.
#pragma once

#include <memory>

#include "core_options.h"
#include "event_loop.h"
#include "sys_error.h"
#include "unique_fd.h"

namespace splicegate {

class WorkerCore;

class Listener final : public EventHandler {
 public:
  static std::unique_ptr<Listener> open(WorkerCore& core, const ListenerOptions& options, SysError& err);

  void onEvents(uint32_t events) override;

  int fd() const { return fd_.get(); }
  const ListenerOptions& options() const { return options_; }
  const SocketAddress& boundAddress() const { return bound_; }

  // Out of fds: stop asking epoll for accepts until the next housekeeping tick.
  void pause();
  void resumeIfPaused();
  bool paused() const { return paused_; }

 private:
  Listener(WorkerCore& core, ListenerOptions options, UniqueFd fd, SocketAddress bound)
      : core_(core), options_(std::move(options)), fd_(std::move(fd)), bound_(bound) {}

  WorkerCore& core_;
  ListenerOptions options_;
  UniqueFd fd_;
  SocketAddress bound_;
  bool paused_ = false;
};

}  // namespace splicegate
