// Unit tests for the Node-free core. The original-destination syscalls go through fakes; the relay
// runs on real loopback sockets with a LoopThread, the way the addon drives it. Plain asserts and a
// closing "N passed, N failed" line; ctest runs the binary.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "test_harness.h"
#include "../core/loop_thread.h"
#include "../core/host_cache.h"
#include "../core/original_dst.h"
#include "../core/pipe_pool.h"
#include "../core/socket_address.h"
#include "../core/worker_core.h"

using namespace splicegate;

namespace {

using splicegate::testing::run;

SocketAddress addr(const char* ip, uint16_t port) { return *SocketAddress::fromIp(ip, port); }

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
  bool isLocalIp(const SocketAddress& ip) override {
    ++isLocalCalls;
    for (auto& l : localIps) {
      if (ip.ipString() == l) return true;
    }
    return false;
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

// Every accepted connection "originally" went to `target`.
struct FixedDestinationOps : OriginalDstOps {
  SocketAddress target;
  SyscallResult originalDst(int, int, SocketAddress& out) override {
    out = target;
    return {0, 0};
  }
  SyscallResult localAddress(int fd, SocketAddress& out) override {
    socklen_t len = SocketAddress::capacity();
    return {::getsockname(fd, out.sockaddrPtr(), &len), 0};
  }
  bool isLocalIp(const SocketAddress&) override { return false; }
};

UniqueFd listenOn(SocketAddress& bound, int backlog = 64) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto a = addr("127.0.0.1", 0);
  CHECK(::bind(fd.get(), a.sockaddrPtr(), a.length()) == 0);
  CHECK(::listen(fd.get(), backlog) == 0);
  socklen_t len = SocketAddress::capacity();
  ::getsockname(fd.get(), bound.sockaddrPtr(), &len);
  return fd;
}

UniqueFd connectTo(const SocketAddress& a) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  CHECK(::connect(fd.get(), a.sockaddrPtr(), a.length()) == 0);
  return fd;
}

bool writeAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads until EOF (or timeout); returns false on error/timeout.
bool readAll(int fd, std::string& out, int timeoutMs = 10000) {
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0 || ::poll(&p, 1, left) <= 0) return false;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return false;
    out.append(buf, static_cast<size_t>(n));
  }
}

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
  // wait (bounded) for the value instead of reading it once.
  bool waitStat(Stat s, uint64_t want, int timeoutMs = 2000) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    while (stat(s) != want) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
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
    const std::string up = pattern(8 << 20, 1), down = pattern(6 << 20, 2);
    std::string gotUp, gotDown;
    std::thread srv([&] {
      UniqueFd c(::accept(server.get(), nullptr, nullptr));
      std::thread w([&] { writeAll(c.get(), down.data(), down.size()); ::shutdown(c.get(), SHUT_WR); });
      readAll(c.get(), gotUp);
      w.join();
    });
    UniqueFd client = connectTo(proxy.listenAddr);
    std::thread w([&] { writeAll(client.get(), up.data(), up.size()); ::shutdown(client.get(), SHUT_WR); });
    CHECK(readAll(client.get(), gotDown));
    w.join();
    srv.join();
    CHECK(gotUp == up);
    CHECK(gotDown == down);
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
    UniqueFd client = connectTo(proxy.listenAddr);
    const std::string req = pattern(100000, 3);
    writeAll(client.get(), req.data(), req.size());
    ::shutdown(client.get(), SHUT_WR);
    std::string answer;
    CHECK(readAll(client.get(), answer));
    srv.join();
    CHECK(answer == "got 100000");
  });
  run((std::string("slow reader: back-pressure loses nothing [") + label + "]").c_str(), [&] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr, options);
    const std::string down = pattern(4 << 20, 4);
    std::thread srv([&] {
      UniqueFd c(::accept(server.get(), nullptr, nullptr));
      writeAll(c.get(), down.data(), down.size());
    });
    UniqueFd client = connectTo(proxy.listenAddr);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let every buffer fill up
    std::string got;
    CHECK(readAll(client.get(), got));
    srv.join();
    CHECK(got == down);
  });
}

void failureTests() {
  run("refused upstream closes the client and counts connect_fail", [] {
    SocketAddress closed;
    { UniqueFd tmp = listenOn(closed); }  // bound then closed: nothing listens there now
    Proxy proxy(closed);
    UniqueFd client = connectTo(proxy.listenAddr);
    std::string got;
    CHECK(readAll(client.get(), got, 3000) || got.empty());
    CHECK(proxy.waitStat(Stat::upstream_cx_connect_fail, 1));
    CHECK(proxy.waitStat(Stat::downstream_cx_active, 0));
  });
  run("unanswered SYN times out after connect_timeout", [] {
    // A listener whose accept queue is full drops further SYNs: a black hole on loopback.
    SocketAddress holeAddr;
    UniqueFd hole = listenOn(holeAddr, 0);
    std::vector<UniqueFd> fillers;
    for (int i = 0; i < 4; ++i) {
      UniqueFd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ::connect(f.get(), holeAddr.sockaddrPtr(), holeAddr.length());
      fillers.push_back(std::move(f));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CoreOptions options;
    options.connectTimeoutMs = 300;
    Proxy proxy(holeAddr, options);
    const auto start = std::chrono::steady_clock::now();
    UniqueFd client = connectTo(proxy.listenAddr);
    std::string got;
    readAll(client.get(), got, 5000);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    CHECK(proxy.waitStat(Stat::upstream_cx_connect_timeout, 1));
    CHECK(ms >= 250);
  });
  run("client reset mid-stream resets the upstream", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr);
    UniqueFd client = connectTo(proxy.listenAddr);
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
}


// --- listening sockets shared by workers -------------------------------------------------------

// Runs the core's loop on this thread until pred holds (bounded); the tests below drive the core
// by hand so that they control what one epoll batch contains.
bool runUntil(WorkerCore& core, const std::function<bool()>& pred, int timeoutMs = 3000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    core.runOnce(20);
  }
  return true;
}

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

struct NofileLimit {
  rlimit saved{};
  explicit NofileLimit(rlim_t soft) {
    ::getrlimit(RLIMIT_NOFILE, &saved);
    rlimit lim = saved;
    lim.rlim_cur = soft;
    CHECK(::setrlimit(RLIMIT_NOFILE, &lim) == 0);
  }
  ~NofileLimit() { restore(); }
  void restore() { ::setrlimit(RLIMIT_NOFILE, &saved); }
};

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
    UniqueFd c1 = connectTo(listenAddr), c2 = connectTo(listenAddr), c3 = connectTo(listenAddr);
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
        UniqueFd c1 = connectTo(listenAddr);
        CHECK(runUntil(*a, [&] { return a->activeConnections() == 1; }));
        CHECK(a->stats().get(Stat::downstream_cx_overflow) == 1);  // full: a left the socket
        UniqueFd c2 = connectTo(listenAddr), c3 = connectTo(listenAddr), c4 = connectTo(listenAddr);
        for (int i = 0; i < 4; ++i) a->runOnce(60);  // ticks included: a full worker takes nothing
        CHECK(a->stats().get(Stat::downstream_cx_total) == 1);
        CHECK(runUntil(*b, [&] { return b->activeConnections() == 3; }));
        // Everyone full: the next client waits in the backlog, refused by no one...
        UniqueFd c5 = connectTo(listenAddr);
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
        UniqueFd client = connectTo(listenAddr);  // ...then the listener: later in the same batch
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
    UniqueFd client = connectTo(listenAddr);
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

}  // namespace

int main() {
  std::signal(SIGPIPE, SIG_IGN);
  originalDstTests();
  pipePoolTests();
  hostCacheTests();
  relayTests(CoreOptions::RelayMode::kAuto, "auto");
  relayTests(CoreOptions::RelayMode::kSplice, "splice");
  relayTests(CoreOptions::RelayMode::kCopy, "copy");
  failureTests();
  listenerTests();
  return splicegate::testing::finish();
}
