// What a peek at a socket's receive queue says, without taking anything from it.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstdint>

namespace splicegate {

// Bytes the peer sent that nobody read yet sit in the socket (closing it now would reset).
inline bool unreadBytesWaiting(int fd) {
  uint8_t byte;
  ssize_t n;
  do {
    n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n > 0;  // 0: EOF (nothing unread); -1: nothing now, or an error the close meets anyway
}

}  // namespace splicegate
