// A failed system call as a value: the syscall's name, errno, and what it was doing. The core never
// throws; the addon layer turns these into Node-style system errors (code, errno, syscall).
#pragma once

#include <cerrno>
#include <string>

namespace splicegate {

struct SysError {
  const char* syscall = nullptr;  // nullptr means "no error"
  int err = 0;
  std::string context;  // e.g. the address being bound

  static SysError fromErrno(const char* syscall, std::string context = {}) {
    return SysError{syscall, errno, std::move(context)};
  }
  explicit operator bool() const { return syscall != nullptr; }
};

// "EADDRINUSE" for 98, or "E<n>" when the C library has no name for it.
std::string errnoName(int err);

}  // namespace splicegate
