// Kernel pipes for splice(2), lent to a relay direction only while it has bytes in flight
// (HAProxy's model). An idle relayed connection then holds its two sockets and nothing more, which
// is what lets 8,000 idle connections fit under a 20,000 open-files hard limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "unique_fd.h"

namespace splicegate {

struct Pipe {
  UniqueFd readEnd;
  UniqueFd writeEnd;
  size_t bytes = 0;  // bytes sitting in the pipe: tells "socket empty" from "pipe full" on EAGAIN
};

class PipePool {
 public:
  // maxTotal bounds pipes in use plus pooled; maxIdle bounds the ones kept for reuse.
  PipePool(size_t maxTotal, size_t maxIdle, size_t pipeSize)
      : maxTotal_(maxTotal), maxIdle_(maxIdle), pipeSize_(pipeSize) {}

  // nullptr when the bound is reached or pipe2 fails: the caller falls back to copying.
  std::unique_ptr<Pipe> acquire();
  // A pipe that still holds bytes is destroyed, never reused: its data belongs to a dead stream.
  void release(std::unique_ptr<Pipe> pipe);

  size_t inUse() const { return total_ - idle_.size(); }
  size_t idle() const { return idle_.size(); }
  // Pipes an acquire() could hand out now: pooled ones, plus the ones the bound still allows to be
  // created, unless creating one failed last time (out of fds): a direction woken for those would
  // only fail again, and at once be woken again. A successful create or a destroyed pipe (its two
  // fds are free again) counts them once more.
  size_t available() const { return idle_.size() + (createFailing_ ? 0 : maxTotal_ - total_); }
  size_t capacityBytes() const { return pipeSize_ > 0 ? pipeSize_ : kDefaultPipeBytes; }
  static constexpr size_t kDefaultPipeBytes = 65536;
  uint64_t createFailures() const { return createFailures_; }

 private:
  size_t maxTotal_;
  size_t maxIdle_;
  size_t pipeSize_;
  size_t total_ = 0;
  uint64_t createFailures_ = 0;
  bool createFailing_ = false;
  std::vector<std::unique_ptr<Pipe>> idle_;
};

}  // namespace splicegate
