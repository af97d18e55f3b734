// Unit tests for the Node-free core. The original-destination syscalls go through fakes; the relay
// runs on real loopback sockets with a LoopThread, the way the addon drives it. Plain asserts and a
// closing "N passed, N failed" line; ctest runs the binary.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "loopback.h"
#include "test_harness.h"
#include "../core/loop_thread.h"
#include "../core/host_cache.h"
#include "../core/shared_host_counts.h"
#include "../core/original_dst.h"
#include "../core/pipe_pool.h"
#include "../core/policy_set.h"
#include "../core/worker_events.h"
#include "../core/socket_address.h"
#include "../core/socket_options.h"
#include "../core/worker_core.h"

using namespace splicegate;

// Fault seam for epoll registration: the core is linked statically into this binary, so this
// definition takes the place of libc's for it. While failEpollAdds > 0, EPOLL_CTL_ADD fails with
// ENOSPC (what max_user_watches gives); everything else goes to the real call.
static std::atomic<int> failEpollAdds{0};
extern "C" int epoll_ctl(int epfd, int op, int fd, struct epoll_event* event) {
  using EpollCtl = int (*)(int, int, int, struct epoll_event*);
  static const EpollCtl real = reinterpret_cast<EpollCtl>(::dlsym(RTLD_NEXT, "epoll_ctl"));
  if (op == EPOLL_CTL_ADD) {
    int left = failEpollAdds.load();
    while (left > 0) {
      if (failEpollAdds.compare_exchange_weak(left, left - 1)) {
        errno = ENOSPC;
        return -1;
      }
    }
  }
  return real(epfd, op, fd, event);
}

namespace {

using namespace splicegate::testing;


// Sanitizer builds (scripts/test.sh) run several times slower; the bulk tests take the same relay
// paths (pipes, copy buffers, budget yields) with a quarter of the bytes there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kBulkDivisor = 4;
#else
constexpr size_t kBulkDivisor = 1;
#endif

// --- original destination, with fakes -------------------------------------------------------

struct FakeOps : OriginalDstOps {
  SyscallResult originalRc{0, 0};
  SocketAddress original;
  SocketAddress local;
  std::vector<std::string> localIps;
  int isLocalCalls = 0;
  SyscallResult originalDst(int, int, SocketAddress& out) override {
    out = original;
    return originalRc;
  }
  SyscallResult localAddress(int, SocketAddress& out) override {
    out = local;
    return {0, 0};
  }
  LocalIp isLocalIp(const SocketAddress& ip) override {
    ++isLocalCalls;
    for (auto& l : localIps) {
      if (ip.ipString() == l) return LocalIp::kYes;
    }
    return LocalIp::kNo;
  }
};

void originalDstTests() {
  run("redirected connection resolves to its original destination", [] {
    FakeOps ops;
    ops.original = addr("10.0.0.7", 443);
    ops.local = addr("10.0.1.1", 15001);
    OriginalDstResolver r(ops);
    r.setListenerAddresses({addr("0.0.0.0", 15001)});
    auto res = r.resolve(3, AF_INET, false);
    CHECK(res.outcome == OriginalDstOutcome::kFound);
    CHECK(res.address == addr("10.0.0.7", 443));
    CHECK(ops.isLocalCalls == 0);  // port differs from every listener: no probe needed
  });
  run("no conntrack entry is 'not redirected', not an error", [] {
    FakeOps ops;
    ops.originalRc = {-1, ENOENT};
    OriginalDstResolver r(ops);
    auto res = r.resolve(3, AF_INET, false);
    CHECK(res.outcome == OriginalDstOutcome::kNotRedirected);
    CHECK(res.err == ENOENT);
  });
  run("direct dial of the listener is 'not redirected'", [] {
    FakeOps ops;
    ops.original = ops.local = addr("10.0.1.1", 15001);
    ops.localIps = {"10.0.1.1"};
    OriginalDstResolver r(ops);
    r.setListenerAddresses({addr("0.0.0.0", 15001)});
    CHECK(r.resolve(3, AF_INET, false).outcome == OriginalDstOutcome::kNotRedirected);
  });
  run("redirect to another of our addresses on the listener port is a loop", [] {
    FakeOps ops;
    ops.original = addr("10.0.2.1", 15001);
    ops.local = addr("10.0.1.1", 15001);
    ops.localIps = {"10.0.1.1", "10.0.2.1"};
    OriginalDstResolver r(ops);
    r.setListenerAddresses({addr("0.0.0.0", 15001)});
    CHECK(r.resolve(3, AF_INET, false).outcome == OriginalDstOutcome::kLoop);
  });
  run("same port on a remote address is relayed", [] {
    FakeOps ops;
    ops.original = addr("10.0.9.9", 15001);
    ops.local = addr("10.0.1.1", 15001);
    ops.localIps = {"10.0.1.1"};
    OriginalDstResolver r(ops);
    r.setListenerAddresses({addr("0.0.0.0", 15001)});
    CHECK(r.resolve(3, AF_INET, false).outcome == OriginalDstOutcome::kFound);
  });
  run("specific-address listener matches only its own address", [] {
    FakeOps ops;
    ops.original = addr("127.0.0.1", 15001);
    ops.local = addr("127.0.0.2", 15001);
    OriginalDstResolver r(ops);
    r.setListenerAddresses({addr("127.0.0.1", 15001)});
    CHECK(r.resolve(3, AF_INET, false).outcome == OriginalDstOutcome::kLoop);
    ops.original = addr("127.0.0.3", 15001);
    CHECK(r.resolve(3, AF_INET, false).outcome == OriginalDstOutcome::kFound);
  });
  run("the peer from accept4 serves the own-socket loop check: no getpeername", [] {
    struct PeerCountingOps : FakeOps {
      int peerCalls = 0;
      SyscallResult peerAddress(int, SocketAddress& out) override {
        ++peerCalls;
        out = addr("10.0.5.5", 1);
        return {0, 0};
      }
    } ops;
    ops.original = addr("10.0.9.9", 80);
    ops.local = addr("10.0.1.1", 15001);
    OwnSockets reg;
    OriginalDstResolver r(ops, reg);
    r.setListenerAddresses({addr("0.0.0.0", 15001)});
    auto own = reg.add({addr("10.0.0.1", 40000), addr("10.0.9.9", 80)});
    const SocketAddress ourUpstream = addr("10.0.0.1", 40000);
    const SocketAddress someClient = addr("10.0.0.2", 40000);
    CHECK(r.resolve(3, AF_INET, false, &ourUpstream).outcome == OriginalDstOutcome::kLoop);
    CHECK(r.resolve(3, AF_INET, false, &someClient).outcome == OriginalDstOutcome::kFound);
    CHECK(ops.peerCalls == 0);
    // Without a known peer the socket is asked (here it names neither).
    CHECK(r.resolve(3, AF_INET, false).outcome == OriginalDstOutcome::kFound);
    CHECK(ops.peerCalls == 1);
  });
  run("transparent listener uses the local address", [] {
    FakeOps ops;
    ops.originalRc = {-1, ENOENT};  // must not be consulted
    ops.local = addr("10.0.0.8", 80);
    OriginalDstResolver r(ops);
    r.setListenerAddresses({addr("0.0.0.0", 15002)});
    auto res = r.resolve(3, AF_INET, true);
    CHECK(res.outcome == OriginalDstOutcome::kFound);
    CHECK(res.address == addr("10.0.0.8", 80));
  });
  run("IPv6 addresses format with brackets and compare by value", [] {
    auto a = addr("fd00::1", 80);
    CHECK(a.toString() == "[fd00::1]:80");
    CHECK(a == addr("fd00:0::1", 80));
    CHECK(!(a == addr("fd00::1", 81)));
    CHECK(a.hash() == addr("fd00::1", 80).hash());
    CHECK(!SocketAddress::fromIp("not-an-ip", 1).has_value());
  });
}

// --- pipe pool ----------------------------------------------------------------------------------

void pipePoolTests() {
  run("pipe pool is bounded and reuses only empty pipes", [] {
    PipePool pool(2, 1, 0);
    auto a = pool.acquire();
    auto b = pool.acquire();
    CHECK(a && b);
    CHECK(!pool.acquire());  // bound reached: caller falls back to copying
    const int aRead = a->readEnd.get();
    pool.release(std::move(a));
    CHECK(pool.idle() == 1);
    b->bytes = 10;  // still holds data: destroyed, not pooled
    pool.release(std::move(b));
    CHECK(pool.idle() == 1);
    CHECK(pool.inUse() == 0);
    auto c = pool.acquire();
    CHECK(c && c->readEnd.get() == aRead);
  });
  run("pipe pool: available() counts the place a destroyed pipe left, but not while creating fails", [] {
    PipePool pool(2, 1, 0);
    CHECK(pool.available() == 2);  // none created yet: both may be
    auto a = pool.acquire();
    auto b = pool.acquire();
    CHECK(pool.available() == 0);
    b->bytes = 10;  // its stream was reset with bytes in it: destroyed, not pooled
    pool.release(std::move(b));
    CHECK(pool.idle() == 0 && pool.available() == 1);  // a new pipe may take its place
    {
      const int lowest = ::dup(0);
      ::close(lowest);
      NofileLimit limit(static_cast<rlim_t>(lowest));  // pipe2 fails with EMFILE
      CHECK(!pool.acquire());
      CHECK(pool.available() == 0);  // a waiter woken for it would only fail again
    }
    pool.release(std::move(a));  // pooled: it counts, creating still does not
    CHECK(pool.idle() == 1 && pool.available() == 1);
    auto c = pool.acquire();
    auto d = pool.acquire();  // created: fds are back, and so is the count
    CHECK(c && d && pool.available() == 0);
  });
}

// --- event loop ---------------------------------------------------------------------------------

void eventLoopTests() {
  run("a tracked handler says whether its event is still waiting in the batch being dispatched", [] {
    SysError err;
    std::unique_ptr<EventLoop> loop = EventLoop::create(err);
    CHECK(loop);
    // Each handler records, when its event comes, what the other one's eventPending() says then.
    struct Probe final : TrackedEventHandler {
      const Probe* other = nullptr;
      int calls = 0;
      bool otherPending = false;
      bool selfPending = true;
      void onEvents(uint32_t) override {
        ++calls;
        otherPending = other->eventPending();
        selfPending = eventPending();
      }
    };
    Probe a, b;
    a.other = &b;
    b.other = &a;
    int pa[2], pb[2];
    CHECK(::pipe2(pa, O_NONBLOCK | O_CLOEXEC) == 0 && ::pipe2(pb, O_NONBLOCK | O_CLOEXEC) == 0);
    UniqueFd aRead(pa[0]), aWrite(pa[1]), bRead(pb[0]), bWrite(pb[1]);
    CHECK(!loop->addTracked(aRead.get(), EPOLLIN | EPOLLET, &a));
    CHECK(!loop->addTracked(bRead.get(), EPOLLIN | EPOLLET, &b));
    CHECK(::write(aWrite.get(), "x", 1) == 1 && ::write(bWrite.get(), "y", 1) == 1);
    CHECK(!a.eventPending() && !b.eventPending());  // only a batch marks them
    CHECK_EQ(loop->waitAndDispatch(1000), 2);
    CHECK(a.calls == 1 && b.calls == 1);
    CHECK(!a.selfPending && !b.selfPending);  // its own event is being handled: no longer waiting
    // Whichever came first saw the other's event still waiting; the second saw it handled.
    CHECK(a.otherPending != b.otherPending);
    CHECK(!a.eventPending() && !b.eventPending());
    CHECK_EQ(loop->waitAndDispatch(0), 0);  // edge-triggered, nothing new
  });
}

// --- host cache ---------------------------------------------------------------------------------

void hostCacheTests() {
  run("host is created on first use and removed after cleanup_interval idle", [] {
    HostCache cache(HostLimits{10, 100, 100});
    Host* h = nullptr;
    CHECK(cache.admit(addr("10.0.0.1", 80), 1000, &h) == HostCache::Admit::kOk);
    CHECK(cache.size() == 1 && h->active() == 1 && h->pending() == 1);
    cache.connectDone(*h);
    CHECK(cache.sweep(10'000'000, 5'000'000) == 0);  // active: never swept
    cache.connectionClosed(*h, 2'000'000);
    CHECK(cache.sweep(6'999'999, 5'000'000) == 0);   // idle 4.99 s
    CHECK(cache.sweep(7'000'000, 5'000'000) == 1);   // idle 5 s
    CHECK(cache.size() == 0);
  });
  run("one sweep removes every host idle for cleanup_interval, oldest first, and only those", [] {
    HostCache cache(HostLimits{10, 100, 100});
    Host* h[3] = {};
    for (int i = 0; i < 3; ++i) {
      const std::string ip = "10.0.0." + std::to_string(i + 1);
      CHECK(cache.admit(addr(ip.c_str(), 80), 0, &h[i]) == HostCache::Admit::kOk);
      cache.connectDone(*h[i]);
      cache.connectionClosed(*h[i], (i + 1) * 1'000'000ULL);  // idle since 1 s, 2 s, 3 s
    }
    CHECK(cache.sweep(7'000'000, 5'000'000) == 2);  // idle 6 s and 5 s; the third 4 s
    CHECK(cache.size() == 1);
    CHECK(cache.removedIdle() == 2);  // host_removed_idle
    Host* again = nullptr;
    CHECK(cache.admit(addr("10.0.0.3", 80), 7'000'000, &again) == HostCache::Admit::kOk);
    CHECK(again == h[2]);  // the one kept is the one idle for less than cleanup_interval
  });
  run("full cache evicts the least recently used idle host", [] {
    HostCache cache(HostLimits{2, 100, 100});
    Host* a = nullptr;
    Host* b = nullptr;
    Host* c = nullptr;
    cache.admit(addr("10.0.0.1", 80), 0, &a);
    cache.admit(addr("10.0.0.2", 80), 0, &b);
    cache.connectDone(*a);
    cache.connectDone(*b);
    cache.connectionClosed(*b, 10);  // b idle first
    cache.connectionClosed(*a, 20);
    CHECK(cache.admit(addr("10.0.0.3", 80), 30, &c) == HostCache::Admit::kOk);
    CHECK(cache.evictions() == 1);
    Host* again = nullptr;
    CHECK(cache.admit(addr("10.0.0.1", 80), 40, &again) == HostCache::Admit::kOk);
    CHECK(again == a);  // a survived: b was the older idle one
  });
  run("full cache with no idle host refuses a new destination", [] {
    HostCache cache(HostLimits{1, 100, 100});
    Host* a = nullptr;
    Host* b = nullptr;
    CHECK(cache.admit(addr("10.0.0.1", 80), 0, &a) == HostCache::Admit::kOk);
    CHECK(cache.admit(addr("10.0.0.2", 80), 0, &b) == HostCache::Admit::kHostOverflow);
    CHECK(cache.size() == 1);
  });
  run("per-host max_connections and max_pending overflow", [] {
    HostCache cache(HostLimits{10, 2, 1});
    Host* h = nullptr;
    CHECK(cache.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kOk);
    CHECK(cache.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kPendingOverflow);
    cache.connectDone(*h);
    CHECK(cache.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kOk);
    cache.connectDone(*h);
    CHECK(cache.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kConnectionOverflow);
    CHECK(h->stat(HostStat::cx_overflow) == 2);
  });
  run("shared per-host counts: the limit bounds every cache sharing them, a closed cache gives its count back", [] {
    // Two caches are two workers, or an old and a new config generation, or an orphan and its
    // worker's replacement: together never more than the limit.
    SharedHostCounts counts;
    Host* h = nullptr;
    {
      HostCache a(HostLimits{10, 3, 100}, &counts);
      HostCache b(HostLimits{10, 3, 100}, &counts);
      Host* ha = nullptr;
      Host* hb = nullptr;
      CHECK(a.admit(addr("10.0.0.1", 80), 0, &ha) == HostCache::Admit::kOk);
      CHECK(a.admit(addr("10.0.0.1", 80), 0, &ha) == HostCache::Admit::kOk);
      CHECK(b.admit(addr("10.0.0.1", 80), 0, &hb) == HostCache::Admit::kOk);
      CHECK(b.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kConnectionOverflow);
      CHECK(a.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kConnectionOverflow);
      CHECK(b.admit(addr("10.0.0.2", 80), 0, &h) == HostCache::Admit::kOk);  // another host: its own count
      CHECK(counts.size() == 2);
      // A reload lowered the limit to 1 while 3 are open: the new cache refuses until they close.
      HostCache lowered(HostLimits{10, 1, 100}, &counts);
      CHECK(lowered.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kConnectionOverflow);
      a.connectDone(*ha);
      a.connectionClosed(*ha, 1);
      CHECK(lowered.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kConnectionOverflow);  // 2 open
      // b goes away with its connection still counted (a worker core closed with connections open).
    }
    CHECK(counts.size() == 0);  // every reservation was given back with its cache: nothing leaks
    HostCache c(HostLimits{10, 3, 100}, &counts);
    for (int i = 0; i < 3; ++i) CHECK(c.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kOk);
    CHECK(c.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kConnectionOverflow);  // the full limit again
  });
  run("shared per-host counts: max_pending too, and a swept host releases its slot", [] {
    SharedHostCounts counts;
    HostCache a(HostLimits{10, 100, 1}, &counts);
    HostCache b(HostLimits{10, 100, 1}, &counts);
    Host* ha = nullptr;
    Host* hb = nullptr;
    CHECK(a.admit(addr("10.0.0.1", 80), 0, &ha) == HostCache::Admit::kOk);
    CHECK(b.admit(addr("10.0.0.1", 80), 0, &hb) == HostCache::Admit::kPendingOverflow);
    a.connectDone(*ha);
    CHECK(b.admit(addr("10.0.0.1", 80), 0, &hb) == HostCache::Admit::kOk);
    b.connectDone(*hb);
    a.connectionClosed(*ha, 10);
    b.connectionClosed(*hb, 10);
    CHECK(a.sweep(20, 5) == 1 && counts.size() == 1);
    CHECK(b.sweep(20, 5) == 1 && counts.size() == 0);
  });
  run("shared per-host counts: 4 threads racing for 50 places never hold more than 50", [] {
    SharedHostCounts counts;
    std::atomic<int> open{0};
    std::atomic<int> highest{0};
    std::atomic<int> admitted{0};
    std::atomic<int> refused{0};
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        HostCache cache(HostLimits{10, 50, 1000}, &counts);
        std::vector<Host*> held;
        ready.fetch_add(1);
        while (ready.load() < 4) std::this_thread::yield();  // all four race from here
        for (int round = 0; round < 20000; ++round) {
          Host* h = nullptr;
          if (cache.admit(addr("10.0.0.1", 80), 0, &h) == HostCache::Admit::kOk) {
            const int now = open.fetch_add(1) + 1;
            int seen = highest.load();
            while (now > seen && !highest.compare_exchange_weak(seen, now)) {
            }
            admitted.fetch_add(1);
            cache.connectDone(*h);
            held.push_back(h);
          } else {
            refused.fetch_add(1);
          }
          // Each thread holds up to 30: alone it never reaches the limit, together they do.
          if (held.size() >= 30 || (round % 3 == 0 && !held.empty())) {
            open.fetch_sub(1);
            cache.connectionClosed(*held.back(), 1);
            held.pop_back();
          }
        }
        while (!held.empty()) {
          open.fetch_sub(1);
          cache.connectionClosed(*held.back(), 1);
          held.pop_back();
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(highest.load() <= 50);
    CHECK(refused.load() > 0);  // the threads did contend for the limit
    CHECK(admitted.load() > 1000);
    CHECK(counts.size() == 0);
  });
  run("a scan over 100,000 destinations stays within max_hosts", [] {
    HostCache cache(HostLimits{1000, 100, 100});
    for (uint32_t i = 0; i < 100000; ++i) {
      Host* h = nullptr;
      const std::string ip = "10." + std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) + "." +
                             std::to_string(i & 255);
      CHECK(cache.admit(addr(ip.c_str(), 443), i, &h) == HostCache::Admit::kOk);
      cache.connectDone(*h);
      cache.connectionClosed(*h, i);
      CHECK(cache.size() <= 1000);
    }
    CHECK(cache.evictions() == 99000);
  });
}

// --- relay on loopback --------------------------------------------------------------------------

// Reads until a clean EOF; false on reset, error or timeout.
bool readAll(int fd, std::string& out, int timeoutMs = 10000) { return readToEnd(fd, out, timeoutMs) == End::kEof; }

ListenerOptions loopbackListener() {
  ListenerOptions lo;
  lo.name = "test";
  lo.address = addr("127.0.0.1", 0);
  return lo;
}

// A worker core with the fake destination, not yet running.
std::unique_ptr<WorkerCore> makeCore(const SocketAddress& target, CoreOptions options = {}) {
  auto ops = std::make_unique<FixedDestinationOps>();
  ops->target = target;
  SysError err;
  auto core = WorkerCore::create(options, std::move(ops), err);
  CHECK(core);
  return core;
}

struct Proxy {
  UniqueFd listenSocket;  // the process's socket (declared first: outlives the worker, as in the addon)
  std::unique_ptr<LoopThread> thread;
  SocketAddress listenAddr;
  explicit Proxy(const SocketAddress& target, CoreOptions options = {}) {
    auto core = makeCore(target, options);
    const ListenerOptions lo = loopbackListener();
    SysError err;
    listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
    thread = std::make_unique<LoopThread>(std::move(core));
    thread->start();
  }
  uint64_t stat(Stat s) const { return thread->stats().get(s); }
  // The loop thread updates counters just after it closes the sockets the test is watching, so
  // wait (bounded) for the value instead of reading it once. The bound is generous for sanitizer
  // builds; it only limits how long a failing test takes to say so.
  bool waitStat(Stat s, uint64_t want, int timeoutMs = 5000) const {
    return waitStatWhere(s, [want](uint64_t v) { return v == want; }, timeoutMs);
  }
  template <typename Pred>
  bool waitStatWhere(Stat s, Pred pred, int timeoutMs = 5000) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    while (!pred(stat(s))) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
};

// Holds the loop thread inside a batch (a posted function that waits) so that a test can raise
// events which the next epoll_wait returns together, in the order they were raised. Constructing
// one also proves that everything posted before it has run. Releases itself on scope exit, so a
// failed CHECK never leaves the loop stuck.
class LoopGate {
 public:
  explicit LoopGate(LoopThread& thread) : state_(std::make_shared<State>()) {
    thread.post([state = state_](WorkerCore&) {
      std::unique_lock<std::mutex> lock(state->mutex);
      state->entered = true;
      state->cv.notify_all();
      state->cv.wait(lock, [&] { return state->released; });
    });
    bool entered;
    {
      std::unique_lock<std::mutex> lock(state_->mutex);
      entered = state_->cv.wait_for(lock, std::chrono::seconds(10), [&] { return state_->entered; });
    }
    if (!entered) release();
    CHECK(entered);
  }
  ~LoopGate() { release(); }
  LoopGate(const LoopGate&) = delete;
  LoopGate& operator=(const LoopGate&) = delete;
  void release() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->released = true;
    state_->cv.notify_all();
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable cv;
    bool entered = false;
    bool released = false;
  };
  std::shared_ptr<State> state_;
};

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x);
  }
  return s;
}

void relayTests(CoreOptions::RelayMode mode, const char* label) {
  CoreOptions options;
  options.relayMode = mode;
  run((std::string("bulk both ways with half-close arrives intact [") + label + "]").c_str(), [&] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr, options);
    const std::string up = pattern((8 << 20) / kBulkDivisor, 1), down = pattern((6 << 20) / kBulkDivisor, 2);
    std::string gotUp, gotDown;
    std::thread srv([&] {
      UniqueFd c(::accept(server.get(), nullptr, nullptr));
      std::thread w([&] { writeAll(c.get(), down.data(), down.size()); ::shutdown(c.get(), SHUT_WR); });
      readAll(c.get(), gotUp);
      w.join();
    });
    UniqueFd client = connectClient(proxy.listenAddr);
    std::thread w([&] { writeAll(client.get(), up.data(), up.size()); ::shutdown(client.get(), SHUT_WR); });
    CHECK(readAll(client.get(), gotDown));
    w.join();
    srv.join();
    CHECK(gotUp == up);
    CHECK(gotDown == down);
  });
  run((std::string("TCP urgent data does not stall a direction, and its byte stays in the stream: the bytes behind its mark follow, without more traffic [") + label + "]").c_str(), [&] {
    // A read (recv or splice) stops short at the urgent mark with bytes still queued behind it,
    // and splice never gets past it: relayed like this, "defgh" would wait for an edge that never
    // comes. (telnet's interrupt and FTP's ABOR are sent as urgent data.) The urgent byte arrives
    // in the stream, where it was sent: every byte is relayed, only its urgency is not.
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr, options);
    UniqueFd client = connectClient(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(upstream);
    const int one = 1;
    ::setsockopt(client.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    CHECK(::send(client.get(), "abc", 3, 0) == 3);
    CHECK(::send(client.get(), "!", 1, MSG_OOB) == 1);
    CHECK(::send(client.get(), "defgh", 5, 0) == 5);
    std::string got;
    readUntil(upstream.get(), got, [](const std::string& b) { return b.size() >= 9; });
    CHECK(got == "abc!defgh");
    // The direction still works afterwards, urgent bytes included.
    CHECK(::send(client.get(), "more", 4, 0) == 4);
    CHECK(::send(client.get(), "?", 1, MSG_OOB) == 1);
    CHECK(::send(client.get(), "end", 3, 0) == 3);
    readUntil(upstream.get(), got, [](const std::string& b) { return b.size() >= 17; });
    CHECK(got == "abc!defghmore?end");
  });
  run((std::string("answer after client EOF reaches the client [") + label + "]").c_str(), [&] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr, options);
    std::thread srv([&] {
      UniqueFd c(::accept(server.get(), nullptr, nullptr));
      std::string req;
      readAll(c.get(), req);  // only returns at the client's FIN, relayed as our shutdown
      const std::string answer = "got " + std::to_string(req.size());
      writeAll(c.get(), answer.data(), answer.size());
    });
    UniqueFd client = connectClient(proxy.listenAddr);
    const std::string req = pattern(100000, 3);
    writeAll(client.get(), req.data(), req.size());
    ::shutdown(client.get(), SHUT_WR);
    std::string answer;
    CHECK(readAll(client.get(), answer));
    srv.join();
    CHECK(answer == "got 100000");
  });
  run((std::string("one byte each way, each followed by its FIN: the byte and the FIN arrive [") + label + "]").c_str(), [&] {
    // The smallest stream: a relay that miscounts what a single-byte write took out of its pipe or
    // buffer still thinks a byte is pending, and never passes the FIN on.
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr, options);
    UniqueFd client = connectClient(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(upstream);
    CHECK(writeAll(client.get(), "q", 1));
    ::shutdown(client.get(), SHUT_WR);
    std::string up, down;
    CHECK(readToEnd(upstream.get(), up) == End::kEof);
    CHECK(up == "q");
    CHECK(writeAll(upstream.get(), "a", 1));
    ::shutdown(upstream.get(), SHUT_WR);
    CHECK(readToEnd(client.get(), down) == End::kEof);
    CHECK(down == "a");
    CHECK(proxy.waitStat(Stat::cx_close_completed, 1));
  });
  run((std::string("slow reader: back-pressure loses nothing [") + label + "]").c_str(), [&] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr, options);
    // More than every buffer on the way holds (the client's receive buffer is small; the proxy's
    // pipe, its upstream socket's receive and the server's send buffer are a few MiB at most), so
    // the server cannot finish writing while the client reads nothing, unless the proxy reads on
    // without bound.
    const std::string down = pattern(16 << 20, 4);
    std::atomic<bool> written{false};
    std::thread srv([&] {
      UniqueFd c(::accept(server.get(), nullptr, nullptr));
      writeAll(c.get(), down.data(), down.size());
      written = true;
    });
    UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int rcvbuf = 16 << 10;
    CHECK(::setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0);
    bindAsClient(client.get());
    CHECK(::connect(client.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
    // Time for a proxy without back-pressure to take everything, then the proof that it did not.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(!written.load());
    std::string got;
    CHECK(readAll(client.get(), got));
    srv.join();
    CHECK(got == down);
  });
}

// A client with a small receive window that will not read: the proxy soon holds bytes for it that
// it cannot deliver.
UniqueFd connectNonReadingClient(const Proxy& proxy) {
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int small = 4096;
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  bindAsClient(client.get());
  CHECK(::connect(client.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
  return client;
}

// Sends from the upstream until the proxy holds bytes read from it that the client has not taken
// and the upstream can send no more; false if that never happens.
bool fillUntilProxyHolds(const Proxy& proxy, int upstream) {
  const std::string chunk(65536, 'y');
  for (int i = 0; i < 1000; ++i) {
    while (::send(upstream, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
    }
    pollfd out{upstream, POLLOUT, 0};
    if (::poll(&out, 1, 200) == 0 && proxy.stat(Stat::upstream_cx_rx_bytes_total) > proxy.stat(Stat::bytes_sent)) return true;
  }
  return false;
}

void failureTests() {
  run("refused upstream resets the client and counts connect_fail", [] {
    SocketAddress closed;
    { UniqueFd tmp = listenOn(closed); }  // bound then closed: nothing listens there now
    Proxy proxy(closed);
    UniqueFd client = connectClient(proxy.listenAddr);
    std::string got;
    // A reset, not a FIN: a transparent client must not take the refusal for an empty answer.
    CHECK(readToEnd(client.get(), got) == End::kReset);
    CHECK(got.empty());
    CHECK(proxy.waitStat(Stat::upstream_cx_connect_fail, 1));
    CHECK(proxy.waitStat(Stat::downstream_cx_active, 0));
  });
  run("unanswered SYN times out after connect_timeout and resets the client", [] {
    // A listener whose accept queue is full drops further SYNs: a black hole on loopback.
    SocketAddress holeAddr;
    UniqueFd hole = listenOn(holeAddr, 0);
    std::vector<UniqueFd> fillers;
    for (int i = 0; i < 4; ++i) {
      UniqueFd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ::connect(f.get(), holeAddr.sockaddrPtr(), holeAddr.length());
      fillers.push_back(std::move(f));
    }
    // The first filler's handshake completing fills the accept queue (backlog 0 holds one).
    pollfd connected{fillers[0].get(), POLLOUT, 0};
    CHECK(::poll(&connected, 1, 5000) == 1);
    CoreOptions options;
    options.connectTimeoutMs = 300;
    Proxy proxy(holeAddr, options);
    const auto start = std::chrono::steady_clock::now();
    UniqueFd client = connectClient(proxy.listenAddr);
    std::string got;
    const End end = readToEnd(client.get(), got);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    CHECK(end == End::kReset);  // reset by the proxy: not a FIN, and not our own bound
    CHECK(got.empty());
    CHECK(proxy.waitStat(Stat::upstream_cx_connect_timeout, 1));
    CHECK(proxy.stat(Stat::upstream_cx_connect_fail) == 0);  // it timed out; nothing refused it
    CHECK(ms >= 250);  // not before connect_timeout (300 ms)
  });
  run("upstream reset while the client is not reading reaches the client at once, in every relay mode", [] {
    for (const CoreOptions::RelayMode mode : {CoreOptions::RelayMode::kCopy, CoreOptions::RelayMode::kSplice,
                                              CoreOptions::RelayMode::kAuto}) {
      SocketAddress serverAddr;
      UniqueFd server = listenOn(serverAddr);
      CoreOptions options;
      options.relayMode = mode;
      Proxy proxy(serverAddr, options);
      // A client that does not read, with a small window: the proxy soon holds bytes for it that
      // it cannot deliver, and so reads nothing more from the upstream.
      UniqueFd client = connectNonReadingClient(proxy);
      UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
      CHECK(upstream);
      CHECK(fillUntilProxyHolds(proxy, upstream.get()));
      linger lg{1, 0};
      ::setsockopt(upstream.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      upstream.reset();  // RST
      // The client has not read a byte; its socket reports the reset all the same.
      pollfd p{client.get(), 0, 0};
      CHECK(::poll(&p, 1, 5000) == 1 && (p.revents & POLLERR));
      CHECK(getIntOption(client.get(), SOL_SOCKET, SO_ERROR) == ECONNRESET);
      CHECK(proxy.waitStat(Stat::upstream_cx_destroy_remote, 1));
    }
  });
  run("an upstream's last bytes before its reset reach the client, then the reset", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr);
    UniqueFd client = connectClient(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(upstream);
    char c;
    CHECK(writeAll(client.get(), "?", 1));
    CHECK(::recv(upstream.get(), &c, 1, MSG_WAITALL) == 1);  // relaying
    const std::string last = pattern(1000, 3);
    {
      // The bytes and the reset land in one epoll batch: one event, EPOLLIN with EPOLLERR.
      LoopGate gate(*proxy.thread);
      CHECK(writeAll(upstream.get(), last.data(), last.size()));
      linger lg{1, 0};
      ::setsockopt(upstream.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      upstream.reset();
    }
    std::string got;
    CHECK(readToEnd(client.get(), got) == End::kReset);
    CHECK(got == last);
  });
  run("client reset mid-stream resets the upstream", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr);
    UniqueFd client = connectClient(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    writeAll(client.get(), "hello", 5);
    char buf[5];
    CHECK(::recv(upstream.get(), buf, 5, MSG_WAITALL) == 5);
    linger lg{1, 0};
    ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    client.reset();  // RST
    std::string rest;
    pollfd p{upstream.get(), POLLIN, 0};
    CHECK(::poll(&p, 1, 3000) == 1);
    const ssize_t n = ::recv(upstream.get(), buf, sizeof buf, 0);
    CHECK(n < 0 && errno == ECONNRESET);  // passed on as a reset, not a clean EOF
    CHECK(proxy.waitStat(Stat::downstream_cx_destroy_remote, 1));
  });
  run("a client that half-closed and then resets while the proxy holds bytes for it: the upstream is reset at once, in every relay mode", [] {
    // The client's own direction has ended, so nothing reads its socket any more: the relay meets
    // the reset first in its write to the client, and that failed write takes the socket's error
    // with it (a later SO_ERROR reads 0). The write error itself must end the stream, as the
    // client's, or the upstream would wait (until idle_timeout) for a client that is gone.
    for (const CoreOptions::RelayMode mode : {CoreOptions::RelayMode::kCopy, CoreOptions::RelayMode::kSplice,
                                              CoreOptions::RelayMode::kAuto}) {
      SocketAddress serverAddr;
      UniqueFd server = listenOn(serverAddr);
      CoreOptions options;
      options.relayMode = mode;
      Proxy proxy(serverAddr, options);
      UniqueFd client = connectNonReadingClient(proxy);
      UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
      CHECK(upstream);
      ::shutdown(client.get(), SHUT_WR);
      std::string none;
      CHECK(readToEnd(upstream.get(), none) == End::kEof);  // the client's FIN went through
      CHECK(fillUntilProxyHolds(proxy, upstream.get()));
      linger lg{1, 0};
      ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      client.reset();  // RST
      pollfd p{upstream.get(), 0, 0};
      CHECK(::poll(&p, 1, 5000) == 1 && (p.revents & POLLERR));
      const int err = getIntOption(upstream.get(), SOL_SOCKET, SO_ERROR);
      CHECK(err == ECONNRESET || err == EPIPE);  // EPIPE: a reset after the FIN it read
      CHECK(proxy.waitStat(Stat::downstream_cx_destroy_remote, 1));  // the client's end, not the upstream's
      CHECK_EQ(proxy.stat(Stat::upstream_cx_destroy_remote), 0u);
    }
  });
}

// --- destination policy on the accept path -----------------------------------------------------

PolicyRule ruleOf(const char* name, bool allow, const char* cidr, std::vector<PortRange> ports = {}) {
  PolicyRule r;
  r.name = name;
  r.allow = allow;
  r.cidrs.push_back(*parseCidr(cidr));
  r.ports = std::move(ports);
  return r;
}

PolicyRules policyOf(std::vector<PolicyRule> rules, bool denySpecial) {
  PolicyRules p;
  p.denySpecial = denySpecial;
  p.rules = std::move(rules);
  return p;
}

// Runs fn on the loop thread and waits for it.
void onLoop(LoopThread& thread, std::function<void(WorkerCore&)> fn) {
  std::promise<void> done;
  thread.post([&](WorkerCore& core) {
    fn(core);
    done.set_value();
  });
  CHECK(done.get_future().wait_for(std::chrono::seconds(5)) == std::future_status::ready);
}

// The counter named `name` in the worker's merged policy counters.
double policyCounter(const WorkerCore& core, const std::string& name) {
  const PolicySet& set = core.policies();
  std::vector<double> values(set.counterNames().size());
  set.exportCounters(values.data());
  for (size_t i = 0; i < values.size(); ++i) {
    if (set.counterNames()[i] == name) return values[i];
  }
  return -1;
}

bool isReset(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 3000) != 1) return false;
  char byte;
  return ::recv(fd, &byte, 1, 0) < 0 && errno == ECONNRESET;
}

void policyTests() {
  run("policy set: counters merged by name across policies, names known without compiling", [] {
    std::vector<PolicyRules> rules = {
        policyOf({ruleOf("a", false, "10.0.0.0/8"), ruleOf("b", false, "10.1.0.0/16", {{80, 80}})}, true),
        policyOf({ruleOf("b", false, "192.168.0.0/16"), ruleOf("c", true, "0.0.0.0/0")}, false),
    };
    PolicySet set(rules);
    const std::vector<std::string> want = {"policy.a.denied", "policy.b.denied", "policy.special.denied", "policy_denied",
                                           "policy.c.denied"};
    CHECK(set.counterNames() == want);
    CHECK(PolicySet::counterNames(rules) == want);
    DestinationPolicy* first = set.at(0);
    DestinationPolicy* second = set.at(1);
    CHECK(first && second && !set.at(2));
    for (auto [policy, ip] : {std::pair{first, "10.2.0.1"}, {second, "192.168.1.1"}, {first, "127.0.0.1"}}) {
      const PolicyDecision d = policy->check(addr(ip, 80));
      CHECK(!d.allow);
      policy->countDenied(d);
    }
    std::vector<double> values(want.size());
    set.exportCounters(values.data());
    CHECK(values == (std::vector<double>{1, 1, 1, 3, 0}));  // b: from the second policy; total summed
    CHECK(set.decidedBy(1, second->check(addr("192.168.1.1", 1))) == "b");
    CHECK(set.decidedBy(0, first->check(addr("127.0.0.1", 1))) == "special");
  });
  run("event buffer keeps at most its capacity and counts the rest as dropped", [] {
    WorkerEventBuffer buffer(2);
    for (int i = 0; i < 5; ++i) {
      if (WorkerEvent* e = buffer.append()) e->policy = static_cast<uint32_t>(i);
    }
    std::vector<WorkerEvent> out;
    CHECK(buffer.take(out) == 3);
    CHECK(out.size() == 2 && out[0].policy == 0 && out[1].policy == 1);
    CHECK(buffer.take(out) == 0);
    CHECK(out.empty());
    CHECK(buffer.append() != nullptr);  // room again after a take
  });
  run("attachListener refuses a policy index beyond the configured policies", [] {
    CoreOptions options;
    options.policies = {policyOf({}, true)};
    SysError err;
    auto core = WorkerCore::create(options, err);
    CHECK(core);
    ListenerOptions lo = loopbackListener();
    UniqueFd shared = openListenSocket(lo, nullptr, err);
    CHECK(shared);
    lo.policy = 1;
    CHECK(static_cast<bool>(core->attachListener(lo, shared.get(), nullptr)));
    lo.policy = 0;
    CHECK(!core->attachListener(lo, shared.get(), nullptr));
  });
  run("a denied destination is reset at once, counted, buffered as an event and never connected", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);  // 127.0.0.1: loopback, a built-in deny
    CoreOptions options;
    options.policies = {policyOf({}, true)};
    Proxy proxy(serverAddr, options);
    UniqueFd client = connectClient(proxy.listenAddr);
    CHECK(isReset(client.get()));
    WorkerCore& core = proxy.thread->core();
    CHECK(policyCounter(core, "policy.special.denied") == 1);
    CHECK(policyCounter(core, "policy_denied") == 1);
    CHECK(proxy.stat(Stat::upstream_cx_total) == 0);
    pollfd p{server.get(), POLLIN, 0};
    CHECK(::poll(&p, 1, 0) == 0);  // nothing ever reached the server's accept queue
    std::vector<WorkerEvent> events;
    uint64_t dropped = 99;
    onLoop(*proxy.thread, [&](WorkerCore& c) { dropped = c.takeEvents(events); });
    CHECK(dropped == 0);
    CHECK(events.size() == 1);
    CHECK(events[0].kind == WorkerEventKind::kPolicyDenied);
    CHECK(events[0].destination == serverAddr);
    CHECK(events[0].source.toString().rfind("127.0.0.2:", 0) == 0);
    CHECK(std::string(events[0].listener) == "test");
    CHECK(events[0].decision.by == PolicyDecision::By::kSpecial);
    CHECK(events[0].wallTimeMs > 1600000000000ULL);
  });
  run("an allowed destination relays; a rule deny names its rule", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    std::vector<PortRange> otherPort = {{static_cast<uint16_t>(serverAddr.port() + 1), static_cast<uint16_t>(serverAddr.port() + 1)}};
    options.policies = {policyOf({ruleOf("other-port", false, "127.0.0.1/32", otherPort)}, false)};
    Proxy proxy(serverAddr, options);
    UniqueFd client = connectClient(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(upstream);  // deny_special off and the rule names another port: relayed
    CHECK(policyCounter(proxy.thread->core(), "policy_denied") == 0);

    CoreOptions denying;
    std::vector<PortRange> thisPort = {{serverAddr.port(), serverAddr.port()}};
    denying.policies = {policyOf({ruleOf("this-port", false, "127.0.0.0/8", thisPort)}, false)};
    Proxy refusing(serverAddr, denying);
    UniqueFd refused = connectClient(refusing.listenAddr);
    CHECK(isReset(refused.get()));
    CHECK(policyCounter(refusing.thread->core(), "policy.this-port.denied") == 1);
    std::vector<WorkerEvent> events;
    onLoop(*refusing.thread, [&](WorkerCore& c) { c.takeEvents(events); });
    CHECK(events.size() == 1 && refusing.thread->core().policies().decidedBy(0, events[0].decision) == "this-port");
  });
}

// --- out of fds ---------------------------------------------------------------------------------

void fdExhaustionTests() {
  run("upstream socket() out of fds even after the spare (another worker took it): the client waits for an fd, then is relayed; past connect_timeout it is reset", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    UniqueFd waiter(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    UniqueFd queued(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    UniqueFd late(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    // The fillers take every low number first, so the proxy's own fds (its spare among them) land
    // above them. Then one filler goes and the limit drops to just above it: accept4 gets that
    // number, and freeing the spare gives socket() nothing under the limit, as when another worker
    // of the process took the fd the spare released.
    std::vector<UniqueFd> fillers = fillFdHoles();
    CoreOptions options;
    options.connectTimeoutMs = 30000;
    Proxy proxy(serverAddr, options);
    const int hole = fillers.back().get();
    fillers.pop_back();
    NofileLimit limit(static_cast<rlim_t>(hole + 1));
    bindAsClient(waiter.get());
    CHECK(::connect(waiter.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
    const bool waited = proxy.waitStat(Stat::upstream_cx_fd_wait, 1);
    bindAsClient(queued.get());
    CHECK(::connect(queued.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
    // Ticks pass (50 ms each) with still no fd: the waiter stays, the next client stays queued.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const uint64_t acceptedWhileOut = proxy.stat(Stat::downstream_cx_total);
    const uint64_t failed = proxy.stat(Stat::upstream_cx_connect_fail) + proxy.stat(Stat::upstream_cx_connect_timeout);
    const uint64_t active = proxy.stat(Stat::upstream_cx_active);
    limit.restore();
    fillers.clear();
    CHECK(waited);
    CHECK(acceptedWhileOut == 1);
    CHECK(failed == 0);
    CHECK(active == 0);
    // Fds are back: the waiter gets its upstream first, then accepting resumes for the next.
    CHECK(proxy.waitStat(Stat::upstream_cx_active, 2));
    UniqueFd up1(::accept(server.get(), nullptr, nullptr));
    UniqueFd up2(::accept(server.get(), nullptr, nullptr));
    CHECK(up1 && up2);
    CHECK(writeAll(waiter.get(), "a", 1) && writeAll(queued.get(), "b", 1));
    char got[2] = {};
    CHECK(::recv(up1.get(), &got[0], 1, MSG_WAITALL) == 1 && ::recv(up2.get(), &got[1], 1, MSG_WAITALL) == 1);
    CHECK((got[0] == 'a' && got[1] == 'b') || (got[0] == 'b' && got[1] == 'a'));
    CHECK(proxy.stat(Stat::upstream_cx_fd_wait) == 1);

    // A wait longer than connect_timeout ends as an unanswered connect would: the client is reset.
    CoreOptions quick;
    quick.connectTimeoutMs = 200;
    std::vector<UniqueFd> moreFillers = fillFdHoles();
    Proxy impatient(serverAddr, quick);
    const int hole2 = moreFillers.back().get();
    moreFillers.pop_back();
    NofileLimit limit2(static_cast<rlim_t>(hole2 + 1));
    bindAsClient(late.get());
    CHECK(::connect(late.get(), impatient.listenAddr.sockaddrPtr(), impatient.listenAddr.length()) == 0);
    const bool timedOut = impatient.waitStat(Stat::upstream_cx_connect_timeout, 1);
    limit2.restore();
    moreFillers.clear();
    CHECK(timedOut);
    CHECK(impatient.stat(Stat::upstream_cx_fd_wait) == 1);
    char byte;
    CHECK(::recv(late.get(), &byte, 1, 0) < 0 && errno == ECONNRESET);
  });

  run("upstream socket() out of fds: the spare fd serves the accepted client, accepting pauses, the next waits", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr);
    // Unconnected client sockets made now: connecting them later takes no new fd.
    UniqueFd first(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    UniqueFd second(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    // Fill every hole below the highest open fd, so exactly one fd number is left under the limit.
    std::vector<UniqueFd> fillers = fillFdHoles();
    const int highest = fillers.back().get();
    fillers.pop_back();  // frees the highest number: the single fd left
    NofileLimit limit(static_cast<rlim_t>(highest + 1));
    // accept4 takes the last fd; socket() then fails with EMFILE and the spare fd stands in.
    bindAsClient(first.get());
    CHECK(::connect(first.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
    const bool connecting = proxy.waitStat(Stat::upstream_cx_total, 1);
    const bool paused = proxy.stat(Stat::downstream_cx_accept_paused) >= 1;
    bindAsClient(second.get());
    CHECK(::connect(second.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
    // Several ticks pass (50 ms each) with no fd to take back the spare: the second stays queued.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const uint64_t acceptedWhileOut = proxy.stat(Stat::downstream_cx_total);
    const uint64_t failed = proxy.stat(Stat::upstream_cx_connect_fail);
    limit.restore();
    fillers.clear();
    CHECK(paused);
    CHECK(connecting);
    CHECK(acceptedWhileOut == 1);
    CHECK(failed == 0);
    // Fds are back: the spare is re-taken, accepting resumes and the waiting client is served.
    CHECK(proxy.waitStat(Stat::downstream_cx_total, 2));
    CHECK(proxy.waitStat(Stat::upstream_cx_total, 2));
    UniqueFd up1(::accept(server.get(), nullptr, nullptr));
    UniqueFd up2(::accept(server.get(), nullptr, nullptr));
    CHECK(up1 && up2);
    CHECK(writeAll(first.get(), "a", 1) && writeAll(second.get(), "b", 1));
    char got[2] = {};
    CHECK(::recv(up1.get(), &got[0], 1, MSG_WAITALL) == 1 && ::recv(up2.get(), &got[1], 1, MSG_WAITALL) == 1);
    CHECK((got[0] == 'a' && got[1] == 'b') || (got[0] == 'b' && got[1] == 'a'));
  });
}

// --- lifecycle: nothing is freed while an event of the batch may still name it ----------------

// A relayed pair: the client's socket and the server's accepted one, one byte relayed each way.
struct RelayedPair {
  UniqueFd client;
  UniqueFd upstream;
};

RelayedPair relayedPair(const Proxy& proxy, int server) {
  RelayedPair p;
  p.client = connectClient(proxy.listenAddr);
  p.upstream.reset(::accept(server, nullptr, nullptr));
  CHECK(p.upstream);
  char c;
  CHECK(writeAll(p.client.get(), "a", 1));
  CHECK(::recv(p.upstream.get(), &c, 1, MSG_WAITALL) == 1 && c == 'a');
  CHECK(writeAll(p.upstream.get(), "b", 1));
  CHECK(::recv(p.client.get(), &c, 1, MSG_WAITALL) == 1 && c == 'b');
  return p;
}

void lifecycleTests() {
  run("closeAll posted into a batch with relay events pending frees nothing early", [] {
    // Drain's closeAll runs in the loop thread's wake handler, an event of the batch; the events
    // raised after it (data and FINs on every connection) are later events of the same batch and
    // still name the connections it closed. An ASan build reports a use-after-free if they were
    // freed at once.
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr);
    constexpr int kConnections = 8;
    std::vector<RelayedPair> pairs;
    for (int i = 0; i < kConnections; ++i) pairs.push_back(relayedPair(proxy, server.get()));
    {
      LoopGate gate(*proxy.thread);
      proxy.thread->post([](WorkerCore& core) { core.closeAllConnections(CloseReason::kDrained); });
      for (int i = 0; i < kConnections; ++i) {
        CHECK(writeAll(pairs[i].client.get(), "more", 4));
        CHECK(writeAll(pairs[i].upstream.get(), "more", 4));
        ::shutdown(i % 2 ? pairs[i].client.get() : pairs[i].upstream.get(), SHUT_WR);
      }
    }
    for (auto& p : pairs) {
      std::string got;
      CHECK(readToEnd(p.client.get(), got) == End::kReset);  // drained mid-stream: reset
      got.clear();
      CHECK(readToEnd(p.upstream.get(), got) == End::kReset);
    }
    CHECK(proxy.waitStat(Stat::cx_drained, kConnections));
    CHECK(proxy.waitStat(Stat::downstream_cx_active, 0));
    CHECK(proxy.waitStat(Stat::upstream_cx_active, 0));
    // The later events of the batch were ignored, not relayed on closed sockets (whose failed
    // reads would count as the peers' errors).
    CHECK_EQ(proxy.stat(Stat::downstream_cx_destroy_remote), 0u);
    CHECK_EQ(proxy.stat(Stat::upstream_cx_destroy_remote), 0u);
  });

  run("warm socket taken while an event for it is pending in the same batch", [] {
    // One batch: the listener's event (a client whose connection takes the warm socket), then an
    // event of the warm socket itself. A lone urgent byte wakes the socket without making it
    // readable (it is not in-band data), so the liveness peek still hands it out. An ASan build
    // reports a use-after-free if take() freed the socket's shell at once.
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.preconnectPorts = {serverAddr.port()};
    options.preconnectPerHost = 1;
    options.preconnectTtlMs = 60000;
    Proxy proxy(serverAddr, options);
    UniqueFd first = connectClient(proxy.listenAddr);
    UniqueFd a(::accept(server.get(), nullptr, nullptr));
    UniqueFd b(::accept(server.get(), nullptr, nullptr));
    CHECK(a && b);
    // Which accepted socket is the warm one: the other carries the first client's bytes.
    CHECK(writeAll(first.get(), "1", 1));
    pollfd ready[2] = {{a.get(), POLLIN, 0}, {b.get(), POLLIN, 0}};
    CHECK(::poll(ready, 2, 5000) == 1);
    UniqueFd& warm = (ready[0].revents & POLLIN) ? b : a;
    UniqueFd second;
    {
      LoopGate gate(*proxy.thread);  // also: the warm socket's connect completion was handled
      second = connectClient(proxy.listenAddr);
      CHECK(::send(warm.get(), "!", 1, MSG_OOB) == 1);
    }
    CHECK(proxy.waitStat(Stat::upstream_cx_preconnect_used, 1));
    CHECK(writeAll(second.get(), "hi", 2));
    char got[2];
    CHECK(::recv(warm.get(), got, 2, MSG_WAITALL) == 2 && std::memcmp(got, "hi", 2) == 0);
  });

  run("out of fds at accept4 with warm sockets held: they give their fds up (oldest first) and the client is relayed; none is opened again meanwhile", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.preconnectPorts = {serverAddr.port()};
    options.preconnectPerHost = 2;
    options.preconnectTtlMs = 60000;
    Proxy proxy(serverAddr, options);
    UniqueFd first = connectClient(proxy.listenAddr);
    // The first client's upstream, then two warm sockets: which is which does not matter here.
    std::vector<UniqueFd> ups;
    for (int i = 0; i < 3; ++i) ups.push_back(UniqueFd(::accept(server.get(), nullptr, nullptr)));
    for (UniqueFd& up : ups) CHECK(up);
    CHECK(proxy.waitStat(Stat::upstream_cx_preconnect, 2));
    UniqueFd late(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));  // connecting it takes no fd
    CHECK(late);
    bindAsClient(late.get());
    std::vector<UniqueFd> fillers = fillEveryFdBelowTop();
    NofileLimit limit(static_cast<rlim_t>(fillers.back().get()));  // nothing free below it
    // accept4 fails with EMFILE. Before, the listener paused and each tick's retry failed the same
    // way for as long as the warm sockets held their fds (ttl, here 60 s).
    CHECK(::connect(late.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
    const bool relayed = proxy.waitStat(Stat::upstream_cx_total, 4);  // 1 + 2 warm + late's own connect
    const uint64_t evicted = proxy.stat(Stat::upstream_cx_preconnect_evicted_fd_pressure);
    const uint64_t opened = proxy.stat(Stat::upstream_cx_preconnect);
    limit.restore();
    fillers.clear();
    CHECK(relayed);
    CHECK(evicted == 2);
    CHECK(opened == 2);  // no warm socket was opened again while short of fds
    CHECK(proxy.stat(Stat::upstream_cx_preconnect_dropped) == 0);
    UniqueFd up(::accept(server.get(), nullptr, nullptr));
    CHECK(up);
    CHECK(writeAll(late.get(), "hi", 2));
    char got[2];
    CHECK(::recv(up.get(), got, 2, MSG_WAITALL) == 2 && std::memcmp(got, "hi", 2) == 0);
  });

  run("warm socket given to a connection that fails to start leaves upstream_cx_active at 0", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.preconnectPorts = {serverAddr.port()};
    options.preconnectPerHost = 1;
    options.preconnectTtlMs = 300;
    Proxy proxy(serverAddr, options);
    UniqueFd first = connectClient(proxy.listenAddr);
    UniqueFd a(::accept(server.get(), nullptr, nullptr));
    UniqueFd b(::accept(server.get(), nullptr, nullptr));  // the warm socket
    CHECK(a && b);
    { LoopGate sync(*proxy.thread); }  // its connect completion was handled: it can be handed out
    failEpollAdds = 1;  // the next registration (the second client's socket) fails
    UniqueFd second = connectClient(proxy.listenAddr);
    std::string got;
    CHECK(readToEnd(second.get(), got) == End::kReset);  // out of resources: an abnormal end
    CHECK(failEpollAdds.load() == 0);
    CHECK(proxy.stat(Stat::upstream_cx_preconnect_used) == 1);
    first.reset();
    a.reset();
    CHECK(proxy.waitStat(Stat::downstream_cx_active, 0));
    // The warm socket opened after the failure expires after its ttl; then nothing is open.
    CHECK(proxy.waitStat(Stat::upstream_cx_active, 0));
  });
}

// --- copy buffers: bounded, and a direction without one waits --------------------------------

// Small windows and a small MSS on the peers (set before connect/listen, so the proxy's sockets
// see them): the proxy's send buffers then stay small (Linux sizes them from the peer's MSS) and
// its sends come back short, so copy buffers stay lent while they wait for EPOLLOUT.
void setSmallWindow(int fd) {
  // Blocking peers give up after a liveness bound, so a relay that stalls fails the test instead
  // of hanging it.
  timeval bound{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound);
  const int size = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  const int mss = 536;
  ::setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss);
}

// Echoes what fd reads until EOF, reading on while the echo waits to be sent (poll on both), then
// sends the rest and a FIN. Gives up (liveness bound) when neither way moves for 30 s.
void echoFullDuplex(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string backlog;
  bool eof = false;
  char buf[8192];
  while (!eof || !backlog.empty()) {
    pollfd p{fd, static_cast<short>((eof ? 0 : POLLIN) | (backlog.empty() ? 0 : POLLOUT)), 0};
    if (::poll(&p, 1, 30000) <= 0) return;
    if (!eof && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n == 0) eof = true;
      else if (n > 0) backlog.append(buf, static_cast<size_t>(n));
      else if (errno != EAGAIN) return;
    }
    if (!backlog.empty() && (p.revents & POLLOUT)) {
      const ssize_t n = ::send(fd, backlog.data(), backlog.size(), MSG_NOSIGNAL);
      if (n > 0) backlog.erase(0, static_cast<size_t>(n));
      else if (errno != EAGAIN) return;
    }
  }
  ::shutdown(fd, SHUT_WR);
}

void bufferCapTests() {
  struct Case {
    const char* label;
    CoreOptions::RelayMode mode;
    size_t buffers;
    size_t pipes;
  };
  for (const Case& k : {Case{"copy", CoreOptions::RelayMode::kCopy, 2, 0},
                        Case{"splice", CoreOptions::RelayMode::kSplice, 1, 1},
                        Case{"auto", CoreOptions::RelayMode::kAuto, 1, 1}}) {
    run((std::string("more busy connections than copy buffers: all complete byte-exact [") + k.label + "]").c_str(), [&] {
      SocketAddress serverAddr;
      UniqueFd server(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      setSmallWindow(server.get());  // inherited by the accepted sockets
      auto any = addr("127.0.0.1", 0);
      CHECK(::bind(server.get(), any.sockaddrPtr(), any.length()) == 0);
      CHECK(::listen(server.get(), 64) == 0);
      socklen_t len = SocketAddress::capacity();
      ::getsockname(server.get(), serverAddr.sockaddrPtr(), &len);
      CoreOptions options;
      options.relayMode = k.mode;
      options.maxCopyBuffers = k.buffers;
      options.maxPipes = k.pipes;
      Proxy proxy(serverAddr, options);
      constexpr int kConnections = 8;
      constexpr size_t kBytes = 256 << 10;
      // Each server echoes what it reads; each client writes its pattern and reads the echo, so
      // both directions of every connection are busy at once. The servers start reading only once
      // the proxy has run out of holders: the first ones stay lent (their upstream is full), so
      // the rest must wait, and then everything has to drain through them. The servers are
      // full-duplex (they keep reading while their echo waits to be sent), as TCP peers may be
      // expected to be: an echo that stops reading until its write completes, with every holder
      // lent to requests blocked on such servers, would wait on the proxy's response direction,
      // which waits for a holder — a cycle only the kernel's socket buffers break.
      std::promise<void> go;
      std::shared_future<void> started = go.get_future().share();
      std::vector<std::thread> threads;
      std::vector<std::string> echoed(kConnections);
      std::vector<End> ends(kConnections, End::kTimeout);
      std::vector<UniqueFd> clients;
      for (int i = 0; i < kConnections; ++i) {
        UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        setSmallWindow(c.get());
        bindAsClient(c.get());
        CHECK(::connect(c.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
        clients.push_back(std::move(c));
      }
      for (int i = 0; i < kConnections; ++i) {
        threads.emplace_back([&server, started] {
          UniqueFd s(::accept(server.get(), nullptr, nullptr));
          setSmallWindow(s.get());
          started.wait();
          echoFullDuplex(s.get());
        });
        threads.emplace_back([&, i] {
          const std::string data = pattern(kBytes, 100 + i);
          writeAll(clients[i].get(), data.data(), data.size());
          ::shutdown(clients[i].get(), SHUT_WR);
        });
        threads.emplace_back([&, i] { ends[i] = readToEnd(clients[i].get(), echoed[i], 30000); });
      }
      const bool exhausted = proxy.waitStatWhere(Stat::buffer_unavailable, [](uint64_t v) { return v > 0; }, 10000);
      go.set_value();
      for (auto& th : threads) th.join();
      CHECK(exhausted);  // the bound was reached: directions waited for a holder
      for (int i = 0; i < kConnections; ++i) {
        CHECK(ends[i] == End::kEof);
        CHECK(echoed[i] == pattern(kBytes, 100 + i));
      }
      CHECK(proxy.waitStat(Stat::downstream_cx_active, 0));
    });
  }
}

uint64_t processCpuUs() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
         static_cast<uint64_t>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

void holderWaitTests() {
  run("a direction waiting for a copy buffer does not retry until one is released", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.relayMode = CoreOptions::RelayMode::kCopy;
    options.maxCopyBuffers = 1;
    Proxy proxy(serverAddr, options);
    // A's upstream never reads (until the end), so A keeps the only buffer once its path is full.
    UniqueFd clientA = connectClient(proxy.listenAddr);
    UniqueFd upstreamA(::accept(server.get(), nullptr, nullptr));
    UniqueFd clientB = connectClient(proxy.listenAddr);
    UniqueFd upstreamB(::accept(server.get(), nullptr, nullptr));
    CHECK(upstreamA && upstreamB);
    timeval bound{30, 0};
    ::setsockopt(clientA.get(), SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound);  // liveness bounds only
    ::setsockopt(upstreamA.get(), SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
    const std::string bulk = pattern(16 << 20, 9);
    std::thread writerA([&] { writeAll(clientA.get(), bulk.data(), bulk.size()); });
    // B sends a byte at a time until one finds no buffer (before A's path filled up, B's bytes
    // still get through and are counted).
    size_t sentB = 0, gotB = 0;
    auto drainB = [&] {
      char buf[1024];
      for (;;) {
        const ssize_t n = ::recv(upstreamB.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) return;
        gotB += static_cast<size_t>(n);
      }
    };
    // Returns once a byte of B sits in the proxy, refused a buffer (or false if B cannot send).
    auto probeUntilWaiting = [&]() -> bool {
      drainB();
      if (gotB < sentB) return true;  // the last probe still waits
      const uint64_t before = proxy.stat(Stat::buffer_unavailable);
      for (int i = 0; i < 1000; ++i) {
        if (!writeAll(clientB.get(), "x", 1)) return false;
        ++sentB;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);  // liveness only
        while (gotB < sentB) {
          if (proxy.stat(Stat::buffer_unavailable) > before) return true;
          if (std::chrono::steady_clock::now() > deadline) return false;
          pollfd p{upstreamB.get(), POLLIN, 0};
          if (::poll(&p, 1, 5) == 1) drainB();
        }
      }
      return false;
    };
    // Waits until everything the loop thread had started when this was called is over: three
    // posted no-ops in a row. A wake-up (wakeHolderWaiters at the end of a batch) is acted on in
    // the ready queue of the next batch at the latest, and the third no-op runs in a batch after
    // that one's ready queue.
    auto settleLoop = [&] {
      for (int i = 0; i < 3; ++i) LoopGate gate(*proxy.thread);
    };
    // The claim needs a window in which no buffer can come free: one in which neither connection
    // moved a byte (a buffer is released only when what it holds is sent, and one that is free at
    // the end of a batch would let B read). A's path fills at its own pace (under a sanitizer, and
    // with the writer thread scheduled late, A may still be copying when B is first refused), so
    // measure again until a whole window was still; B must still be waiting at its end.
    bool waiting = false, quiet = false, measured = false;
    uint64_t cpuUs = 0;
    for (int attempt = 0; attempt < 50 && !measured; ++attempt) {
      waiting = probeUntilWaiting();
      if (!waiting) break;
      const uint64_t tx0 = proxy.stat(Stat::upstream_cx_tx_bytes_total);
      const uint64_t rx0 = proxy.stat(Stat::bytes_received);
      settleLoop();  // a retry owed to a release before tx0/rx0 is counted before `unavailable`
      const uint64_t unavailable = proxy.stat(Stat::buffer_unavailable);
      // Nothing is released in this window: the waiter must not be retried (every retry would
      // count buffer_unavailable again) and the loop must not spin (a spinning loop thread would
      // use about the whole window in CPU time; the bound is half of it).
      const uint64_t cpu0 = processCpuUs();
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      cpuUs = processCpuUs() - cpu0;
      const uint64_t unavailableAfter = proxy.stat(Stat::buffer_unavailable);
      const bool still = proxy.stat(Stat::upstream_cx_tx_bytes_total) == tx0 && proxy.stat(Stat::bytes_received) == rx0;
      drainB();
      if (!still || gotB == sentB) continue;  // A was still moving, or B got a buffer: not a window
      quiet = unavailableAfter == unavailable;
      measured = true;
    }
    // Now A's upstream reads: A's buffer comes back, and B is woken and relays what it holds.
    std::string gotA;
    std::thread readerA([&] {
      char buf[65536];
      while (gotA.size() < bulk.size()) {
        const ssize_t n = ::recv(upstreamA.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        gotA.append(buf, static_cast<size_t>(n));
      }
    });
    writerA.join();
    readerA.join();
    CHECK(waiting);
    CHECK(measured);
    CHECK(quiet);
    CHECK(cpuUs < 200000);
    CHECK(gotA == bulk);
    while (gotB < sentB) {
      pollfd p{upstreamB.get(), POLLIN, 0};
      CHECK(::poll(&p, 1, 10000) == 1);  // B's bytes arrive once it is woken
      char buf[1024];
      const ssize_t n = ::recv(upstreamB.get(), buf, sizeof buf, 0);
      CHECK(n > 0);
      gotB += static_cast<size_t>(n);
    }
    CHECK(gotB == sentB);
  });
}

// A pipe destroyed with bytes in it (its connection reset) leaves no idle pipe behind, yet the pool
// may now create one: a direction waiting for a holder must be woken for it. Driven by hand so that
// the test decides what each batch sees.
// relay_mode auto: small reads copy through a buffer, but a pipe carries them as well.
void autoModeFallbackTest() {
  run("relay_mode auto with every copy buffer lent: a small read goes through a free pipe instead of waiting", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.relayMode = CoreOptions::RelayMode::kAuto;
    options.maxCopyBuffers = 1;
    options.copyBufferSize = 1 << 20;  // A's reads never fill it: A stays on the copy path
    Proxy proxy(serverAddr, options);
    // The accepted sockets inherit the listener's receive buffer: at 64 KiB (the kernel doubles
    // it) no read can return 1 MiB, however late the loop thread reads (a full read would switch
    // A to splice; it did on a loaded machine, with the buffer autotuned past 1 MiB).
    const int rcvbuf = 64 * 1024;
    CHECK(::setsockopt(proxy.listenSocket.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0);
    // A's upstream never reads, so A soon holds the only buffer with bytes it cannot deliver.
    UniqueFd clientA = connectClient(proxy.listenAddr);
    UniqueFd upstreamA(::accept(server.get(), nullptr, nullptr));
    UniqueFd clientB = connectClient(proxy.listenAddr);
    UniqueFd upstreamB(::accept(server.get(), nullptr, nullptr));
    CHECK(upstreamA && upstreamB);
    const std::string chunk(4096, 'a');
    bool full = false;
    for (int i = 0; i < 1000 && !full; ++i) {
      while (::send(clientA.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
      }
      pollfd out{clientA.get(), POLLOUT, 0};
      full = ::poll(&out, 1, 200) == 0 &&
             proxy.stat(Stat::bytes_received) > proxy.stat(Stat::upstream_cx_tx_bytes_total);
    }
    CHECK(full);
    CHECK_EQ(proxy.stat(Stat::splice_bytes), 0u);  // A copied: the buffer is A's
    CHECK(writeAll(clientB.get(), "hello", 5));
    char got[5];
    pollfd in{upstreamB.get(), POLLIN, 0};
    CHECK(::poll(&in, 1, 5000) == 1);
    CHECK(::recv(upstreamB.get(), got, sizeof got, MSG_WAITALL) == 5 && std::memcmp(got, "hello", 5) == 0);
    CHECK_EQ(proxy.stat(Stat::splice_bytes), 5u);  // through a pipe
    CHECK_EQ(proxy.stat(Stat::buffer_unavailable), 0u);  // nothing waited
  });
}

void pipeReplacedTest() {
  run("a pipe destroyed with its connection's bytes lets a waiting direction create a new one", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    setSmallWindow(server.get());  // the accepted upstreams advertise a small window and never read
    SocketAddress listenAddr;
    SysError err;
    UniqueFd shared = openListenSocket(loopbackListener(), &listenAddr, err);
    CHECK(shared);
    CoreOptions options;
    options.relayMode = CoreOptions::RelayMode::kSplice;
    options.maxPipes = 1;
    options.maxCopyBuffers = 1;
    auto core = makeCore(serverAddr, options);
    CHECK(!core->attachListener(loopbackListener(), shared.get(), nullptr));
    auto stat = [&](Stat s) { return core->stats().get(s); };
    const std::string chunk(65536, 'x');
    // A relayed connection (upstream accepted, never read by the test unless it says so).
    auto open = [&](UniqueFd& client, UniqueFd& upstream) {
      client = connectClient(listenAddr);
      const uint64_t connected = stat(Stat::upstream_cx_total) + 1;
      CHECK(runUntil(*core, [&] { return stat(Stat::upstream_cx_total) == connected; }));
      upstream.reset(::accept(server.get(), nullptr, nullptr));
      CHECK(upstream);
    };
    // Feeds a connection until the proxy sits on bytes of it that it cannot deliver (read from the
    // client, not written to the upstream): its direction keeps its holder. A batch that moves
    // nothing for a whole window (several delayed-ACK periods) shows the path is shut.
    auto fillUntilStuck = [&](const UniqueFd& client) {
      const uint64_t rx0 = stat(Stat::bytes_received), tx0 = stat(Stat::upstream_cx_tx_bytes_total);
      int still = 0;
      for (int batch = 0; batch < 2000 && still < 25; ++batch) {
        while (::send(client.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
        }
        const uint64_t rx = stat(Stat::bytes_received), tx = stat(Stat::upstream_cx_tx_bytes_total);
        core->runOnce(20);
        const bool moved = stat(Stat::bytes_received) != rx || stat(Stat::upstream_cx_tx_bytes_total) != tx;
        still = moved ? 0 : still + 1;
      }
      CHECK(still >= 25);
      CHECK(stat(Stat::bytes_received) - rx0 > stat(Stat::upstream_cx_tx_bytes_total) - tx0);
    };
    // A first, alone: in splice mode it takes the only pipe, and keeps it full.
    UniqueFd clientA, upstreamA;
    open(clientA, upstreamA);
    fillUntilStuck(clientA);
    CHECK(stat(Stat::copy_bytes) == 0);  // A spliced: the pipe is A's
    // Then C: no pipe left, so it copies, and keeps the only buffer.
    UniqueFd clientC, upstreamC;
    open(clientC, upstreamC);
    fillUntilStuck(clientC);
    CHECK(stat(Stat::pipe_unavailable) > 0 && stat(Stat::copy_bytes) > 0);
    // B finds neither and waits.
    UniqueFd clientB, upstreamB;
    open(clientB, upstreamB);
    const uint64_t unavailable = stat(Stat::buffer_unavailable);
    CHECK(writeAll(clientB.get(), "hello", 5));
    CHECK(runUntil(*core, [&] { return stat(Stat::buffer_unavailable) > unavailable; }));
    const uint64_t spliced = stat(Stat::splice_bytes), copied = stat(Stat::copy_bytes);
    // A's client resets: A's pipe, still full, is destroyed rather than pooled. C still holds the
    // buffer, so only a new pipe can serve B.
    linger lg{1, 0};
    ::setsockopt(clientA.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    clientA.reset();
    std::string gotB;
    CHECK(runUntil(*core, [&] {
      char buf[16];
      const ssize_t n = ::recv(upstreamB.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) gotB.append(buf, static_cast<size_t>(n));
      return gotB.size() >= 5;
    }));
    CHECK(gotB == "hello");
    // The client's reset reached A's upstream as a reset, though nothing was read from A since.
    std::string sink(65536, '\0');
    pollfd p{upstreamA.get(), POLLIN, 0};
    CHECK(::poll(&p, 1, 5000) == 1);
    ssize_t n;
    while ((n = ::recv(upstreamA.get(), sink.data(), sink.size(), MSG_DONTWAIT)) > 0) {
    }
    CHECK(n < 0 && errno == ECONNRESET);
    CHECK(stat(Stat::splice_bytes) == spliced + 5);  // through a new pipe...
    CHECK(stat(Stat::copy_bytes) == copied);         // ...not C's buffer, which it still holds
  });
}

// relay_budget: how long one busy connection holds the loop.
void budgetTests() {
  run("under a small relay budget a bulk direction moves about one budget per wakeup and still ends without more events, both ways", [] {
    // relay_budget: a connection with much to move yields after its budget and resumes after the
    // other connections (the ready queue), so one bulk transfer cannot hold the loop. Resuming must
    // not depend on another event: once the sender stops, nothing else wakes the connection.
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    SocketAddress listenAddr;
    SysError err;
    UniqueFd shared = openListenSocket(loopbackListener(), &listenAddr, err);
    CHECK(shared);
    CoreOptions options;
    options.relayMode = CoreOptions::RelayMode::kCopy;
    options.copyBufferSize = 4096;
    options.relayBudgetBytes = 4096;
    auto core = makeCore(serverAddr, options);
    CHECK(!core->attachListener(loopbackListener(), shared.get(), nullptr));
    auto stat = [&](Stat s) { return core->stats().get(s); };
    UniqueFd client = connectClient(listenAddr);
    CHECK(runUntil(*core, [&] { return stat(Stat::upstream_cx_total) == 1; }));
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(upstream);
    char c;
    CHECK(writeAll(client.get(), "?", 1));  // relaying once this byte went through
    CHECK(runUntil(*core, [&] { return ::recv(upstream.get(), &c, 1, MSG_DONTWAIT) == 1; }));
    const std::string chunk(65536, 'b');
    for (const bool toUpstream : {true, false}) {
      const int from = toUpstream ? client.get() : upstream.get();
      const int to = toUpstream ? upstream.get() : client.get();
      const Stat delivered = toUpstream ? Stat::upstream_cx_tx_bytes_total : Stat::bytes_sent;
      // Queued while the core does not run: the proxy finds it all at its next wakeup.
      size_t queued = 0;
      ssize_t n;
      while ((n = ::send(from, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL)) > 0) queued += static_cast<size_t>(n);
      CHECK(queued > 64 * 1024);
      const uint64_t start = stat(delivered);
      uint64_t most = 0;
      size_t got = 0;
      std::string sink(65536, '\0');
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);  // liveness only
      while (got < queued && std::chrono::steady_clock::now() < deadline) {
        const uint64_t before = stat(delivered);
        core->runOnce(10);
        most = std::max<uint64_t>(most, stat(delivered) - before);
        while ((n = ::recv(to, sink.data(), sink.size(), MSG_DONTWAIT)) > 0) got += static_cast<size_t>(n);
      }
      CHECK_EQ(got, queued);  // all of it, with nothing sent after it
      CHECK_EQ(stat(delivered) - start, queued);
      // A wakeup relays the connection at most three times (an event of each socket, then the
      // ready queue), each time one budget and at most one copy buffer more.
      CHECK(most <= 6 * 4096);
    }
  });
}

// --- what the loop thread shares with other threads (ThreadSanitizer checks these) ------------

void threadSharingTests() {
  run("post() and counter reads from other threads while the loop relays", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr);
    const std::string up = pattern((4 << 20) / kBulkDivisor, 7);
    std::string got;
    std::thread srv([&] {
      UniqueFd c(::accept(server.get(), nullptr, nullptr));
      readAll(c.get(), got);
    });
    constexpr int kPosts = 2000;
    int ranOnLoop = 0;  // touched by the loop thread only, read here after the gate below
    std::thread poster([&] {
      for (int i = 0; i < kPosts; ++i) {
        proxy.thread->post([&ranOnLoop](WorkerCore& core) {
          ++ranOnLoop;
          (void)core.activeConnections();
        });
      }
    });
    std::atomic<bool> stop{false};
    bool monotonic = true;
    std::atomic<uint64_t> snapshots{0};
    std::thread reader([&] {
      uint64_t last = 0;
      while (!stop.load()) {
        uint64_t sum = 0;
        for (size_t s = 0; s < Stats::size(); ++s) sum += proxy.thread->stats().get(static_cast<Stat>(s));
        (void)sum;
        const uint64_t now = proxy.stat(Stat::bytes_received);
        if (now < last) monotonic = false;
        last = now;
        ++snapshots;
      }
    });
    // The reads must overlap the relay: on a loaded machine the reader may otherwise first run
    // after it is over (and then never, once `stop` is set).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);  // liveness only
    while (snapshots.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    CHECK(snapshots.load() > 0);
    UniqueFd client = connectClient(proxy.listenAddr);
    CHECK(writeAll(client.get(), up.data(), up.size()));
    ::shutdown(client.get(), SHUT_WR);
    srv.join();
    poster.join();
    { LoopGate sync(*proxy.thread); }  // everything posted before it has run
    stop = true;
    reader.join();
    CHECK(ranOnLoop == kPosts);
    CHECK(got == up);
    CHECK(proxy.stat(Stat::bytes_received) == up.size());
    CHECK(monotonic);
  });
}


// --- listening sockets shared by workers -------------------------------------------------------

bool stillListening(int fd) {
  int v = 0;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v == 1;
}

// The lowest free fd number: the next fd the process gets.
int lowestFreeFd() {
  const int fd = ::dup(0);
  ::close(fd);
  return fd;
}

void listenerTests() {
  run("a second listen socket on a bound address fails with EADDRINUSE naming it", [] {
    SocketAddress bound;
    SysError err;
    UniqueFd first = openListenSocket(loopbackListener(), &bound, err);
    CHECK(first && !err);
    ListenerOptions again = loopbackListener();
    again.address = bound;
    SysError err2;
    UniqueFd second = openListenSocket(again, nullptr, err2);
    CHECK(!second);
    CHECK(err2.err == EADDRINUSE);
    CHECK(std::string(err2.syscall) == "bind");
    CHECK(err2.context.find(bound.toString()) != std::string::npos);
  });
  run("adopt takes over a passed listening socket as is: same fd, non-blocking, close-on-exec", [] {
    // What systemd passes: a blocking, inheritable socket it bound and listens on.
    UniqueFd passed(::socket(AF_INET, SOCK_STREAM, 0));
    ListenerOptions lo = loopbackListener();
    CHECK(::bind(passed.get(), lo.address.sockaddrPtr(), lo.address.length()) == 0);
    CHECK(::listen(passed.get(), 8) == 0);
    socklen_t len = SocketAddress::capacity();
    CHECK(::getsockname(passed.get(), lo.address.sockaddrPtr(), &len) == 0);
    UniqueFd client = connectClient(lo.address);  // queued before the takeover
    const int number = passed.get();
    SocketAddress bound;
    SysError err;
    UniqueFd adopted = adoptListenSocket(number, lo, &bound, err);
    CHECK(adopted && !err);
    (void)passed.release();  // owned by `adopted` now
    CHECK(adopted.get() == number);
    CHECK(bound == lo.address);
    CHECK((::fcntl(number, F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(number, F_GETFD) & FD_CLOEXEC) != 0);
    SocketInfo info;
    CHECK(!inspectSocket(number, info));
    CHECK(info.type == SOCK_STREAM && info.family == AF_INET && info.listening && info.local == lo.address);
    // The connection queued before the takeover is still there.
    UniqueFd accepted(::accept4(number, nullptr, nullptr, SOCK_CLOEXEC));
    CHECK(accepted);
  });
  run("adopt refuses a passed fd that does not fit the listener and leaves it open", [] {
    SysError err;
    ListenerOptions lo = loopbackListener();
    UniqueFd notListening(::socket(AF_INET, SOCK_STREAM, 0));
    CHECK(!adoptListenSocket(notListening.get(), lo, nullptr, err));
    CHECK(err.err == EINVAL && err.context.find("not listening") != std::string::npos);
    CHECK(::fcntl(notListening.get(), F_GETFD) >= 0);  // still the caller's
    UniqueFd udp(::socket(AF_INET, SOCK_DGRAM, 0));
    err = {};
    CHECK(!adoptListenSocket(udp.get(), lo, nullptr, err));
    CHECK(err.context.find("not a stream socket") != std::string::npos);
    SocketAddress other;
    UniqueFd elsewhere = openListenSocket(lo, &other, err);
    CHECK(elsewhere);
    ListenerOptions wrongPort = lo;
    wrongPort.address = addr("127.0.0.1", static_cast<uint16_t>(other.port() == 65535 ? 65534 : other.port() + 1));
    err = {};
    CHECK(!adoptListenSocket(elsewhere.get(), wrongPort, nullptr, err));
    CHECK(err.context.find("bound to " + other.toString()) != std::string::npos);
    // Dual-stack IPv6 (systemd's default BindIPv6Only=both) is refused.
    UniqueFd dual(::socket(AF_INET6, SOCK_STREAM, 0));
    int off = 0;
    CHECK(::setsockopt(dual.get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) == 0);
    ListenerOptions six = lo;
    six.address = addr("::", 0);  // a specific IPv6 address is IPv6-only whatever the option says
    CHECK(::bind(dual.get(), six.address.sockaddrPtr(), six.address.length()) == 0 && ::listen(dual.get(), 8) == 0);
    socklen_t len = SocketAddress::capacity();
    CHECK(::getsockname(dual.get(), six.address.sockaddrPtr(), &len) == 0);
    err = {};
    CHECK(!adoptListenSocket(dual.get(), six, nullptr, err));
    CHECK(err.context.find("not IPv6-only") != std::string::npos);
    // A closed fd number.
    const int closedNumber = notListening.get();
    notListening.reset();
    SocketInfo info;
    CHECK(inspectSocket(closedNumber, info).err == EBADF);
    CHECK(inspectSocket(STDIN_FILENO, info).err == ENOTSOCK || inspectSocket(STDIN_FILENO, info).err == EBADF);
  });
  run("attach refuses an fd that is not a listening socket", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    auto core = makeCore(serverAddr);
    UniqueFd notListening(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    SysError err = core->attachListener(loopbackListener(), notListening.get(), nullptr);
    CHECK(err);
    CHECK(err.err == EBADF);
    CHECK(core->listenerCount() == 0);
  });
  run("a worker that stops and goes away loses no queued connection: another worker accepts it", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    SocketAddress listenAddr;
    SysError err;
    UniqueFd shared = openListenSocket(loopbackListener(), &listenAddr, err);
    CHECK(shared);
    auto a = makeCore(serverAddr);
    auto b = makeCore(serverAddr);
    CHECK(!a->attachListener(loopbackListener(), shared.get(), nullptr));
    CHECK(!b->attachListener(loopbackListener(), shared.get(), nullptr));
    // Three connections complete their handshake into the one accept queue; nobody accepted yet.
    UniqueFd c1 = connectClient(listenAddr), c2 = connectClient(listenAddr), c3 = connectClient(listenAddr);
    a->stopAccepting();
    a->runOnce(0);
    CHECK(a->stats().get(Stat::downstream_cx_total) == 0);
    a.reset();  // the worker is gone with its dup; the process's socket must still listen
    CHECK(stillListening(shared.get()));
    CHECK(runUntil(*b, [&] { return b->stats().get(Stat::downstream_cx_total) == 3; }));
    CHECK(b->stats().get(Stat::downstream_cx_accept_error) == 0);
  });
  run("max_downstream_connections: a full worker leaves clients queued for workers with room, then takes them back",
      [] {
        SocketAddress serverAddr;
        UniqueFd server = listenOn(serverAddr, 256);
        SocketAddress listenAddr;
        SysError err;
        UniqueFd shared = openListenSocket(loopbackListener(), &listenAddr, err);
        CHECK(shared);
        CoreOptions small;
        small.maxDownstreamConnections = 1;
        CoreOptions roomy;
        roomy.maxDownstreamConnections = 3;
        auto a = makeCore(serverAddr, small);
        auto b = makeCore(serverAddr, roomy);
        CHECK(!a->attachListener(loopbackListener(), shared.get(), nullptr));
        CHECK(!b->attachListener(loopbackListener(), shared.get(), nullptr));
        UniqueFd c1 = connectClient(listenAddr);
        CHECK(runUntil(*a, [&] { return a->activeConnections() == 1; }));
        CHECK(a->stats().get(Stat::downstream_cx_overflow) == 1);  // full: a left the socket
        UniqueFd c2 = connectClient(listenAddr), c3 = connectClient(listenAddr), c4 = connectClient(listenAddr);
        for (int i = 0; i < 4; ++i) a->runOnce(60);  // ticks included: a full worker takes nothing
        CHECK(a->stats().get(Stat::downstream_cx_total) == 1);
        CHECK(runUntil(*b, [&] { return b->activeConnections() == 3; }));
        // Everyone full: the next client waits in the backlog, refused by no one...
        UniqueFd c5 = connectClient(listenAddr);
        for (int i = 0; i < 4; ++i) {
          a->runOnce(60);
          b->runOnce(0);
        }
        CHECK(a->stats().get(Stat::downstream_cx_total) + b->stats().get(Stat::downstream_cx_total) == 4);
        // ...until a connection of a closes (reset by its client): a rejoins at its tick, takes c5.
        linger lg{1, 0};
        ::setsockopt(c1.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        c1.reset();
        CHECK(runUntil(*a, [&] { return a->stats().get(Stat::downstream_cx_total) == 2 && a->activeConnections() == 1; }));
        CHECK(b->stats().get(Stat::downstream_cx_total) == 3);
      });
  run("stopAccepting inside a batch: a later event of that batch for the listener is ignored, not a use-after-free",
      [] {
        SocketAddress serverAddr;
        UniqueFd server = listenOn(serverAddr);
        SocketAddress listenAddr;
        SysError err;
        UniqueFd shared = openListenSocket(loopbackListener(), &listenAddr, err);
        CHECK(shared);
        auto core = makeCore(serverAddr);
        CHECK(!core->attachListener(loopbackListener(), shared.get(), nullptr));
        WorkerCore* raw = core.get();
        // As the addon posts them: drain commands run from the wake (kick) handler, mid-batch.
        core->setWakeHandler([raw] {
          raw->stopAccepting();
          raw->closeAllConnections(CloseReason::kDrained);
        });
        core->wake();                         // the kick is readied first...
        UniqueFd client = connectClient(listenAddr);  // ...then the listener: later in the same batch
        CHECK(core->loop().waitAndDispatch(0) >= 2);
        core->runOnce(0);  // end of batch: the detached listener is freed here
        CHECK(core->listenerCount() == 0);
        CHECK(core->stats().get(Stat::downstream_cx_total) == 0);
        CHECK(core->stats().get(Stat::downstream_cx_accept_error) == 0);
        // Not accepted by the stopped worker, so still queued on the process's socket.
        UniqueFd queued(::accept4(shared.get(), nullptr, nullptr, SOCK_CLOEXEC));
        CHECK(queued);
      });
  run("out of fds: accepting pauses without spinning and resumes when fds are free again", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    SocketAddress listenAddr;
    SysError err;
    UniqueFd shared = openListenSocket(loopbackListener(), &listenAddr, err);
    CHECK(shared);
    auto core = makeCore(serverAddr);
    CHECK(!core->attachListener(loopbackListener(), shared.get(), nullptr));
    UniqueFd client = connectClient(listenAddr);
    {
      NofileLimit limit(static_cast<rlim_t>(lowestFreeFd()));  // the next accept4 gets EMFILE
      core->loop().waitAndDispatch(0);
      CHECK(core->stats().get(Stat::downstream_cx_accept_paused) == 1);
      // Paused: the level-triggered listener must not be reported again (EPOLL_CTL_MOD is refused
      // on EPOLLEXCLUSIVE registrations, so pause has to leave the epoll).
      core->loop().waitAndDispatch(0);
      core->loop().waitAndDispatch(0);
      CHECK(core->stats().get(Stat::downstream_cx_accept_paused) == 1);
      CHECK(core->stats().get(Stat::downstream_cx_total) == 0);
    }
    // Limit restored: the next housekeeping tick resumes and the queued client is accepted.
    CHECK(runUntil(*core, [&] { return core->stats().get(Stat::downstream_cx_total) == 1; }));
    CHECK(core->stats().get(Stat::downstream_cx_accept_paused) == 1);
  });
}


// --- per-listener counters ----------------------------------------------------------------------

// One worker's counter `stat` for the listener called `name` (-1: no such listener).
int64_t listenerStat(const WorkerCore& core, const std::string& name, ListenerStat stat) {
  for (size_t i = 0; i < core.listenerNames().size(); ++i) {
    if (core.listenerNames()[i] == name) return static_cast<int64_t>(core.listenerStats()[i]->get(stat));
  }
  return -1;
}

// Every per-listener counter summed over the listeners equals the worker's counter of that name
// (policy_denied: the merged policy counter).
void checkListenerSums(const WorkerCore& core) {
  for (size_t s = 0; s < ListenerStats::size(); ++s) {
    uint64_t sum = 0;
    for (const auto& ls : core.listenerStats()) sum += ls->get(static_cast<ListenerStat>(s));
    const std::string name = kListenerStatNames[s];
    double worker = -1;
    if (name == "policy_denied") {
      worker = core.policies().empty() ? 0 : policyCounter(core, name);  // no policy: none denied
    } else {
      for (size_t i = 0; i < Stats::size(); ++i) {
        if (name == kStatNames[i]) worker = static_cast<double>(core.stats().get(static_cast<Stat>(i)));
      }
    }
    CHECK_EQ(static_cast<double>(sum), worker);
  }
}

// A listener named `name` with this policy on 127.0.0.1 (ephemeral port), attached to core.
struct TestListener {
  ListenerOptions options;
  UniqueFd socket;
  SocketAddress address;
  TestListener(WorkerCore& core, const char* name, uint32_t policy) {
    options = loopbackListener();
    options.name = name;
    options.policy = policy;
    SysError err;
    socket = openListenSocket(options, &address, err);
    CHECK(socket);
    CHECK(!core.attachListener(options, socket.get(), nullptr));
  }
};

void listenerStatsTests() {
  run("per-listener counters: each listener counts its own accepts, active, policy denies and overflow", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.maxDownstreamConnections = 3;
    const std::vector<PortRange> serverPort = {{serverAddr.port(), serverAddr.port()}};
    options.policies = {policyOf({}, false), policyOf({ruleOf("deny-server", false, "127.0.0.1/32", serverPort)}, false)};
    auto core = makeCore(serverAddr, options);
    TestListener relaying(*core, "relaying", 0);
    TestListener denying(*core, "denying", 1);
    CHECK(core->listenerNames().size() == 2);
    CHECK(core->listenerStats().size() == 2);

    // Two clients of the denying listener: reset at once, counted there only.
    UniqueFd d1 = connectClient(denying.address), d2 = connectClient(denying.address);
    CHECK(runUntil(*core, [&] { return listenerStat(*core, "denying", ListenerStat::policy_denied) == 2; }));
    CHECK_EQ(listenerStat(*core, "denying", ListenerStat::downstream_cx_total), 2);
    CHECK_EQ(listenerStat(*core, "denying", ListenerStat::downstream_cx_active), 0);
    CHECK_EQ(listenerStat(*core, "relaying", ListenerStat::downstream_cx_total), 0);

    // Three relayed clients fill the worker (max 3): the relaying listener counts them and, as it
    // leaves the socket to other workers, the overflow.
    UniqueFd r1 = connectClient(relaying.address), r2 = connectClient(relaying.address), r3 = connectClient(relaying.address);
    CHECK(runUntil(*core, [&] { return listenerStat(*core, "relaying", ListenerStat::downstream_cx_active) == 3; }));
    CHECK_EQ(listenerStat(*core, "relaying", ListenerStat::downstream_cx_total), 3);
    CHECK_EQ(listenerStat(*core, "relaying", ListenerStat::downstream_cx_overflow), 1);
    CHECK_EQ(listenerStat(*core, "relaying", ListenerStat::policy_denied), 0);
    // A third client of the denying listener finds the worker full: it waits in the backlog, and
    // the overflow is that listener's.
    UniqueFd d3 = connectClient(denying.address);
    CHECK(runUntil(*core, [&] { return listenerStat(*core, "denying", ListenerStat::downstream_cx_overflow) == 1; }));
    CHECK_EQ(listenerStat(*core, "denying", ListenerStat::downstream_cx_total), 2);
    checkListenerSums(*core);

    // The relayed clients reset: the relaying listener's gauge goes back to 0; the worker has room
    // again and the queued client is accepted (and denied) at the next tick.
    for (UniqueFd* r : {&r1, &r2, &r3}) {
      resetOnClose(r->get());  // the core's own helper: SO_LINGER {1, 0}
      r->reset();
    }
    CHECK(runUntil(*core, [&] {
      return listenerStat(*core, "relaying", ListenerStat::downstream_cx_active) == 0 &&
             listenerStat(*core, "denying", ListenerStat::policy_denied) == 3;
    }));
    CHECK_EQ(listenerStat(*core, "relaying", ListenerStat::downstream_cx_total), 3);
    CHECK_EQ(listenerStat(*core, "denying", ListenerStat::downstream_cx_total), 3);
    CHECK_EQ(core->stats().get(Stat::downstream_cx_total), 6);
    checkListenerSums(*core);

    // Counters stay after the listeners are left (a draining worker still reports them).
    core->stopAccepting();
    core->runOnce(0);
    CHECK(core->listenerCount() == 0);
    CHECK_EQ(listenerStat(*core, "relaying", ListenerStat::downstream_cx_total), 3);
    CHECK_EQ(listenerStat(*core, "denying", ListenerStat::downstream_cx_total), 3);
  });
  run("per-listener counters: loops and unredirected connections are counted on the listener that took them", [] {
    // The fake destination is the first listener's own address: a client of the second listener
    // would loop into the first.
    SysError err;
    ListenerOptions first = loopbackListener();
    first.name = "first";
    SocketAddress firstAddr;
    UniqueFd firstSocket = openListenSocket(first, &firstAddr, err);
    CHECK(firstSocket);
    auto core = makeCore(firstAddr);
    CHECK(!core->attachListener(first, firstSocket.get(), nullptr));
    TestListener second(*core, "second", 0);
    UniqueFd client = connectClient(second.address);
    CHECK(runUntil(*core, [&] { return listenerStat(*core, "second", ListenerStat::loop_rejected) == 1; }));
    CHECK(isReset(client.get()));
    CHECK_EQ(listenerStat(*core, "first", ListenerStat::loop_rejected), 0);
    CHECK_EQ(listenerStat(*core, "second", ListenerStat::downstream_cx_total), 1);
    checkListenerSums(*core);

    // Not redirected (no conntrack entry): counted on the listener dialled directly.
    auto ops = std::make_unique<FakeOps>();
    ops->originalRc = {-1, ENOENT};
    auto plain = WorkerCore::create(CoreOptions{}, std::move(ops), err);
    CHECK(plain);
    TestListener a(*plain, "a", 0), b(*plain, "b", 0);
    UniqueFd c1 = connectClient(b.address), c2 = connectClient(b.address), c3 = connectClient(a.address);
    CHECK(runUntil(*plain, [&] { return plain->stats().get(Stat::no_original_dst) == 3; }));
    CHECK_EQ(listenerStat(*plain, "a", ListenerStat::no_original_dst), 1);
    CHECK_EQ(listenerStat(*plain, "b", ListenerStat::no_original_dst), 2);
    checkListenerSums(*plain);
  });
}
}  // namespace

int main() {
  std::signal(SIGPIPE, SIG_IGN);
  originalDstTests();
  pipePoolTests();
  eventLoopTests();
  hostCacheTests();
  relayTests(CoreOptions::RelayMode::kAuto, "auto");
  relayTests(CoreOptions::RelayMode::kSplice, "splice");
  relayTests(CoreOptions::RelayMode::kCopy, "copy");
  failureTests();
  policyTests();
  fdExhaustionTests();
  lifecycleTests();
  bufferCapTests();
  autoModeFallbackTest();
  pipeReplacedTest();
  holderWaitTests();
  budgetTests();
  threadSharingTests();
  listenerTests();
  listenerStatsTests();
  return splicegate::testing::finish();
}
