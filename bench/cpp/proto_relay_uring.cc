// Benchmark prototype, NOT product code (see proto_relay_common.h for why it exists): the relay
// of proto_relay_epoll.cc with io_uring (liburing) as its I/O interface instead of epoll and
// syscalls, one thread. Same buffers, same stream rules (EOF -> SHUT_WR once flushed, both done ->
// close, any error -> both reset), same per-connection syscalls outside the data path
// (getsockopt SO_ORIGINAL_DST, socket, setsockopt TCP_NODELAY).
//
//   proto_relay_uring LISTEN_ADDR:PORT [--setup defer|coop|plain] [--fixed-files] [--link]
//                     [--no-poll-first] [--multishot [--pool-buffers N]]
//
// - accept: one multishot IORING_OP_ACCEPT (re-armed if the kernel ends it);
// - connect: IORING_OP_CONNECT; the client's first recv is posted at the same time and its bytes
//   wait in the buffer until the connection is up;
// - per direction: a recv SQE into the direction's buffer; on its completion a send SQE (a short
//   send is sent again from where it stopped), on the send's completion the next recv;
//   `--link`: the send carries MSG_WAITALL (io_uring retries it until all is sent) and is linked
//   to the next recv, so both go in the same submission (one round trip fewer per message);
// - close as IORING_OP_CLOSE in the next batch; shutdown(SHUT_WR) stays a syscall (the kernel
//   runs IORING_OP_SHUTDOWN on an io-wq worker thread, out of order with the close);
// - reset: SO_LINGER 0, then IORING_OP_ASYNC_CANCEL of whatever is still in flight on the two
//   sockets; they are closed (RST) and the connection freed when its last operation completes;
// - a recv after a short one (the socket was drained, as the epoll relay also concludes) carries
//   IORING_RECVSEND_POLL_FIRST: the kernel waits for data instead of first trying a recv that
//   would fail (--no-poll-first: always try first);
// - one io_uring_submit_and_wait(1) per loop iteration, then every CQE that is there.
// --multishot (a different buffer scheme, for comparison): per direction one multishot recv
// (IORING_RECV_MULTISHOT) that picks its buffers from a ring of 1024 x 16 KiB provided buffers
// shared by all connections (IORING_REGISTER_PBUF_RING); the received buffers queue per direction
// and are sent one at a time, in order, each returned to the ring once sent. It never re-posts a
// recv; a direction that ran out of buffers (-ENOBUFS) is re-armed when buffers come back
// (--pool-buffers N: a smaller ring, to exercise that). (--link applies to the single-shot recv
// only.)
// --setup: defer = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (default: completions
// are run only when this thread enters the ring to wait), coop = IORING_SETUP_COOP_TASKRUN,
// plain = no flag. --fixed-files: both sockets of a connection are put in a registered file table
// (slot = fd number, by IORING_OP_FILES_UPDATE in the same batch) and used with IOSQE_FIXED_FILE.
// (Registered buffers do not apply: IORING_OP_RECV/SEND take none; only SEND_ZC and READ/
// WRITE_FIXED do.)
//
// A connection is freed only when it has no operation in flight, so no completion can name
// freed memory.

#include <liburing.h>
#include <sys/resource.h>

#include <algorithm>
#include <deque>
#include <utility>
#include <vector>

#include "proto_relay_common.h"

namespace {

using proto::Fd;
using proto::kBufferBytes;

enum Op : uint64_t { kRecv0 = 0, kRecv1 = 1, kSend0 = 2, kSend1 = 3, kConnect = 4 };
constexpr uint64_t kIgnore = 0;  // user_data of close / cancel / files_update: results unused
constexpr uint64_t kAccept = 1;

struct Direction {
  char buf[kBufferBytes];
  uint32_t start = 0;
  uint32_t end = 0;
  bool eof = false;
  bool passed = false;
  bool reading = false;  // a recv into buf is in flight
  bool drained = false;  // the last recv was short: its socket was empty right after it
  // --multishot: the received buffers (from the shared buffer ring) waiting to be sent, in order.
  struct Chunk {
    uint16_t bid;
    uint32_t len;
    uint32_t off;
  };
  std::deque<Chunk> queue;
  bool sending = false;  // a send of queue.front() is in flight
  bool armed = false;    // the multishot recv is active
  bool starved = false;  // it ended for lack of buffers: re-armed when some come back
};

struct alignas(8) Conn {
  Fd fd[2];  // 0: client, 1: upstream
  sockaddr_in dst{};
  int inflight = 0;
  bool connected = false;
  bool resetting = false;
  Direction dir[2];  // 0: client -> upstream, 1: upstream -> client
};

struct Options {
  unsigned setupFlags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  const char* setupName = "defer";
  bool fixedFiles = false;
  bool link = false;
  bool pollFirst = true;
  bool multishot = false;
  unsigned poolBuffers = 1024;  // --multishot: 1024 x 16 KiB shared by every connection
};


class Relay {
 public:
  Relay(const sockaddr_in& addr, const Options& o) : listenPortBe_(addr.sin_port), listener_(proto::listenOn(addr, false)), opt_(o) {
    io_uring_params p{};
    p.flags = o.setupFlags;
    int rc = io_uring_queue_init_params(4096, &ring_, &p);
    if (rc < 0) {
      errno = -rc;
      proto::die("io_uring_queue_init_params");
    }
    if (opt_.fixedFiles) {
      // Slot = fd number, so the table spans every fd this process may have (RLIMIT_NOFILE).
      rlimit lim{};
      if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) proto::die("getrlimit");
      const unsigned kFileSlots = static_cast<unsigned>(lim.rlim_cur);
      rc = io_uring_register_files_sparse(&ring_, kFileSlots);
      if (rc < 0) {
        errno = -rc;
        proto::die("io_uring_register_files_sparse");
      }
      fdValues_.resize(kFileSlots);
      for (unsigned i = 0; i < kFileSlots; i++) fdValues_[i] = static_cast<int>(i);
    }
    if (opt_.multishot) setUpBufferRing();
    armAccept();
  }

  [[noreturn]] void run() {
    for (;;) {
      int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        errno = -rc;
        proto::die("io_uring_submit_and_wait");
      }
      unsigned head;
      unsigned seen = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        seen++;
        onCompletion(cqe->user_data, cqe->res, cqe->flags);
      }
      io_uring_cq_advance(&ring_, seen);
      if (returned_ && !starved_.empty()) rearmStarved();
      returned_ = false;
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

  /** With --fixed-files the SQE's fd (the fd number) names the table slot. */
  void useFile(io_uring_sqe* s) {
    if (opt_.fixedFiles) s->flags |= IOSQE_FIXED_FILE;  // s->fd is the slot (= the fd number)
  }

  void armAccept() {
    io_uring_sqe* s = sqe();
    io_uring_prep_multishot_accept(s, listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, kAccept);
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
    if (!(flags & IORING_CQE_F_MORE)) c->inflight--;  // a multishot recv goes on while MORE is set
    if (c->resetting) {
      if (flags & IORING_CQE_F_BUFFER) returnBuffer(static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT));
      if (c->inflight == 0) closeAndFree(c);
      return;
    }
    if (opt_.multishot && op != kConnect) return onMultishot(c, op, res, flags);
    switch (op) {
      case kConnect:
        if (res < 0) return reset(c);
        c->connected = true;
        if (opt_.multishot) {
          sendNext(c, 0);
          afterQueue(c, 0);
          return arm(c, 1);
        }
        // The client's first recv has completed while connecting: its bytes (or EOF) wait.
        if (!c->dir[0].reading) afterRecv(c, 0);
        postRecv(c, 1);
        return;
      case kRecv0:
      case kRecv1: {
        int d = op == kRecv0 ? 0 : 1;
        if (res < 0) return reset(c);
        Direction& b = c->dir[d];
        b.reading = false;
        if (res == 0) {
          b.eof = true;
        } else {
          b.start = 0;
          b.end = static_cast<uint32_t>(res);
          b.drained = static_cast<size_t>(res) < kBufferBytes;
        }
        if (d == 0 && !c->connected) return;  // held until the upstream connection is up
        return afterRecv(c, d);
      }
      case kSend0:
      case kSend1: {
        int d = op == kSend0 ? 0 : 1;
        Direction& b = c->dir[d];
        if (res <= 0) return reset(c);
        b.start += static_cast<uint32_t>(res);
        if (opt_.link) {
          // MSG_WAITALL: anything short of all is an error, and the linked recv is cancelled.
          if (b.start != b.end) return reset(c);
          b.start = b.end = 0;
          return;
        }
        if (b.start < b.end) return postSend(c, d, false);
        b.start = b.end = 0;
        return postRecv(c, d);
      }
    }
  }

  void start(Fd client) {
    sockaddr_in dst{};
    if (!proto::originalDst(client.get(), listenPortBe_, &dst)) {
      proto::lingerZero(client.get());
      return;
    }
    Fd up = proto::upstreamSocket(false);
    if (!up.valid()) {
      proto::lingerZero(client.get());
      return;
    }
    auto* c = new Conn;
    c->fd[0] = std::move(client);
    c->fd[1] = std::move(up);
    c->dst = dst;
    c->dir[1].drained = true;  // nothing can come from the upstream before it gets the request
    if (opt_.fixedFiles) {
      for (int side = 0; side < 2; side++) {
        int fd = c->fd[side].get();
        io_uring_sqe* s = sqe();
        // fdValues_[fd] == fd, stable storage the kernel reads at submission.
        io_uring_prep_files_update(s, &fdValues_[static_cast<size_t>(fd)], 1, fd);
        io_uring_sqe_set_data64(s, kIgnore);
      }
    }
    io_uring_sqe* s = sqe();
    io_uring_prep_connect(s, c->fd[1].get(), reinterpret_cast<const sockaddr*>(&c->dst), sizeof c->dst);
    useFile(s);
    tag(s, c, kConnect);
    if (opt_.multishot) return arm(c, 0);
    postRecv(c, 0);
  }

  // ---- --multishot: one multishot recv per direction into the shared buffer ring ----

  void setUpBufferRing() {
    void* mem = nullptr;
    if (posix_memalign(&mem, 4096, opt_.poolBuffers * sizeof(io_uring_buf)) != 0) proto::die("posix_memalign");
    br_ = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(br_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(br_);
    reg.ring_entries = opt_.poolBuffers;
    reg.bgid = 0;
    int rc = io_uring_register_buf_ring(&ring_, &reg, 0);
    if (rc < 0) {
      errno = -rc;
      proto::die("io_uring_register_buf_ring");
    }
    pool_.resize(static_cast<size_t>(opt_.poolBuffers) * kBufferBytes);
    for (unsigned i = 0; i < opt_.poolBuffers; i++) {
      io_uring_buf_ring_add(br_, buffer(static_cast<uint16_t>(i)), kBufferBytes, static_cast<uint16_t>(i), io_uring_buf_ring_mask(opt_.poolBuffers), static_cast<int>(i));
    }
    io_uring_buf_ring_advance(br_, static_cast<int>(opt_.poolBuffers));
  }

  char* buffer(uint16_t bid) { return pool_.data() + static_cast<size_t>(bid) * kBufferBytes; }

  void returnBuffer(uint16_t bid) {
    io_uring_buf_ring_add(br_, buffer(bid), kBufferBytes, bid, io_uring_buf_ring_mask(opt_.poolBuffers), 0);
    io_uring_buf_ring_advance(br_, 1);
    returned_ = true;
  }

  void arm(Conn* c, int d) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv_multishot(s, c->fd[d].get(), nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = 0;
    useFile(s);
    tag(s, c, d == 0 ? kRecv0 : kRecv1);
    c->dir[d].armed = true;
  }

  void rearmStarved() {
    std::vector<std::pair<Conn*, int>> list;
    list.swap(starved_);
    for (auto& [c, d] : list) {
      c->dir[d].starved = false;
      if (!c->resetting && !c->dir[d].armed && !c->dir[d].eof) arm(c, d);
    }
  }

  void onMultishot(Conn* c, Op op, int res, unsigned flags) {
    if (op == kRecv0 || op == kRecv1) {
      int d = op == kRecv0 ? 0 : 1;
      Direction& b = c->dir[d];
      if (!(flags & IORING_CQE_F_MORE)) b.armed = false;
      if (res > 0) {
        b.queue.push_back({static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT), static_cast<uint32_t>(res), 0});
        sendNext(c, d);
        if (!b.armed) arm(c, d);  // the kernel ended it without an error (e.g. CQ overflow)
        return;
      }
      if (res == 0) {
        b.eof = true;
        return afterQueue(c, d);
      }
      if (res == -ENOBUFS) {  // every pooled buffer is queued somewhere: wait for returns
        b.starved = true;
        starved_.emplace_back(c, d);
        return;
      }
      return reset(c);
    }
    int d = op == kSend0 ? 0 : 1;
    Direction& b = c->dir[d];
    b.sending = false;
    if (res <= 0) return reset(c);
    Direction::Chunk& ch = b.queue.front();
    ch.off += static_cast<uint32_t>(res);
    if (ch.off == ch.len) {
      returnBuffer(ch.bid);
      b.queue.pop_front();
    }
    sendNext(c, d);
    afterQueue(c, d);
  }

  /** Sends the oldest queued buffer of direction `d`, unless a send is in flight. */
  void sendNext(Conn* c, int d) {
    Direction& b = c->dir[d];
    if (b.sending || b.queue.empty() || (d == 0 && !c->connected)) return;
    const Direction::Chunk& ch = b.queue.front();
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, c->fd[1 - d].get(), buffer(ch.bid) + ch.off, ch.len - ch.off, MSG_NOSIGNAL);
    useFile(s);
    tag(s, c, d == 0 ? kSend0 : kSend1);
    b.sending = true;
  }

  /** Direction `d` after its queue moved: pass EOF on once everything before it was sent. */
  void afterQueue(Conn* c, int d) {
    Direction& b = c->dir[d];
    if (!b.eof || b.passed || b.sending || !b.queue.empty() || (d == 0 && !c->connected)) return;
    if (c->dir[1 - d].passed) {
      if (c->inflight == 0) return closeAndFree(c);
      return reset(c);  // cannot happen: nothing else is in flight once both sides sent EOF
    }
    if (::shutdown(c->fd[1 - d].get(), SHUT_WR) != 0) return reset(c);
    b.passed = true;
  }

  void tag(io_uring_sqe* s, Conn* c, Op op) {
    io_uring_sqe_set_data64(s, reinterpret_cast<uint64_t>(c) | op);
    c->inflight++;
  }

  void postRecv(Conn* c, int d) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv(s, c->fd[d].get(), c->dir[d].buf, kBufferBytes, 0);
    // A short recv proves the socket drained (as in the epoll relay): wait for data instead of
    // trying a recv that would fail.
    if (opt_.pollFirst && c->dir[d].drained) s->ioprio |= IORING_RECVSEND_POLL_FIRST;
    c->dir[d].reading = true;
    useFile(s);
    tag(s, c, d == 0 ? kRecv0 : kRecv1);
  }

  /** Sends what direction `d` holds; `linkRecv`: the next recv goes with it, linked. */
  void postSend(Conn* c, int d, bool linkRecv) {
    Direction& b = c->dir[d];
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, c->fd[1 - d].get(), b.buf + b.start, b.end - b.start, MSG_NOSIGNAL | (linkRecv ? MSG_WAITALL : 0));
    useFile(s);
    if (linkRecv) s->flags |= IOSQE_IO_LINK;
    tag(s, c, d == 0 ? kSend0 : kSend1);
    if (linkRecv) postRecv(c, d);
  }

  /** Direction `d` holds what its last recv returned (bytes, or EOF): pass it on. */
  void afterRecv(Conn* c, int d) {
    Direction& b = c->dir[d];
    if (b.start < b.end) return postSend(c, d, opt_.link);
    if (!b.eof || b.passed) return;
    // Both directions at EOF: close both, which sends this FIN (both sockets were read to EOF).
    if (c->dir[1 - d].passed) {
      if (c->inflight == 0) return closeAndFree(c);
      return reset(c);  // cannot happen: nothing else is in flight once both sides sent EOF
    }
    // shutdown(2), not IORING_OP_SHUTDOWN: the kernel always punts that op to an io-wq worker
    // thread (it never runs inline), where it could run after this fd's IORING_OP_CLOSE and hit a
    // socket that reused the number (seen as truncated responses in the first lab run).
    if (::shutdown(c->fd[1 - d].get(), SHUT_WR) != 0) return reset(c);
    b.passed = true;
  }

  void reset(Conn* c) {
    c->resetting = true;
    for (Fd& fd : c->fd) {
      proto::lingerZero(fd.get());
      if (c->inflight > 0) {
        io_uring_sqe* s = sqe();
        io_uring_prep_cancel_fd(s, fd.get(), IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(s, kIgnore);
      }
    }
    if (c->inflight == 0) closeAndFree(c);
  }

  /** Nothing is in flight on `c`: close both sockets in the ring's next batch and free it. */
  void closeAndFree(Conn* c) {
    for (Direction& b : c->dir) {
      for (const Direction::Chunk& ch : b.queue) returnBuffer(ch.bid);
    }
    // A starved direction must not be re-armed after this: forget `c` there.
    starved_.erase(std::remove_if(starved_.begin(), starved_.end(), [c](const std::pair<Conn*, int>& e) { return e.first == c; }), starved_.end());
    for (Fd& fd : c->fd) {
      int n = fd.release();
      if (opt_.fixedFiles) {
        io_uring_sqe* u = sqe();
        io_uring_prep_files_update(u, &kNoFile, 1, n);  // drop the table's reference first
        io_uring_sqe_set_data64(u, kIgnore);
      }
      io_uring_sqe* s = sqe();
      io_uring_prep_close(s, n);
      io_uring_sqe_set_data64(s, kIgnore);
    }
    delete c;
  }

  static int kNoFile;
  uint16_t listenPortBe_;
  Fd listener_;
  Options opt_;
  io_uring ring_{};
  std::vector<int> fdValues_;
  // --multishot
  io_uring_buf_ring* br_ = nullptr;
  std::vector<char> pool_;
  bool returned_ = false;
  std::vector<std::pair<Conn*, int>> starved_;
};

int Relay::kNoFile = -1;

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s LISTEN_ADDR:PORT [--setup defer|coop|plain] [--fixed-files] [--link] [--no-poll-first] [--multishot [--pool-buffers N]]\n", argv[0]);
    return 2;
  }
  Options o;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--fixed-files") {
      o.fixedFiles = true;
    } else if (a == "--multishot") {
      o.multishot = true;
    } else if (a == "--pool-buffers" && i + 1 < argc) {
      // A power of two; small values exercise the -ENOBUFS path.
      o.poolBuffers = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
      if (o.poolBuffers == 0 || (o.poolBuffers & (o.poolBuffers - 1)) != 0 || o.poolBuffers > 32768) {
        std::fprintf(stderr, "--pool-buffers: a power of two up to 32768\n");
        return 2;
      }
    } else if (a == "--no-poll-first") {
      o.pollFirst = false;
    } else if (a == "--link") {
      o.link = true;
    } else if (a == "--setup" && i + 1 < argc) {
      std::string v = argv[++i];
      if (v == "defer") {
        o.setupFlags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
      } else if (v == "coop") {
        o.setupFlags = IORING_SETUP_COOP_TASKRUN;
      } else if (v == "plain") {
        o.setupFlags = 0;
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
  std::string how = std::string("io_uring setup=") + o.setupName + (o.fixedFiles ? " fixed-files" : "") + (o.link ? " link" : "") + (o.pollFirst ? "" : " no-poll-first") + (o.multishot ? " multishot" : "");
  proto::announceReady(addr, how.c_str());
  relay.run();
}
