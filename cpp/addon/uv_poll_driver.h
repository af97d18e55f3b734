// Alternative driver: the core's epoll fd registered in the JS worker thread's libuv loop, so the
// relay runs on the worker thread itself. Kept for the thread-model A/B (tuning.driver: uv).
#pragma once

#include <uv.h>

#include <memory>

#include "../core/loop_driver.h"

namespace splicegate {

class UvPollDriver final : public LoopDriver {
 public:
  UvPollDriver(uv_loop_t* loop, std::unique_ptr<WorkerCore> core) : loop_(loop), core_(std::move(core)) {}
  ~UvPollDriver() override { stop(); }

  WorkerCore& core() override { return *core_; }
  void start() override;
  void post(std::function<void(WorkerCore&)> fn) override { fn(*core_); }  // same thread
  void stop() override;
  bool running() const override { return poll_ != nullptr; }

 private:
  static void onReadable(uv_poll_t* handle, int status, int events);

  uv_loop_t* loop_;
  std::unique_ptr<WorkerCore> core_;
  uv_poll_t* poll_ = nullptr;  // freed by uv_close's callback
};

}  // namespace splicegate
