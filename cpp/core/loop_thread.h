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

#include "loop_driver.h"
#include "worker_core.h"

namespace splicegate {

class LoopThread final : public LoopDriver {
 public:
  explicit LoopThread(std::unique_ptr<WorkerCore> core) : core_(std::move(core)) {}
  ~LoopThread() override { stop(); }

  WorkerCore& core() override { return *core_; }
  void start() override;
  void post(std::function<void(WorkerCore&)> fn) override;
  // Closes everything and joins.
  void stop() override;
  bool running() const override { return thread_.joinable(); }

  // The owner is gone (its JS thread died) while the loop runs: from now on the loop leaves its
  // listeners, keeps relaying what it has, and ends on its own once no connection is left, or at
  // deadlineUs (EventLoop::monotonicUs) after closing the rest with resets. afterBatch(core, last)
  // runs on the loop thread after every batch (last: once more, after the final closes); `ended`
  // then runs as the loop thread's last act; join() after that. Thread-safe; once, after start().
  void orphan(uint64_t deadlineUs, std::function<void(WorkerCore&, bool last)> afterBatch, std::function<void()> ended);
  // An orphan's deadline moves to now: it closes its connections (resets) and ends. Thread-safe.
  void endOrphanNow();
  // Waits for the loop thread to return (an orphan's, once it ended); the core stays until ~LoopThread.
  void join();

 private:
  void run();
  void runPosted();
  // Orphan only, after each batch: true once the loop may end (connections closed if past the deadline).
  bool orphanDone();

  std::unique_ptr<WorkerCore> core_;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<std::function<void(WorkerCore&)>> posted_;
  bool stopRequested_ = false;  // guarded by mutex_
  // Loop thread only (set by a posted function).
  bool orphaned_ = false;
  uint64_t orphanDeadlineUs_ = 0;
  std::function<void(WorkerCore&, bool)> orphanAfterBatch_;
  std::function<void()> orphanEnded_;
};

}  // namespace splicegate
