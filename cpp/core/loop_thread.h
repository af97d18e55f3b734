// Runs one WorkerCore on a dedicated native thread. The JS worker thread that owns it only sends
// rare control commands (through a mutex-guarded queue plus the core's eventfd) and reads counters
// (relaxed atomics), so the relay loop never waits on JavaScript, garbage collection or messages,
// and each wakeup costs one epoll_wait rather than libuv's plus ours. See docs/ARCHITECTURE.md.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "worker_core.h"

namespace splicegate {

class LoopThread {
 public:
  explicit LoopThread(std::unique_ptr<WorkerCore> core) : core_(std::move(core)) {}
  ~LoopThread() { stop(); }

  // Before start() the core may be used directly from the calling thread (opening listeners).
  WorkerCore& core() { return *core_; }
  const Stats& stats() const { return core_->stats(); }

  void start();
  // Runs fn on the loop thread at its next wakeup.
  void post(std::function<void(WorkerCore&)> fn);
  // Closes everything and joins. Idempotent.
  void stop();
  bool running() const { return thread_.joinable(); }

 private:
  void run();
  void runPosted();

  std::unique_ptr<WorkerCore> core_;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<std::function<void(WorkerCore&)>> posted_;
  bool stopRequested_ = false;  // guarded by mutex_
};

}  // namespace splicegate
