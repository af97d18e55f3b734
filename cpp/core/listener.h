// Listening sockets. Each configured listener is ONE socket for the whole process: the main thread
// opens it (openListenSocket) and keeps it open for the process's life, so no worker's death or
// restart ever closes it (a closed socket's accept queue is reset: the SO_REUSEPORT trap). Every
// worker registers it in its own epoll through a Listener, which holds the worker's own dup of it.
#pragma once

#include <memory>

#include "core_options.h"
#include "event_loop.h"
#include "sys_error.h"
#include "unique_fd.h"

namespace splicegate {

class WorkerCore;

// socket + SO_REUSEADDR (+ IPV6_V6ONLY, IP_TRANSPARENT, TCP_NODELAY) + bind + listen, non-blocking.
// No SO_REUSEPORT: an address another process listens on fails here with EADDRINUSE.
UniqueFd openListenSocket(const ListenerOptions& options, SocketAddress* bound, SysError& err);

// What an inherited fd is (socket activation passes fds 3..; see src/proxy/socket-activation.ts).
struct SocketInfo {
  int type = 0;               // SOCK_STREAM, SOCK_DGRAM, ...
  int family = AF_UNSPEC;     // AF_INET, AF_INET6, AF_UNIX, ...
  bool listening = false;     // SO_ACCEPTCONN
  SocketAddress local;        // getsockname, for AF_INET and AF_INET6
};
// EBADF: not an open fd; ENOTSOCK: open but not a socket.
SysError inspectSocket(int fd, SocketInfo& out);

// Takes over a listening socket the process inherited (systemd socket activation) instead of
// opening one: it must be a listening TCP socket bound to exactly options.address (an IPv6 one
// IPv6-only, as openListenSocket makes it). Made non-blocking and close-on-exec, IP_TRANSPARENT
// set when the listener is transparent and the socket is not yet, TCP_NODELAY set, and listen()
// called again so the listener's backlog applies. On success the returned UniqueFd owns the fd
// (same number); on failure nothing is taken over and the caller still owns `fd`.
UniqueFd adoptListenSocket(int fd, const ListenerOptions& options, SocketAddress* bound, SysError& err);

class Listener final : public EventHandler {
 public:
  // One worker's share of a listening socket opened by openListenSocket (sharedFd is not taken
  // over: the core keeps its own dup). Registered with EPOLLEXCLUSIVE, so one new connection
  // wakes one waiting worker instead of all of them.
  static std::unique_ptr<Listener> attach(WorkerCore& core, const ListenerOptions& options, int sharedFd,
                                          SysError& err);
  ~Listener();

  void onEvents(uint32_t events) override;

  int fd() const { return fd_.get(); }
  const ListenerOptions& options() const { return options_; }
  const SocketAddress& boundAddress() const { return bound_; }

  // Leaves the epoll and closes this worker's dup; the socket itself stays open in the process.
  // The object stays valid (an event of the current batch may still name it) and ignores events.
  void detach();

  // Out of fds, or this worker's share of connections is full: stop asking epoll for accepts
  // until the next housekeeping tick.
  void pause();
  void resumeIfPaused();
  bool paused() const { return paused_; }

 private:
  Listener(WorkerCore& core, ListenerOptions options, UniqueFd fd, SocketAddress bound)
      : core_(core), options_(std::move(options)), fd_(std::move(fd)), bound_(bound) {}
  SysError watch();
  void unwatch();

  WorkerCore& core_;
  ListenerOptions options_;
  UniqueFd fd_;  // this worker's dup of the process's listening socket
  SocketAddress bound_;
  bool paused_ = false;
  bool watched_ = false;
};

}  // namespace splicegate
