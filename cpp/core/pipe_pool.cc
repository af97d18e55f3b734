#include "pipe_pool.h"

#include <fcntl.h>
#include <unistd.h>

namespace splicegate {

std::unique_ptr<Pipe> PipePool::acquire() {
  if (!idle_.empty()) {
    std::unique_ptr<Pipe> pipe = std::move(idle_.back());
    idle_.pop_back();
    return pipe;
  }
  if (total_ >= maxTotal_) return nullptr;
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
    ++createFailures_;
    createFailing_ = true;
    return nullptr;
  }
  auto pipe = std::make_unique<Pipe>();
  pipe->readEnd.reset(fds[0]);
  pipe->writeEnd.reset(fds[1]);
  // A larger pipe moves more per splice call; if the per-user pipe budget refuses, the default
  // size still works, so the failure is not an error.
  if (pipeSize_ > 0) {
    const int got = ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(pipeSize_));
    pipeSize_ = got > 0 ? static_cast<size_t>(got) : 0;  // 0: stop asking, use the default
  }
  ++total_;
  createFailing_ = false;
  return pipe;
}

void PipePool::release(std::unique_ptr<Pipe> pipe) {
  if (!pipe) return;
  if (pipe->bytes == 0 && idle_.size() < maxIdle_) {
    idle_.push_back(std::move(pipe));
    return;
  }
  --total_;  // destroyed here: its fds close with it
  createFailing_ = false;
}

}  // namespace splicegate
