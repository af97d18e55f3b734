#include "loop_thread.h"

#include <csignal>

namespace splicegate {

void LoopThread::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { run(); });
}

void LoopThread::post(std::function<void(WorkerCore&)> fn) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    posted_.push_back(std::move(fn));
  }
  core_->wake();
}

void LoopThread::stop() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopRequested_ = true;
    }
    core_->wake();
    thread_.join();
  }
  if (core_) {
    core_->stopAccepting();
    core_->closeAllConnections(CloseReason::kDrained);
  }
}

void LoopThread::run() {
  // Signals belong to the main thread (Node's handlers); this thread only relays.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  core_->setWakeHandler([this] { runPosted(); });
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopRequested_) break;
    }
    core_->runOnce(-1);
  }
  runPosted();
}

void LoopThread::runPosted() {
  std::vector<std::function<void(WorkerCore&)>> work;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    work.swap(posted_);
  }
  for (auto& fn : work) fn(*core_);
}

}  // namespace splicegate
