// Fixed-size copy buffers for the small-message path (recv/send), lent like pipes: only while a
// direction has bytes in flight, so idle connections hold none and the hot path never allocates
// once the pool is warm.
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
  BufferPool(size_t bufferSize, size_t maxIdle) : bufferSize_(bufferSize), maxIdle_(maxIdle) {}

  std::unique_ptr<Buffer> acquire() {
    if (idle_.empty()) return std::make_unique<Buffer>(bufferSize_);
    std::unique_ptr<Buffer> buf = std::move(idle_.back());
    idle_.pop_back();
    return buf;
  }
  void release(std::unique_ptr<Buffer> buf) {
    if (!buf) return;
    buf->offset = buf->length = 0;
    if (idle_.size() < maxIdle_) idle_.push_back(std::move(buf));
  }
  size_t bufferSize() const { return bufferSize_; }

 private:
  size_t bufferSize_;
  size_t maxIdle_;
  std::vector<std::unique_ptr<Buffer>> idle_;
};

}  // namespace splicegate
