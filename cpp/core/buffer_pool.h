// Fixed-size copy buffers for the small-message path (recv/send), lent like pipes: only while a
// direction has bytes in flight, so idle connections hold none and the hot path never allocates
// once the pool is warm. The pool is bounded (maxTotal buffers lent or pooled), so copy memory per
// worker is at most maxTotal x bufferSize however many connections are busy; a direction that
// finds it empty waits for a release (WorkerCore's holder wait queue), it never allocates more.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace splicegate {

struct Buffer {
  explicit Buffer(size_t size) : data(new char[size]) {}
  std::unique_ptr<char[]> data;
  size_t offset = 0;  // first unsent byte
  size_t length = 0;  // bytes held from offset
};

class BufferPool {
 public:
  BufferPool(size_t bufferSize, size_t maxTotal, size_t maxIdle)
      : bufferSize_(bufferSize), maxTotal_(maxTotal), maxIdle_(maxIdle) {}

  // nullptr when maxTotal buffers are out: the caller waits for one to come back.
  std::unique_ptr<Buffer> acquire() {
    if (!idle_.empty()) {
      std::unique_ptr<Buffer> buf = std::move(idle_.back());
      idle_.pop_back();
      return buf;
    }
    if (total_ >= maxTotal_) return nullptr;
    ++total_;
    return std::make_unique<Buffer>(bufferSize_);
  }
  void release(std::unique_ptr<Buffer> buf) {
    if (!buf) return;
    buf->offset = buf->length = 0;
    if (idle_.size() < maxIdle_) {
      idle_.push_back(std::move(buf));
    } else {
      --total_;  // freed here
    }
  }
  size_t bufferSize() const { return bufferSize_; }
  size_t maxTotal() const { return maxTotal_; }
  size_t inUse() const { return total_ - idle_.size(); }
  // Buffers an acquire() could hand out now (pooled or still allowed to be created).
  size_t available() const { return maxTotal_ - inUse(); }

 private:
  size_t bufferSize_;
  size_t maxTotal_;
  size_t maxIdle_;
  size_t total_ = 0;  // lent plus pooled
  std::vector<std::unique_ptr<Buffer>> idle_;
};

}  // namespace splicegate
