#include "loop_thread.h"

#include <pthread.h>

#include <csignal>

#include "event_loop.h"

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
  // Named so that top -H, perf and /proc tell the relay threads from Node's own.
  pthread_setname_np(pthread_self(), "splicegate-loop");
  core_->setWakeHandler([this] { runPosted(); });
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopRequested_) break;
    }
    core_->runOnce(-1);  // the core's tick bounds the wait (50 ms for an orphan), so its deadline is seen
    if (orphaned_ && orphanAfterBatch_) orphanAfterBatch_(*core_, false);
    if (orphaned_ && orphanDone()) {
      runPosted();
      if (orphanAfterBatch_) orphanAfterBatch_(*core_, true);
      // Whoever joins may free this object: nothing after the callback touches it.
      std::function<void()> ended = std::move(orphanEnded_);
      if (ended) ended();
      return;
    }
  }
  runPosted();
}

void LoopThread::orphan(uint64_t deadlineUs, std::function<void(WorkerCore&, bool)> afterBatch, std::function<void()> ended) {
  post([this, deadlineUs, afterBatch = std::move(afterBatch), ended = std::move(ended)](WorkerCore& core) mutable {
    // Detached the way stopAccepting always is: safe inside the batch this runs in.
    core.stopAccepting();
    core.keepTicking();  // the deadline and the access-log hand-over are seen on the busy tick
    orphaned_ = true;
    orphanDeadlineUs_ = deadlineUs;
    orphanAfterBatch_ = std::move(afterBatch);
    orphanEnded_ = std::move(ended);
  });
}

void LoopThread::endOrphanNow() {
  post([this](WorkerCore&) { orphanDeadlineUs_ = 0; });
}

void LoopThread::join() {
  if (thread_.joinable()) thread_.join();
}

bool LoopThread::orphanDone() {
  if (core_->activeConnections() == 0) {
    // Idle pooled upstreams close now, before the final counters are read (outside any batch).
    core_->closeIdleUpstreams();
    return true;
  }
  if (EventLoop::monotonicUs() < orphanDeadlineUs_) return false;
  // Past the deadline: what is left is cut, each with a reset (counted in cx_drained). Outside
  // any batch here, so the connections are freed at once.
  core_->closeAllConnections(CloseReason::kDrained);
  return true;
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
