// Benchmark prototype, NOT product code (see proto_relay_common.h for why it exists): a minimal
// transparent copy relay on epoll, one thread. It is the control for proto_relay_uring.cc (same
// relay, io_uring instead of epoll + syscalls) and a floor for splicegate's own copy path
// (what splicegate's code costs over a relay that does nothing else).
//
//   proto_relay_epoll LISTEN_ADDR:PORT
//
// Edge-triggered epoll, every socket registered once for IN|OUT|RDHUP: readiness is kept in flags
// and consumed by recv/send, so no epoll_ctl(MOD) is ever needed (level-triggered would need one
// each time a buffer fills or drains to stop the other event from firing in a loop). A short
// recv proves the socket drained (stream sockets return less than asked only when empty), so no
// EAGAIN read follows it, as in splicegate's relay; after RDHUP it reads on to EOF, since no
// further edge would report a FIN already queued behind the data. The listener is level-triggered
// (accept4 until EAGAIN, at most 64 per event).
//
// Per direction one 16 KiB buffer: recv, send it all (a short send waits for EPOLLOUT), recv
// again. EOF from a side -> shutdown(SHUT_WR) of the other once the buffer is flushed; when both
// directions have passed EOF on, close both (the second FIN by close, as splicegate does). Any
// error -> both sides reset (SO_LINGER 0, close). A connection closed during an event batch is
// freed only after the batch (a later event of the same batch may still name it).

#include <sys/epoll.h>

#include <vector>

#include "proto_relay_common.h"

namespace {

using proto::Fd;
using proto::kBufferBytes;

using proto::Direction;
using proto::Step;

struct Conn {
  Fd fd[2];  // 0: client, 1: upstream
  bool readable[2] = {false, false};
  bool writable[2] = {false, false};
  bool rdhup[2] = {false, false};
  bool connecting = true;
  bool dead = false;
  Direction dir[2];  // 0: client -> upstream, 1: upstream -> client
};


class Relay {
 public:
  explicit Relay(const sockaddr_in& addr) : listenPortBe_(addr.sin_port), listener_(proto::listenOn(addr, true)) {
    ep_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep_.valid()) proto::die("epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;  // 0 = the listener
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, listener_.get(), &ev) != 0) proto::die("epoll_ctl listener");
  }

  [[noreturn]] void run() {
    epoll_event events[256];
    for (;;) {
      int n = ::epoll_wait(ep_.get(), events, 256, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        proto::die("epoll_wait");
      }
      for (int i = 0; i < n; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == 0) {
          acceptSome();
          continue;
        }
        auto* c = reinterpret_cast<Conn*>(tag & ~uint64_t{1});
        if (c->dead) continue;
        onEvent(c, static_cast<int>(tag & 1), events[i].events);
      }
      for (Conn* c : graveyard_) delete c;
      graveyard_.clear();
    }
  }

 private:
  void acceptSome() {
    for (int i = 0; i < 64; i++) {
      Fd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!client.valid()) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // EAGAIN, or EMFILE & co: the next event retries
      }
      start(std::move(client));
    }
  }

  void start(Fd client) {
    sockaddr_in dst{};
    if (!proto::originalDst(client.get(), listenPortBe_, &dst)) {
      proto::lingerZero(client.get());
      return;  // client's destructor closes it: reset
    }
    Fd up = proto::upstreamSocket(true);
    if (!up.valid()) {
      proto::lingerZero(client.get());
      return;
    }
    int rc = ::connect(up.get(), reinterpret_cast<const sockaddr*>(&dst), sizeof dst);
    if (rc != 0 && errno != EINPROGRESS) {
      proto::lingerZero(client.get());
      return;
    }
    auto* c = new Conn;
    c->fd[0] = std::move(client);
    c->fd[1] = std::move(up);
    c->connecting = rc != 0;
    for (int side = 0; side < 2; side++) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.u64 = reinterpret_cast<uint64_t>(c) | static_cast<uint64_t>(side);
      if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, c->fd[side].get(), &ev) != 0) {
        reset(c);
        return;
      }
    }
  }

  void onEvent(Conn* c, int side, uint32_t ev) {
    if (side == 1 && c->connecting) {
      if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(c->fd[1].get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        reset(c);
        return;
      }
      c->connecting = false;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->readable[side] = true;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->rdhup[side] = true;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->writable[side] = true;
    for (int d = 0; d < 2; d++) {
      Step s = proto::pump(c, d);
      if (s == Step::kError) {
        reset(c);
        return;
      }
      if (s == Step::kDone) {
        finish(c);
        return;
      }
    }
  }

  /** Both streams complete: close sends the FINs (both sockets were read to EOF). */
  void finish(Conn* c) {
    c->fd[0].reset();
    c->fd[1].reset();
    bury(c);
  }

  void reset(Conn* c) {
    for (Fd& fd : c->fd) {
      if (fd.valid()) proto::lingerZero(fd.get());
      fd.reset();
    }
    bury(c);
  }

  void bury(Conn* c) {
    c->dead = true;
    graveyard_.push_back(c);
  }

  uint16_t listenPortBe_;
  Fd listener_;
  Fd ep_;
  std::vector<Conn*> graveyard_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s LISTEN_ADDR:PORT\n", argv[0]);
    return 2;
  }
  sockaddr_in addr = proto::parseAddress(argv[1]);
  Relay relay(addr);
  proto::announceReady(addr, "epoll");
  relay.run();
}
