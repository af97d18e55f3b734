// How relayed streams end, and loops back into ourselves. Every abnormal end must reach the peer as
// a TCP reset and only a complete stream ends with FIN; an upstream connect that comes back to one
// of our own listeners (any worker's) is refused at once; "is this IP local" fails closed. Real
// loopback sockets and LoopThreads, original-destination syscalls through the OriginalDstOps seam.
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "loopback.h"
#include "test_harness.h"
#include "../core/loop_thread.h"
#include "../core/original_dst.h"
#include "../core/own_sockets.h"
#include "../core/worker_core.h"

using namespace splicegate;

namespace {

using namespace splicegate::testing;


// The first IPv4 address of an interface other than loopback (getifaddrs), or AF_UNSPEC.
SocketAddress firstInterfaceIpv4() {
  SocketAddress out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK)) continue;
    out = SocketAddress::fromSockaddr(i->ifa_addr, sizeof(sockaddr_in));
    break;
  }
  ::freeifaddrs(list);
  return out;
}

// Original destinations as the kernel would report them, minus iptables:
//   kFixed: every connection was "redirected" from `target`;
//   kSelf:  conntrack without NAT reports the connection's own local address (what a connection
//           redirected by REDIRECT to the port it already asked for looks like);
//   kNone:  no conntrack entry (dialled directly).
// isLocalIp answers `local`, so the listener-address guard can be kept out of the way (kNo) to
// show what the own-socket check alone does.
struct LabOps : OriginalDstOps {
  enum class Mode { kFixed, kSelf, kNone } mode = Mode::kFixed;
  SocketAddress target;
  LocalIp local = LocalIp::kNo;
  SyscallResult originalDst(int fd, int, SocketAddress& out) override {
    if (mode == Mode::kNone) return {-1, ENOENT};
    if (mode == Mode::kSelf) return localAddress(fd, out);
    out = target;
    return {0, 0};
  }
  SyscallResult localAddress(int fd, SocketAddress& out) override {
    socklen_t len = SocketAddress::capacity();
    const int rc = ::getsockname(fd, out.sockaddrPtr(), &len);
    return {rc, rc < 0 ? errno : 0};
  }
  LocalIp isLocalIp(const SocketAddress&) override { return local; }
  SyscallResult peerAddress(int fd, SocketAddress& out) override {
    socklen_t len = SocketAddress::capacity();
    const int rc = ::getpeername(fd, out.sockaddrPtr(), &len);
    return {rc, rc < 0 ? errno : 0};
  }
};

#define CHECK_END(got, want)                                                                       \
  do {                                                                                             \
    const End g_ = (got);                                                                          \
    if (g_ != (want)) std::fprintf(stderr, "  stream ended with %s, want %s\n", endName(g_), endName(want)); \
    CHECK(g_ == (want));                                                                           \
  } while (0)

struct Proxy {
  UniqueFd listenSocket;  // the process's socket (declared first: outlives the worker, as in the addon)
  std::unique_ptr<LoopThread> thread;
  SocketAddress listenAddr;
  // forPort: adjusts the options once the listener's port is known (e.g. preconnect to it).
  Proxy(std::unique_ptr<LabOps> ops, CoreOptions options = {}, const char* listenIp = "127.0.0.1",
        bool startNow = true, const std::function<void(CoreOptions&, uint16_t)>& forPort = nullptr) {
    SysError err;
    ListenerOptions lo;
    lo.name = "test";
    lo.address = addr(listenIp, 0);
    listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    if (forPort) forPort(options, listenAddr.port());
    auto core = WorkerCore::create(options, std::move(ops), err);
    CHECK(core);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
    thread = std::make_unique<LoopThread>(std::move(core));
    if (startNow) thread->start();  // else the kernel queues connections on the listener meanwhile
  }
  uint64_t stat(Stat s) const { return thread->stats().get(s); }
  // Counters move on the loop thread just after it closes the sockets a test watches: wait for
  // the value (bounded) instead of reading it once.
  bool waitStat(Stat s, uint64_t want, int timeoutMs = 3000) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    while (stat(s) != want) {
      if (std::chrono::steady_clock::now() > deadline) {
        std::fprintf(stderr, "  %s is %llu, want %llu\n", kStatNames[static_cast<size_t>(s)],
                     static_cast<unsigned long long>(stat(s)), static_cast<unsigned long long>(want));
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
};

std::unique_ptr<LabOps> fixedOps(const SocketAddress& target) {
  auto ops = std::make_unique<LabOps>();
  ops->target = target;
  return ops;
}

std::unique_ptr<LabOps> selfOps() {
  auto ops = std::make_unique<LabOps>();
  ops->mode = LabOps::Mode::kSelf;
  return ops;
}

// Waits (bounded) until the process's own-socket registry does (or no longer does) hold the
// upstream socket whose local address is `local`, connected to `remote`. The loop thread records a
// socket just after its connect() returns, which on loopback may be after the server accepted it.
bool waitOwned(const SocketAddress& local, const SocketAddress& remote, bool want, int timeoutMs = 3000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (OwnSockets::process().contains(local, remote) != want) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "  %s -> %s is %sin the own-socket registry\n", local.toString().c_str(),
                   remote.toString().c_str(), want ? "not " : "");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

SocketAddress peerOf(int fd) {
  SocketAddress a;
  socklen_t len = SocketAddress::capacity();
  CHECK(::getpeername(fd, a.sockaddrPtr(), &len) == 0);
  return a;
}

// --- how streams end ----------------------------------------------------------------------------

void endTests() {
  run("refused upstream connect resets the client (no empty clean answer)", [] {
    SocketAddress closed;
    { UniqueFd tmp = listenOn(closed); }  // bound then closed: nothing listens there now
    Proxy proxy(fixedOps(closed));
    UniqueFd client = connectClient(proxy.listenAddr);
    std::string got;
    CHECK_END(readToEnd(client.get(), got), End::kReset);
    CHECK(got.empty());
    CHECK(proxy.waitStat(Stat::upstream_cx_connect_fail, 1));
    CHECK(proxy.waitStat(Stat::downstream_cx_active, 0));
  });

  run("upstream connect timeout resets the client after connect_timeout", [] {
    // A listener whose accept queue is full drops further SYNs: a black hole on loopback.
    SocketAddress holeAddr;
    UniqueFd hole = listenOn(holeAddr, 0);
    std::vector<UniqueFd> fillers;
    for (int i = 0; i < 4; ++i) {
      UniqueFd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ::connect(f.get(), holeAddr.sockaddrPtr(), holeAddr.length());
      fillers.push_back(std::move(f));
    }
    CoreOptions options;
    options.connectTimeoutMs = 300;
    Proxy proxy(fixedOps(holeAddr), options);
    const auto start = std::chrono::steady_clock::now();
    UniqueFd client = connectClient(proxy.listenAddr);
    std::string got;
    CHECK_END(readToEnd(client.get(), got), End::kReset);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    CHECK(got.empty());
    CHECK(ms >= 250);  // not before connect_timeout
    CHECK(proxy.waitStat(Stat::upstream_cx_connect_timeout, 1));
  });

  run("a client that resets while its upstream connect is unanswered ends the attempt at once, counted as the client's", [] {
    SocketAddress holeAddr;
    UniqueFd hole = listenOn(holeAddr, 0);  // a full accept queue drops further SYNs
    std::vector<UniqueFd> fillers;
    for (int i = 0; i < 4; ++i) {
      UniqueFd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ::connect(f.get(), holeAddr.sockaddrPtr(), holeAddr.length());
      fillers.push_back(std::move(f));
    }
    CoreOptions options;
    options.connectTimeoutMs = 60000;  // far beyond this test: only the client's reset ends it
    Proxy proxy(fixedOps(holeAddr), options);
    UniqueFd client = connectClient(proxy.listenAddr);
    CHECK(proxy.waitStat(Stat::upstream_cx_total, 1));
    resetOnClose(client.get());
    client.reset();  // RST
    CHECK(proxy.waitStat(Stat::downstream_cx_active, 0));
    CHECK(proxy.waitStat(Stat::upstream_cx_active, 0));
    CHECK_EQ(proxy.stat(Stat::downstream_cx_destroy_remote), 1u);
    CHECK_EQ(proxy.stat(Stat::upstream_cx_connect_timeout), 0u);
  });

  run("idle timeout mid-stream resets the client: a partial read is never a clean EOF", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.idleTimeoutMs = 200;  // swept once a second
    Proxy proxy(fixedOps(serverAddr), options);
    const std::string body(8 << 20, 'x');  // far more than every buffer on the path holds
    UniqueFd client = connectClient(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(upstream);
    std::thread srv([&] { writeAll(upstream.get(), body.data(), body.size()); });
    // The client reads nothing until the proxy gave up on the stalled stream.
    const bool timedOut = proxy.waitStat(Stat::cx_idle_timeout, 1, 10000);
    std::string got;
    const End end = readToEnd(client.get(), got);
    ::shutdown(upstream.get(), SHUT_RDWR);  // ends the server's write whatever happened above
    srv.join();
    CHECK(timedOut);
    CHECK_END(end, End::kReset);
    CHECK(got.size() < body.size());
  });

  run("a stream that keeps moving bytes outlives idle_timeout; an idle one beside it does not", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    // Swept once a second. A second, not less: the busy stream is only busy while this thread
    // gets the CPU every 50 ms, and a loaded machine can hold it back for a few hundred.
    options.idleTimeoutMs = 1000;
    Proxy proxy(fixedOps(serverAddr), options);
    UniqueFd busy = connectClient(proxy.listenAddr);
    UniqueFd busyUp(::accept(server.get(), nullptr, nullptr));
    UniqueFd idle = connectClient(proxy.listenAddr);
    UniqueFd idleUp(::accept(server.get(), nullptr, nullptr));
    CHECK(busyUp && idleUp);
    // A byte every 50 ms on one connection until the sweep cuts the other: that sweep judged both,
    // the busy one idle for less than 50 ms.
    char c;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);  // liveness only
    while (proxy.stat(Stat::cx_idle_timeout) == 0 && std::chrono::steady_clock::now() < deadline) {
      CHECK(writeAll(busy.get(), "x", 1));
      CHECK(::recv(busyUp.get(), &c, 1, MSG_WAITALL) == 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::string rest;
    CHECK_END(readToEnd(idle.get(), rest), End::kReset);
    CHECK(writeAll(busy.get(), "y", 1));  // the busy one still relays...
    CHECK(::recv(busyUp.get(), &c, 1, MSG_WAITALL) == 1 && c == 'y');
    ::shutdown(busy.get(), SHUT_WR);  // ...and ends whole
    ::shutdown(busyUp.get(), SHUT_WR);
    CHECK_END(readToEnd(busyUp.get(), rest), End::kEof);
    CHECK_END(readToEnd(busy.get(), rest), End::kEof);
    CHECK_EQ(proxy.stat(Stat::cx_idle_timeout), 1u);
  });

  run("upstream reset mid-stream resets the client after the bytes sent before it", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(fixedOps(serverAddr));
    UniqueFd client = connectClient(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(upstream);
    const std::string before = "before the cut\n";
    CHECK(writeAll(upstream.get(), before.data(), before.size()));
    char buf[64];
    CHECK(::recv(client.get(), buf, before.size(), MSG_WAITALL) == static_cast<ssize_t>(before.size()));
    resetOnClose(upstream.get());
    upstream.reset();  // RST
    std::string got;
    CHECK_END(readToEnd(client.get(), got), End::kReset);
    CHECK(got.empty());
    CHECK(proxy.waitStat(Stat::upstream_cx_destroy_remote, 1));
  });

  run("a complete stream still ends with FIN both ways", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(fixedOps(serverAddr));
    UniqueFd client = connectClient(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(writeAll(upstream.get(), "answer", 6));
    ::shutdown(upstream.get(), SHUT_WR);
    ::shutdown(client.get(), SHUT_WR);
    std::string up, down;
    CHECK_END(readToEnd(upstream.get(), up), End::kEof);
    CHECK_END(readToEnd(client.get(), down), End::kEof);
    CHECK(down == "answer");
  });

  // A half-close is part of a complete stream: each direction's FIN is passed on once its bytes
  // are delivered, the other direction keeps flowing, and the stream ends with FIN both ways. The
  // client's request and FIN may come before the upstream connect completes (they wait for it).
  for (const CoreOptions::RelayMode mode :
       {CoreOptions::RelayMode::kCopy, CoreOptions::RelayMode::kSplice, CoreOptions::RelayMode::kAuto}) {
    const std::string name = std::string("half-close either way first: the rest of the other direction and both FINs go through (") +
                             (mode == CoreOptions::RelayMode::kCopy ? "copy" : mode == CoreOptions::RelayMode::kSplice ? "splice" : "auto") + ")";
    run(name.c_str(), [mode] {
      SocketAddress serverAddr;
      UniqueFd server = listenOn(serverAddr);
      CoreOptions options;
      options.relayMode = mode;
      Proxy proxy(fixedOps(serverAddr), options);
      std::string big(3 << 20, '\0');
      for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 23);
      // 1. The client says everything and half-closes at once; the server answers after the EOF.
      {
        UniqueFd client = connectClient(proxy.listenAddr);
        CHECK(writeAll(client.get(), "request", 7));
        ::shutdown(client.get(), SHUT_WR);
        UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
        std::string up, down;
        CHECK_END(readToEnd(upstream.get(), up), End::kEof);
        CHECK(up == "request");
        std::thread w([&] { writeAll(upstream.get(), big.data(), big.size()); ::shutdown(upstream.get(), SHUT_WR); });
        CHECK_END(readToEnd(client.get(), down), End::kEof);
        w.join();
        CHECK(down == big);
      }
      // 2. The server half-closes first; the client goes on sending, then half-closes.
      {
        UniqueFd client = connectClient(proxy.listenAddr);
        UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
        CHECK(writeAll(upstream.get(), "banner", 6));
        ::shutdown(upstream.get(), SHUT_WR);
        std::string up, down;
        CHECK_END(readToEnd(client.get(), down), End::kEof);
        CHECK(down == "banner");
        std::thread w([&] { writeAll(client.get(), big.data(), big.size()); ::shutdown(client.get(), SHUT_WR); });
        CHECK_END(readToEnd(upstream.get(), up), End::kEof);
        w.join();
        CHECK(up == big);
      }
      CHECK(proxy.waitStat(Stat::cx_close_completed, 2));
    });
  }

  run("a connection with no original destination is refused with a reset", [] {
    auto ops = std::make_unique<LabOps>();
    ops->mode = LabOps::Mode::kNone;
    Proxy proxy(std::move(ops));
    UniqueFd client = connectClient(proxy.listenAddr);
    std::string got;
    CHECK_END(readToEnd(client.get(), got), End::kReset);
    CHECK(proxy.waitStat(Stat::no_original_dst, 1));
  });

  run("a host-cache overflow is refused with a reset", [] {
    CoreOptions options;
    options.maxPendingPerHost = 1;
    // A black-holed destination keeps the first connect pending, so the second overflows.
    SocketAddress holeAddr;
    UniqueFd hole = listenOn(holeAddr, 0);
    std::vector<UniqueFd> fillers;
    for (int i = 0; i < 4; ++i) {
      UniqueFd f(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      ::connect(f.get(), holeAddr.sockaddrPtr(), holeAddr.length());
      fillers.push_back(std::move(f));
    }
    Proxy proxy(fixedOps(holeAddr), options);
    UniqueFd first = connectClient(proxy.listenAddr);
    CHECK(proxy.waitStat(Stat::upstream_cx_total, 1));
    UniqueFd second = connectClient(proxy.listenAddr);
    std::string got;
    CHECK_END(readToEnd(second.get(), got), End::kReset);
    CHECK(proxy.waitStat(Stat::upstream_cx_overflow, 1));
  });
}

// --- loops --------------------------------------------------------------------------------------

void loopTests() {
  run("own-socket registry: an entry lives as long as its registration, duplicates are counted", [] {
    OwnSockets reg;
    const SocketAddress local = addr("10.0.0.1", 40000);
    const SocketAddress remote = addr("10.0.9.9", 80);
    const OwnSockets::Key key{local, remote};
    CHECK(!reg.contains(local, remote));
    auto a = reg.add(key);
    auto b = reg.add(key);  // connect() may reuse a local port for another destination
    CHECK(reg.contains(local, remote));
    CHECK(!reg.contains(local, addr("10.0.9.9", 81)));   // same peer, other destination
    CHECK(!reg.contains(addr("10.0.0.1", 40001), remote));  // other peer, same destination
    CHECK(!reg.contains(addr("10.0.0.2", 40000), remote));  // other peer IP, same port
    CHECK(!reg.contains(local, addr("10.0.9.8", 80)));      // other destination IP
    a.reset();
    CHECK(reg.contains(local, remote));
    OwnSockets::Registration moved = std::move(b);
    CHECK(reg.contains(local, remote));
    moved.reset();
    CHECK(!reg.contains(local, remote));
    CHECK_EQ(reg.size(), 0u);
    // IPv6: all 16 bytes take part; the same port on another family is another entry.
    const SocketAddress local6 = addr("fd00::1", 40000);
    const SocketAddress remote6 = addr("fd00::9:9", 80);
    auto c = reg.add(OwnSockets::Key{local6, remote6});
    CHECK(reg.contains(local6, remote6));
    CHECK(!reg.contains(addr("fd00::2", 40000), remote6));
    CHECK(!reg.contains(local6, addr("fd00::9:8", 80)));
    CHECK(!reg.contains(local, remote));
    // Many entries (rehashing moves no key a registration points at): each leaves with its own.
    std::vector<OwnSockets::Registration> many;
    for (uint16_t port = 1; port <= 2000; ++port) many.push_back(reg.add(OwnSockets::Key{addr("10.0.0.1", port), remote}));
    CHECK_EQ(reg.size(), 2001u);
    many.clear();
    CHECK(reg.contains(local6, remote6));
    c.reset();
    CHECK_EQ(reg.size(), 0u);
  });

  run("the resolver refuses a connection that is one of our own upstream sockets", [] {
    OwnSockets reg;
    // A connection accepted on a real listener, so its peer is a real address.
    SocketAddress listenAddr;
    UniqueFd listener = listenOn(listenAddr);
    UniqueFd client = connectTo(listenAddr);
    UniqueFd accepted(::accept(listener.get(), nullptr, nullptr));
    LabOps ops;
    ops.target = addr("10.0.9.9", 80);
    OriginalDstResolver resolver(ops, reg);
    resolver.setListenerAddresses({addr("0.0.0.0", 15001)});
    CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kFound);
    SocketAddress clientLocal;
    socklen_t len = SocketAddress::capacity();
    ::getsockname(client.get(), clientLocal.sockaddrPtr(), &len);
    {
      auto own = reg.add({clientLocal, addr("10.0.9.9", 80)});
      CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kLoop);
      ops.target = addr("10.0.9.9", 443);  // same peer, but it asked for somewhere else
      CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kFound);
      ops.target = addr("10.0.9.9", 80);
    }
    CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kFound);
  });

  run("a loopback connection that arrives while one of our connects is unrecorded is looked at again, and refused once that connect is recorded", [] {
    // A connect redirected on this host completes before connect() returns, so its accepted side
    // can be resolved before the connecting thread records the socket. While a connect is in
    // flight the resolver looks for the peer even in an empty registry, and looks again (bounded)
    // for a connection on loopback. The seam records the socket at a chosen step of the check.
    struct LateOps : LabOps {
      std::function<void()> onPeer, onLocal;
      SyscallResult peerAddress(int fd, SocketAddress& out) override {
        if (onPeer) onPeer();
        return LabOps::peerAddress(fd, out);
      }
      SyscallResult localAddress(int fd, SocketAddress& out) override {
        if (onLocal) onLocal();
        return LabOps::localAddress(fd, out);
      }
    };
    OwnSockets reg;
    SocketAddress listenAddr;
    UniqueFd listener = listenOn(listenAddr);
    UniqueFd client = connectTo(listenAddr);  // on loopback, as a redirected connect of ours is
    UniqueFd accepted(::accept(listener.get(), nullptr, nullptr));
    SocketAddress clientLocal;
    socklen_t len = SocketAddress::capacity();
    ::getsockname(client.get(), clientLocal.sockaddrPtr(), &len);
    LateOps ops;
    ops.target = addr("10.0.9.9", 80);
    OriginalDstResolver resolver(ops, reg);
    resolver.setListenerAddresses({addr("0.0.0.0", 15001)});
    OwnSockets::Registration late;
    auto record = [&] {
      if (!late) late = reg.add({clientLocal, ops.target});
    };
    {
      OwnSockets::ConnectInFlight connecting(reg);
      CHECK_EQ(reg.size(), 0u);
      ops.onPeer = record;  // recorded before the first look
      CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kLoop);
      late.reset();
      ops.onPeer = nullptr;
      ops.onLocal = record;  // recorded only after the first look found nothing
      CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kLoop);
      late.reset();
      ops.onLocal = nullptr;
      CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kFound);  // never ours
    }
    CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kFound);
  });

  run("'is this IP local' that cannot answer fails closed: refused as a loop", [] {
    LabOps ops;
    ops.target = addr("10.0.2.1", 15001);  // some address on our wildcard listener's port
    ops.local = LocalIp::kUnknown;
    OriginalDstResolver resolver(ops);
    resolver.setListenerAddresses({addr("0.0.0.0", 15001)});
    SocketAddress listenAddr;
    UniqueFd listener = listenOn(listenAddr);
    UniqueFd client = connectTo(listenAddr);
    UniqueFd accepted(::accept(listener.get(), nullptr, nullptr));
    CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kLoop);
    ops.local = LocalIp::kNo;
    CHECK(resolver.resolve(accepted.get(), AF_INET, false).outcome == OriginalDstOutcome::kFound);
  });

  run("KernelOriginalDstOps::isLocalIp answers 'unknown' under EMFILE, not 'remote'", [] {
    KernelOriginalDstOps ops;
    CHECK(ops.isLocalIp(addr("127.0.0.1", 0)) == LocalIp::kYes);
    CHECK(ops.isLocalIp(addr("192.0.2.1", 0)) == LocalIp::kNo);  // TEST-NET-1: never assigned here
    // Past the loopback shortcut: an interface's own address is this host's (the kernel's routing
    // makes it its own source). Every test machine has one besides loopback.
    const SocketAddress own = firstInterfaceIpv4();
    CHECK(own.family() == AF_INET);
    if (own.family() == AF_INET) CHECK(ops.isLocalIp(own) == LocalIp::kYes);
    std::vector<UniqueFd> hog;
    NofileLimit limit(256);
    for (;;) {  // take every fd below the limit
      UniqueFd fd(::dup(0));
      if (!fd) break;
      hog.push_back(std::move(fd));
    }
    const LocalIp answer = ops.isLocalIp(addr("192.0.2.1", 0));
    hog.clear();
    limit.restore();
    CHECK(answer == LocalIp::kUnknown);
  });

  run("an upstream connect that comes back to our own listener is refused at once", [] {
    // Wildcard listener, and the guard against our own listener addresses answered "not local":
    // only the own-socket check stands between this and recursion to the fd limit.
    Proxy proxy(selfOps(), CoreOptions{}, "0.0.0.0");
    const SocketAddress self = addr("127.0.0.1", proxy.listenAddr.port());
    UniqueFd client = connectTo(self);  // relayed to 127.0.0.1:P, i.e. straight back to us
    std::string got;
    CHECK_END(readToEnd(client.get(), got, 5000), End::kReset);
    CHECK(got.empty());
    CHECK(proxy.waitStat(Stat::loop_rejected, 1));
    CHECK(proxy.waitStat(Stat::downstream_cx_active, 0));
    CHECK_EQ(proxy.stat(Stat::downstream_cx_total), 2u);  // the client and its looped upstream
    CHECK_EQ(proxy.stat(Stat::upstream_cx_total), 1u);
    CHECK_EQ(OwnSockets::process().size(), 0u);  // the upstream's entry left with it
  });

  run("a looped upstream connect accepted by another worker is refused there too", [] {
    // B accepts only once A's upstream socket is recorded, so the outcome does not depend on
    // which thread runs first (see own_sockets.h for that window).
    Proxy b(selfOps(), CoreOptions{}, "0.0.0.0", /*startNow=*/false);
    CoreOptions toB;
    toB.upstreamPortOverride = b.listenAddr.port();  // every upstream of A goes to B's listener
    Proxy a(selfOps(), toB, "0.0.0.0");
    UniqueFd client = connectTo(addr("127.0.0.1", a.listenAddr.port()));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (OwnSockets::process().size() == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK_EQ(OwnSockets::process().size(), 1u);
    b.thread->start();
    std::string got;
    CHECK_END(readToEnd(client.get(), got, 5000), End::kReset);
    CHECK(b.waitStat(Stat::loop_rejected, 1));
    CHECK_EQ(b.stat(Stat::upstream_cx_total), 0u);  // B recognised A's socket: nothing relayed on
    CHECK_EQ(a.stat(Stat::upstream_cx_total), 1u);
    CHECK(a.waitStat(Stat::downstream_cx_active, 0));
  });

  run("a warm (preconnect) socket that comes back to our own listener is refused at once", [] {
    // Preconnect to the listener's own port: the client's upstream connect and the warm socket
    // opened for the next client both come straight back. Without the warm socket in the registry
    // its looped connection is relayed, and takes or opens the next warm socket, without end.
    CoreOptions options;
    options.preconnectPerHost = 1;
    options.preconnectTtlMs = 60000;
    Proxy proxy(selfOps(), options, "0.0.0.0", /*startNow=*/true,
                [](CoreOptions& o, uint16_t port) { o.preconnectPorts = {port}; });
    UniqueFd client = connectTo(addr("127.0.0.1", proxy.listenAddr.port()));
    std::string got;
    CHECK_END(readToEnd(client.get(), got, 5000), End::kReset);
    CHECK(got.empty());
    // Both looped connections refused; the warm socket, reset by that refusal, is dropped.
    CHECK(proxy.waitStat(Stat::loop_rejected, 2));
    CHECK(proxy.waitStat(Stat::upstream_cx_preconnect_dropped, 1));
    CHECK(proxy.waitStat(Stat::upstream_cx_active, 0));
    CHECK_EQ(proxy.stat(Stat::upstream_cx_preconnect), 1u);  // no second warm socket: no chain
    CHECK_EQ(proxy.stat(Stat::upstream_cx_preconnect_used), 0u);
    CHECK_EQ(proxy.stat(Stat::downstream_cx_total), 3u);  // the client and the two looped ones
    CHECK_EQ(proxy.stat(Stat::upstream_cx_total), 2u);
    CHECK_EQ(OwnSockets::process().size(), 0u);  // both entries left with their sockets
  });

  run("a warm socket's registry entry follows it into the connection that takes it", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.preconnectPorts = {serverAddr.port()};
    options.preconnectPerHost = 1;
    options.preconnectTtlMs = 60000;
    Proxy proxy(fixedOps(serverAddr), options);
    UniqueFd first = connectClient(proxy.listenAddr);
    UniqueFd a(::accept(server.get(), nullptr, nullptr));
    UniqueFd b(::accept(server.get(), nullptr, nullptr));
    CHECK(a && b);
    // Which accepted socket is the warm one: the other carries the first client's bytes.
    CHECK(writeAll(first.get(), "1", 1));
    pollfd ready[2] = {{a.get(), POLLIN, 0}, {b.get(), POLLIN, 0}};
    CHECK(::poll(ready, 2, 5000) == 1);
    UniqueFd& warm = (ready[0].revents & POLLIN) ? b : a;
    const SocketAddress warmLocal = peerOf(warm.get());
    CHECK(waitOwned(warmLocal, serverAddr, true));  // recorded while it waits in the pool
    // A second client takes it; the pool opens the next warm socket meanwhile.
    UniqueFd second = connectClient(proxy.listenAddr);
    CHECK(proxy.waitStat(Stat::upstream_cx_preconnect_used, 1));
    CHECK(writeAll(second.get(), "hi", 2));
    char got[2];
    CHECK(::recv(warm.get(), got, 2, MSG_WAITALL) == 2 && std::memcmp(got, "hi", 2) == 0);
    CHECK(OwnSockets::process().contains(warmLocal, serverAddr));  // still ours while it relays
    UniqueFd next(::accept(server.get(), nullptr, nullptr));
    CHECK(next);
    const SocketAddress nextLocal = peerOf(next.get());
    CHECK(waitOwned(nextLocal, serverAddr, true));
    // The taken socket's stream completes: its entry leaves with it.
    ::shutdown(second.get(), SHUT_WR);
    ::shutdown(warm.get(), SHUT_WR);
    std::string rest;
    CHECK_END(readToEnd(second.get(), rest), End::kEof);
    CHECK(waitOwned(warmLocal, serverAddr, false));
    CHECK(OwnSockets::process().contains(nextLocal, serverAddr));
    // The server closes the waiting warm socket: dropped from the pool, and from the registry.
    next.reset();
    CHECK(proxy.waitStat(Stat::upstream_cx_preconnect_dropped, 1));
    CHECK(waitOwned(nextLocal, serverAddr, false));
  });
}

}  // namespace

int main() {
  std::signal(SIGPIPE, SIG_IGN);
  endTests();
  loopTests();
  return splicegate::testing::finish();
}
