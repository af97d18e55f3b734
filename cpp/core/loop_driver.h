// How a WorkerCore's loop gets run. Two drivers exist so the thread model stays a measured choice
// (docs/ARCHITECTURE.md): LoopThread (a dedicated native thread, the default) and the addon's
// UvPollDriver (the core's epoll fd polled by the JS worker thread's libuv loop).
#pragma once

#include <functional>

#include "worker_core.h"

namespace splicegate {

class LoopDriver {
 public:
  virtual ~LoopDriver() = default;
  // Before start() the core may be used directly from the calling thread (opening listeners).
  virtual WorkerCore& core() = 0;
  virtual void start() = 0;
  // Runs fn on the loop's thread (thread-safe).
  virtual void post(std::function<void(WorkerCore&)> fn) = 0;
  // Closes everything; idempotent.
  virtual void stop() = 0;
  virtual bool running() const = 0;
  const Stats& stats() { return core().stats(); }
};

}  // namespace splicegate
