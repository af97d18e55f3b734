// int-valued socket options, the form every option the listeners set and check has.
#pragma once

#include <sys/socket.h>

namespace splicegate {

// false with errno on failure.
inline bool setIntOption(int fd, int level, int name, int value) {
  return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

// -1 with errno on failure.
inline int getIntOption(int fd, int level, int name) {
  int value = -1;
  socklen_t len = sizeof value;
  if (::getsockopt(fd, level, name, &value, &len) < 0) return -1;
  return value;
}

}  // namespace splicegate
