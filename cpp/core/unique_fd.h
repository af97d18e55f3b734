// RAII owner of one file descriptor. Every socket, pipe end, epoll and timer fd in the core lives in
// one of these, so no error path can leak an fd (the open-files hard limit here is 20,000).
#pragma once

#include <unistd.h>

#include <utility>

namespace splicegate {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }

  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);  // close(2) is never retried on EINTR on Linux: the fd is gone.
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace splicegate
