// Benchmark prototype, NOT product code (see proto_relay_common.h for why it exists): the relay
// of proto_relay_epoll.cc with connection setup and teardown batched through an io_uring whose
// completions are announced in the epoll set, one thread (issue 12 §3, attempt 9 in
// bench/results/attempts.md). Established streams are exactly proto-epoll's: edge-triggered epoll,
// every socket registered once for IN|OUT|RDHUP, one 16 KiB buffer per direction, recv/send, a
// short recv taken as proof the socket drained, EOF -> shutdown(SHUT_WR) once flushed, both done ->
// close, any error -> both reset (SO_LINGER 0, close).
//
//   proto_relay_hybrid LISTEN_ADDR:PORT [--setup defer|coop|plain] [--ring-ctl] [--ring-socket]
//                      [--defer-ring-fd]
//
// What goes through the ring instead of syscalls:
// - accept: one multishot IORING_OP_ACCEPT on the listener (re-armed if the kernel ends it): no
//   accept4 per connection, no accept4 that fails with EAGAIN;
// - connect: IORING_OP_CONNECT (the upstream socket is a socket() syscall; --ring-socket: made by
//   IORING_OP_SOCKET instead, its connect queued when that completes): no EINPROGRESS connect, no
//   EPOLLOUT wakeup and no getsockopt(SO_ERROR) to learn the outcome;
// - close: IORING_OP_CLOSE, both sockets of a finished or reset connection in the next batch.
// When the connect completes, the client's bytes (there by then, in practice) are read and sent
// at once, then both sockets enter the epoll set with EPOLL_CTL_ADD (a syscall each; --ring-ctl:
// IORING_OP_EPOLL_CTL in the ring's next submission instead). Reading before the ADD means the ADD
// reports only what arrives after that read, so the first request costs no extra epoll round.
//
// How the loop learns of completions (--setup):
// - plain (no setup flag, the default) and coop (IORING_SETUP_COOP_TASKRUN): the ring fd itself
//   sits in the epoll set (level-triggered). Completions that need task work (accept, connect)
//   are run by the kernel on this thread's way back to user space (task work signalled to the
//   thread interrupts its epoll_wait; coop only spares a thread that is running the IPI), then the
//   posted completions make the ring fd readable.
// - defer (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN): task work runs only inside
//   io_uring_enter(GETEVENTS), and the ring fd becomes readable only once it has run, so the ring
//   fd alone never wakes epoll_wait; an eventfd registered with the ring (edge-triggered in the
//   epoll set, never read: each signal is an edge) says "work is pending", and the loop then
//   enters the ring with GETEVENTS.
// Submissions are flushed once per epoll batch, after the batch's events are dispatched (plus
// one more round when reaping completions queued new submissions, e.g. the connects of accepted
// connections).
//
// A connection is freed only after the completions of both its closes: by then the kernel has
// released the sockets and with them their epoll registrations, and every epoll event of the
// batch that might name it has been dispatched (a dead connection ignores events).

#include <liburing.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <string>
#include <vector>

#include "proto_relay_common.h"

namespace {

using proto::Fd;
using proto::kBufferBytes;

using proto::Direction;
using proto::Step;

struct alignas(8) Conn {
  Fd fd[2];  // 0: client, 1: upstream
  sockaddr_in dst{};
  epoll_event ev[2]{};  // --ring-ctl: the kernel reads these when it takes the SQE
  bool readable[2] = {false, false};
  bool writable[2] = {false, false};
  bool rdhup[2] = {false, false};
  bool dead = false;
  int inflight = 0;  // ring operations naming this connection (connect, socket, epoll_ctl, close)
  Direction dir[2];  // 0: client -> upstream, 1: upstream -> client
};


// Ring user_data: a Conn pointer | op, or one of the constants below (pointer part 0).
enum Op : uint64_t { kConnect = 1, kClose = 2, kCtl = 3, kSocket = 4 };
constexpr uint64_t kIgnore = 0;  // close of an unrelayed client: result unused
constexpr uint64_t kAccept = 1;
// epoll data: a Conn pointer | side, or this (the ring fd or its eventfd).
constexpr uint64_t kRingTag = 0;

enum class Setup { kPlain, kCoop, kDefer };

struct Options {
  Setup setup = Setup::kPlain;
  const char* setupName = "plain";
  bool ringCtl = false;
  bool ringSocket = false;
  bool deferRingFd = false;  // defer with the ring fd in the epoll set instead of the eventfd
};

class Relay {
 public:
  Relay(const sockaddr_in& addr, const Options& o) : listenPortBe_(addr.sin_port), listener_(proto::listenOn(addr, false)), opt_(o) {
    ep_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep_.valid()) proto::die("epoll_create1");
    io_uring_params p{};
    if (o.setup == Setup::kCoop) p.flags = IORING_SETUP_COOP_TASKRUN;
    if (o.setup == Setup::kDefer) p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int rc = io_uring_queue_init_params(4096, &ring_, &p);
    if (rc < 0) {
      errno = -rc;
      proto::die("io_uring_queue_init_params");
    }
    epoll_event ev{};
    ev.data.u64 = kRingTag;
    if (o.setup == Setup::kDefer && !o.deferRingFd) {
      evfd_ = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
      if (!evfd_.valid()) proto::die("eventfd");
      rc = io_uring_register_eventfd(&ring_, evfd_.get());
      if (rc < 0) {
        errno = -rc;
        proto::die("io_uring_register_eventfd");
      }
      ev.events = EPOLLIN | EPOLLET;
      if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, evfd_.get(), &ev) != 0) proto::die("epoll_ctl eventfd");
    } else {
      ev.events = EPOLLIN;
      if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, ring_.ring_fd, &ev) != 0) proto::die("epoll_ctl ring");
    }
    armAccept();
    flushRing(false);
  }

  [[noreturn]] void run() {
    epoll_event events[256];
    for (;;) {
      int n = ::epoll_wait(ep_.get(), events, 256, -1);
      if (n < 0) {
        if (errno == EINTR) continue;  // plain: the ring's task work interrupted the wait
        proto::die("epoll_wait");
      }
      bool ring = false;
      for (int i = 0; i < n; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == kRingTag) {
          ring = true;
          continue;
        }
        auto* c = reinterpret_cast<Conn*>(tag & ~uint64_t{1});
        if (c->dead) continue;
        onEvent(c, static_cast<int>(tag & 1), events[i].events);
      }
      flushRing(ring);
    }
  }

 private:
  io_uring_sqe* sqe() {
    for (;;) {
      io_uring_sqe* s = io_uring_get_sqe(&ring_);
      if (s) return s;
      io_uring_submit(&ring_);  // the SQ is full: hand it to the kernel and take a fresh entry
    }
  }

  /**
   * Once per epoll batch: submit what the batch queued (closes, epoll_ctls), run pending task
   * work if the ring said so (defer), reap every completion; again while reaping queued more.
   */
  void flushRing(bool signalled) {
    for (;;) {
      bool pending = io_uring_sq_ready(&ring_) > 0;
      if (pending || (signalled && opt_.setup == Setup::kDefer)) {
        // defer: GETEVENTS runs the task work (completions of accept, connect) and posts them.
        int rc = opt_.setup == Setup::kDefer ? io_uring_submit_and_get_events(&ring_) : io_uring_submit(&ring_);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
          errno = -rc;
          proto::die("io_uring_submit");
        }
      }
      signalled = false;
      unsigned head;
      unsigned seen = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        seen++;
        onCompletion(cqe->user_data, cqe->res, cqe->flags);
      }
      io_uring_cq_advance(&ring_, seen);
      if (io_uring_sq_ready(&ring_) == 0) return;
    }
  }

  void armAccept() {
    io_uring_sqe* s = sqe();
    io_uring_prep_multishot_accept(s, listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, kAccept);
  }

  void tag(io_uring_sqe* s, Conn* c, Op op) {
    io_uring_sqe_set_data64(s, reinterpret_cast<uint64_t>(c) | op);
    c->inflight++;
  }

  void onCompletion(uint64_t ud, int res, unsigned flags) {
    if (ud == kIgnore) return;
    if (ud == kAccept) {
      if (!(flags & IORING_CQE_F_MORE)) armAccept();
      if (res >= 0) start(Fd(res));
      return;
    }
    auto* c = reinterpret_cast<Conn*>(ud & ~uint64_t{7});
    auto op = static_cast<Op>(ud & 7);
    c->inflight--;
    if (c->dead) {
      // Only closes (and completions of operations queued before the end) arrive now.
      if (c->inflight == 0) delete c;
      return;
    }
    switch (op) {
      case kSocket:
        if (res < 0) return reset(c);
        c->fd[1] = Fd(res);
        proto::setInt(res, IPPROTO_TCP, TCP_NODELAY, 1);
        return connect(c);
      case kConnect:
        if (res < 0) return reset(c);
        return connected(c);
      case kCtl:
        if (res < 0) return reset(c);
        return;
      case kClose:
        return;
    }
  }

  void start(Fd client) {
    sockaddr_in dst{};
    if (!proto::originalDst(client.get(), listenPortBe_, &dst)) return dropClient(std::move(client));
    auto* c = new Conn;
    c->fd[0] = std::move(client);
    c->dst = dst;
    if (opt_.ringSocket) {
      io_uring_sqe* s = sqe();
      io_uring_prep_socket(s, AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, 0);
      return tag(s, c, kSocket);
    }
    c->fd[1] = proto::upstreamSocket(true);
    if (!c->fd[1].valid()) return reset(c);
    connect(c);
  }

  void connect(Conn* c) {
    io_uring_sqe* s = sqe();
    io_uring_prep_connect(s, c->fd[1].get(), reinterpret_cast<const sockaddr*>(&c->dst), sizeof c->dst);
    tag(s, c, kConnect);
  }

  /** Not relayed (no original destination, or one that loops back here): reset it. */
  void dropClient(Fd client) {
    proto::lingerZero(client.get());
    io_uring_sqe* s = sqe();
    io_uring_prep_close(s, client.release());
    io_uring_sqe_set_data64(s, kIgnore);
  }

  /** The upstream connection is up: relay what the client sent so far, then register both. */
  void connected(Conn* c) {
    c->writable[1] = true;
    c->readable[0] = true;  // the client spoke first, in practice; if not, the recv says EAGAIN
    if (!pumpBoth(c)) return;
    for (int side = 0; side < 2; side++) {
      epoll_event& ev = c->ev[side];
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.u64 = reinterpret_cast<uint64_t>(c) | static_cast<uint64_t>(side);
      if (opt_.ringCtl) {
        io_uring_sqe* s = sqe();
        io_uring_prep_epoll_ctl(s, ep_.get(), c->fd[side].get(), EPOLL_CTL_ADD, &ev);
        tag(s, c, kCtl);
      } else if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, c->fd[side].get(), &ev) != 0) {
        return reset(c);
      }
    }
  }

  void onEvent(Conn* c, int side, uint32_t ev) {
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->readable[side] = true;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->rdhup[side] = true;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->writable[side] = true;
    pumpBoth(c);
  }

  /** false: the connection ended (finished or reset). */
  bool pumpBoth(Conn* c) {
    for (int d = 0; d < 2; d++) {
      Step s = proto::pump(c, d);
      if (s == Step::kError) {
        reset(c);
        return false;
      }
      if (s == Step::kDone) {
        closeBoth(c);
        return false;
      }
    }
    return true;
  }

  void reset(Conn* c) {
    for (Fd& fd : c->fd) {
      if (fd.valid()) proto::lingerZero(fd.get());
    }
    closeBoth(c);
  }

  /**
   * Both sockets closed by IORING_OP_CLOSE in this batch's submission (a complete stream: the
   * close sends the FINs; after reset(): RSTs). Freed when the last operation naming it completes.
   */
  void closeBoth(Conn* c) {
    c->dead = true;
    for (Fd& fd : c->fd) {
      if (!fd.valid()) continue;
      io_uring_sqe* s = sqe();
      io_uring_prep_close(s, fd.release());
      tag(s, c, kClose);
    }
    if (c->inflight == 0) delete c;  // cannot happen here: reached only from a completion or event
  }

  uint16_t listenPortBe_;
  Fd listener_;
  Options opt_;
  Fd ep_;
  Fd evfd_;
  io_uring ring_{};
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s LISTEN_ADDR:PORT [--setup defer|coop|plain] [--ring-ctl] [--ring-socket] [--defer-ring-fd]\n", argv[0]);
    return 2;
  }
  Options o;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--ring-ctl") {
      o.ringCtl = true;
    } else if (a == "--defer-ring-fd") {
      o.deferRingFd = true;  // an experiment: shows that the ring fd alone does not wake epoll
    } else if (a == "--ring-socket") {
      o.ringSocket = true;
    } else if (a == "--setup" && i + 1 < argc) {
      std::string v = argv[++i];
      if (v == "defer") {
        o.setup = Setup::kDefer;
      } else if (v == "coop") {
        o.setup = Setup::kCoop;
      } else if (v == "plain") {
        o.setup = Setup::kPlain;
      } else {
        std::fprintf(stderr, "--setup: defer, coop or plain\n");
        return 2;
      }
      o.setupName = argv[i];
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  sockaddr_in addr = proto::parseAddress(argv[1]);
  Relay relay(addr, o);
  std::string how = std::string("hybrid epoll+io_uring setup=") + o.setupName + (o.ringCtl ? " ring-ctl" : "") + (o.ringSocket ? " ring-socket" : "") + (o.deferRingFd ? " defer-ring-fd" : "");
  proto::announceReady(addr, how.c_str());
  relay.run();
}
