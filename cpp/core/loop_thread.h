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
