// Unit tests for UDP listeners (cpp/core/udp_session.h, udp_relay.h): the session table (create,
// reuse, expiry, LRU eviction) with plain entries and a fake clock, and the listening socket on
// loopback. Relaying needs a TPROXY rule for a foreign destination (test/integration/udp.test.ts
// in the namespace lab); here two loopback stand-ins drive it: FakeTproxy (the listener bound to
// the destination) and RelayRig (a wildcard listener attached to a UdpRelay directly).
#include <netinet/in.h>
#include <sys/socket.h>

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>

#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loopback.h"
#include "test_harness.h"
#include "../core/loop_thread.h"
#include "../core/orphan_registry.h"
#include "../core/udp_relay.h"
#include "../core/udp_session.h"
#include "../core/worker_core.h"

using namespace splicegate;
using namespace splicegate::testing;

namespace {

UdpFlowKey key(uint16_t clientPort, const char* dst = "10.0.0.1", uint16_t dstPort = 53) {
  return UdpFlowKey{addr("10.1.0.2", clientPort), addr(dst, dstPort)};
}

int intOption(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, level, name, &v, &len) == 0 ? v : -1;
}

// IP_TRANSPARENT needs CAP_NET_ADMIN (or CAP_NET_RAW). The tests run as root (scripts/test.sh):
// without it the socket and relay tests cannot run, which fails the program (never a quiet skip).
bool canBeTransparent() {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const int one = 1;
  return ::setsockopt(fd.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof one) == 0;
}

ListenerOptions udpListener(const char* ip, uint16_t port) {
  ListenerOptions o;
  o.name = "udp";
  o.address = addr(ip, port);
  o.transparent = true;
  o.udp = true;
  return o;
}


// A UDP listener on 127.0.0.1 (a new port, written to bound), attached to core; the process's
// socket is returned (the worker holds a dup).
UniqueFd attachLoopbackUdpListener(WorkerCore& core, SocketAddress& bound) {
  SysError err;
  UniqueFd fd = openUdpListenSocket(udpListener("127.0.0.1", 0), &bound, err);
  CHECK(fd);
  CHECK(!core.attachListener(udpListener("127.0.0.1", bound.port()), fd.get(), nullptr));
  return fd;
}

// A TPROXY stand-in on loopback, with no rule: the relay's datagrams reach it through `listener`,
// whose original destination is its own address D = 127.0.0.1:P (IP_RECVORIGDSTADDR reports the
// datagram's destination). The listener is attached before it is bound, so the relay recorded
// 0.0.0.0:0 as its address and does not take D for itself; it is connected to `client`, so the
// kernel gives it the client's datagrams (a connected socket outranks the others on D), while
// `server`, also on D but bound to lo (SO_BINDTODEVICE outranks the relay's unconnected reply
// socket on D), gets the relay's upstream datagrams. Everything shares D with SO_REUSEADDR.
struct FakeTproxy {
  UniqueFd server;    // the "original destination" D
  UniqueFd listener;  // the process's socket; the worker attaches a dup
  UniqueFd client;    // 127.0.0.2:c
  SocketAddress destination;
  SocketAddress clientAddr;

  static void reuse(int fd) {
    const int one = 1;
    CHECK(::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
  }

  // A core for which D (on 127.0.0.1) stands for a remote destination: its "is this address this
  // host's" answers no (FixedDestinationOps), or the relay would refuse D as local.
  static std::unique_ptr<WorkerCore> core(SysError& err) {
    return WorkerCore::create(CoreOptions{}, std::make_unique<FixedDestinationOps>(), err);
  }

  // Opens D (port 0: a new one) and the client; attach() then hands the listener to a core.
  explicit FakeTproxy(uint16_t port = 0) {
    server.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    reuse(server.get());
    CHECK(::setsockopt(server.get(), SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) == 0);
    const SocketAddress d = addr("127.0.0.1", port);
    CHECK(::bind(server.get(), d.sockaddrPtr(), d.length()) == 0);
    socklen_t len = SocketAddress::capacity();
    CHECK(::getsockname(server.get(), destination.sockaddrPtr(), &len) == 0);
    client.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    const SocketAddress c = addr("127.0.0.2", 0);
    CHECK(::bind(client.get(), c.sockaddrPtr(), c.length()) == 0);
    len = SocketAddress::capacity();
    CHECK(::getsockname(client.get(), clientAddr.sockaddrPtr(), &len) == 0);
    listener.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    reuse(listener.get());
    const int one = 1;
    CHECK(::setsockopt(listener.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof one) == 0);
    CHECK(::setsockopt(listener.get(), SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof one) == 0);
  }

  ListenerOptions options() const {
    ListenerOptions o = udpListener("127.0.0.1", 0);  // port 0: the attach checks no port
    return o;
  }
  // Attached unbound, then bound to D and connected to the client.
  void attach(WorkerCore& core) {
    CHECK(!core.attachListener(options(), listener.get(), nullptr));
    CHECK(::bind(listener.get(), destination.sockaddrPtr(), destination.length()) == 0);
    CHECK(::connect(listener.get(), clientAddr.sockaddrPtr(), clientAddr.length()) == 0);
  }
  void send(const std::string& data) const {
    CHECK(::sendto(client.get(), data.data(), data.size(), 0, destination.sockaddrPtr(), destination.length()) ==
          static_cast<ssize_t>(data.size()));
  }
  // Attached to core, then "ping" from the client, relayed to the server; returns the address it
  // came from (the session's upstream socket).
  SocketAddress relayPing(WorkerCore& core) {
    attach(core);
    send("ping");
    std::string got;
    SocketAddress upstream;
    CHECK(runUntil(core, [&] { return receive(server.get(), got, &upstream); }));
    CHECK(got == "ping");
    return upstream;
  }
  // One datagram on fd, if any: its data and source.
  static bool receive(int fd, std::string& data, SocketAddress* from = nullptr) {
    char buf[2048];
    SocketAddress src;
    socklen_t len = SocketAddress::capacity();
    const ssize_t n = ::recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, src.sockaddrPtr(), &len);
    if (n < 0) return false;
    data.assign(buf, static_cast<size_t>(n));
    if (from) *from = src;
    return true;
  }
};

void tableTests() {
  run("udp table: a flow's session is found again; another client or destination is another flow", [] {
    UdpSessionTable table(8);
    UdpFlow a(key(1000));
    CHECK(table.insert(&a, 100));
    CHECK(table.find(key(1000)) == &a);
    CHECK(table.find(key(1001)) == nullptr);                 // another client port
    CHECK(table.find(key(1000, "10.0.0.2")) == nullptr);     // another destination
    CHECK(table.find(key(1000, "10.0.0.1", 54)) == nullptr);  // another destination port
    UdpFlow again(key(1000));
    CHECK(!table.insert(&again, 200));  // one session per flow
    CHECK_EQ(table.size(), size_t{1});
    table.remove(&a);
    CHECK(table.find(key(1000)) == nullptr);
    CHECK_EQ(table.size(), size_t{0});
    table.remove(&a);  // twice is harmless
  });

  run("udp table: sessions expire after the timeout without activity, oldest first", [] {
    UdpSessionTable table(8);
    UdpFlow a(key(1)), b(key(2)), c(key(3));
    table.insert(&a, 1000);
    table.insert(&b, 2000);
    table.insert(&c, 3000);
    const uint64_t timeout = 5000;
    CHECK(table.nextExpired(5999, timeout) == nullptr);
    CHECK(table.nextExpired(6000, timeout) == &a);
    table.touch(&a, 6000);  // a datagram: a is the most recently used again
    CHECK(table.nextExpired(7000, timeout) == &b);
    table.remove(&b);
    CHECK(table.nextExpired(7999, timeout) == nullptr);
    CHECK(table.nextExpired(8000, timeout) == &c);
    table.remove(&c);
    CHECK(table.nextExpired(10999, timeout) == nullptr);
    CHECK(table.nextExpired(11000, timeout) == &a);
  });

  run("udp table: a full table refuses until room is made; the session idle longest goes first", [] {
    UdpSessionTable table(3);
    std::vector<std::unique_ptr<UdpFlow>> flows;
    for (uint16_t p = 1; p <= 4; ++p) flows.push_back(std::make_unique<UdpFlow>(key(p)));
    for (int i = 0; i < 3; ++i) CHECK(table.insert(flows[i].get(), 10 * (i + 1)));
    CHECK(table.full());
    CHECK(!table.insert(flows[3].get(), 40));
    table.touch(flows[0].get(), 50);  // used again: flow 2 is now the least recently used
    CHECK(table.oldest() == flows[1].get());
    table.remove(table.oldest());
    CHECK(table.insert(flows[3].get(), 60));
    CHECK(table.find(key(2)) == nullptr);
    CHECK(table.find(key(1)) == flows[0].get());
    CHECK(table.find(key(4)) == flows[3].get());
    CHECK(table.oldest() == flows[2].get());
  });
}

void socketTests() {
  run("udp listener: transparent, original destination requested, non-blocking, not shareable", [] {
    SysError err;
    SocketAddress bound;
    UniqueFd fd = openUdpListenSocket(udpListener("127.0.0.1", 0), &bound, err);
    CHECK(fd);
    CHECK(bound.port() != 0);
    CHECK_EQ(intOption(fd.get(), SOL_SOCKET, SO_TYPE), SOCK_DGRAM);
    CHECK_EQ(intOption(fd.get(), SOL_IP, IP_TRANSPARENT), 1);
    CHECK_EQ(intOption(fd.get(), SOL_IP, IP_RECVORIGDSTADDR), 1);
    CHECK_EQ(intOption(fd.get(), SOL_SOCKET, SO_REUSEADDR), 0);
    // A receive buffer for bursts, beyond rmem_max (CAP_NET_ADMIN): 4 MiB, which the kernel doubles.
    CHECK(intOption(fd.get(), SOL_SOCKET, SO_RCVBUF) >= (4 << 20));
    CHECK((::fcntl(fd.get(), F_GETFL) & O_NONBLOCK) != 0);
    SysError again;
    UniqueFd second = openUdpListenSocket(udpListener("127.0.0.1", bound.port()), nullptr, again);
    CHECK(!second);
    CHECK_EQ(again.err, EADDRINUSE);
  });

  run("udp listener: IPv6 is IPv6-only and asks for IPV6_ORIGDSTADDR", [] {
    SysError err;
    UniqueFd fd = openUdpListenSocket(udpListener("::1", 0), nullptr, err);
    CHECK(fd);
    CHECK_EQ(intOption(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY), 1);
    CHECK_EQ(intOption(fd.get(), SOL_IPV6, IPV6_TRANSPARENT), 1);
    CHECK_EQ(intOption(fd.get(), SOL_IPV6, IPV6_RECVORIGDSTADDR), 1);
  });

  run("udp listener: a worker refuses a stream socket passed as its datagram socket", [] {
    SysError err;
    auto core = WorkerCore::create(CoreOptions{}, err);
    CHECK(core);
    SocketAddress tcpBound;
    UniqueFd tcp = listenOn(tcpBound);
    ListenerOptions o = udpListener("127.0.0.1", tcpBound.port());
    SysError attach = core->attachListener(o, tcp.get(), nullptr);
    CHECK(attach);
    CHECK_EQ(attach.err, EBADF);
    CHECK_EQ(core->listenerCount(), size_t{0});
  });


  run("udp relay (fake TPROXY): a datagram goes upstream and the reply comes back from the destination", [] {
    SysError err;
    auto core = FakeTproxy::core(err);
    CHECK(core);
    FakeTproxy t;
    const SocketAddress upstream = t.relayPing(*core);
    CHECK_EQ(core->udpSessions(), size_t{1});
    CHECK(::sendto(t.server.get(), "pong", 4, 0, upstream.sockaddrPtr(), upstream.length()) == 4);
    std::string got;
    SocketAddress from;
    CHECK(runUntil(*core, [&] { return FakeTproxy::receive(t.client.get(), got, &from); }));
    CHECK(got == "pong");
    CHECK(from == t.destination);
    const Stats& s = core->stats();
    CHECK_EQ(s.get(Stat::udp_datagrams_upstream), uint64_t{1});
    CHECK_EQ(s.get(Stat::udp_datagrams_out), uint64_t{1});
    CHECK_EQ(s.get(Stat::udp_sessions_active), uint64_t{1});
  });


  run("udp listener: listeners_active counts a UDP listener attached before a TCP one", [] {
    SysError err;
    auto core = WorkerCore::create(CoreOptions{}, err);
    CHECK(core);
    SocketAddress bound;
    UniqueFd udp = attachLoopbackUdpListener(*core, bound);
    CHECK_EQ(core->stats().get(Stat::listeners_active), uint64_t{1});
    ListenerOptions tcpOptions;
    tcpOptions.name = "tcp";
    tcpOptions.address = addr("127.0.0.1", 0);
    SocketAddress tcpBound;
    UniqueFd tcp = openListenSocket(tcpOptions, &tcpBound, err);
    CHECK(tcp);
    CHECK(!core->attachListener(tcpOptions, tcp.get(), nullptr));
    CHECK_EQ(core->listenerCount(), size_t{2});
    CHECK_EQ(core->stats().get(Stat::listeners_active), uint64_t{2});
  });

  run("udp orphan: an orphaned worker's UDP sessions leave no udp_sessions_active behind once it ended", [] {
    SysError err;
    auto core = FakeTproxy::core(err);
    CHECK(core);
    FakeTproxy t;
    t.relayPing(*core);
    CHECK_EQ(core->stats().get(Stat::udp_sessions_active), uint64_t{1});
    OrphanRegistry registry;
    auto loop = std::make_unique<LoopThread>(std::move(core));
    loop->start();
    // Reported before the session existed (the worker died before its next report).
    registry.adopt(std::move(loop), OrphanRegistry::Counters{}, 60000);
    CHECK(registry.waitEmpty(10000));  // no TCP connection: the orphan ends at once
    std::vector<double> values(Stats::size());
    registry.readStats(values.data());
    // No orphan is left, so no session is: the gauge must read 0 (counters keep their totals).
    CHECK_EQ(values[static_cast<size_t>(Stat::udp_sessions_active)], 0.0);
    CHECK_EQ(values[static_cast<size_t>(Stat::udp_sessions_total)], 1.0);
  });

  run("udp relay: a session to a local address does not take that address's datagrams from the server bound to it", [] {
    // A local service on D with SO_REUSEADDR (as DNS forwarders bind theirs), not bound to a device.
    // A reply socket bound to D with SO_REUSEADDR would become the socket the kernel delivers D's
    // datagrams to, the service's own and the relayed ones alike; so a destination of this host is
    // not relayed (here with no policy at all: deny_special, the default, denies it before).
    SysError err;
    auto core = WorkerCore::create(CoreOptions{}, err);
    CHECK(core);
    FakeTproxy t;
    CHECK(::setsockopt(t.server.get(), SOL_SOCKET, SO_BINDTODEVICE, "", 0) == 0);  // an ordinary server
    t.attach(*core);
    UniqueFd other(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));  // another client of the service
    std::string got;
    CHECK(::sendto(other.get(), "before", 6, 0, t.destination.sockaddrPtr(), t.destination.length()) == 6);
    CHECK(runUntil(*core, [&] { return FakeTproxy::receive(t.server.get(), got); }));
    CHECK(got == "before");
    t.send("ping");  // D is this host's (the core asks the kernel): refused, no reply socket bound to D
    const Stats& st = core->stats();
    CHECK(runUntil(*core, [&] {
      return st.get(Stat::udp_datagrams_upstream) + st.get(Stat::udp_dropped_error) + st.get(Stat::udp_dropped_policy) == 1;
    }));
    CHECK(::sendto(other.get(), "after", 5, 0, t.destination.sockaddrPtr(), t.destination.length()) == 5);
    bool after = false;
    runUntil(*core, [&] {
      while (FakeTproxy::receive(t.server.get(), got)) after = after || got == "after";
      return after;
    }, 2000);
    CHECK(after);  // the service still gets its own datagrams
    CHECK_EQ(st.get(Stat::udp_dropped_error), 1u);
    CHECK_EQ(st.get(Stat::udp_sessions_active), 0u);
  });

  run("udp listener: a datagram sent to the listener itself is not redirected: dropped, no session", [] {
    SysError err;
    auto core = WorkerCore::create(CoreOptions{}, err);
    CHECK(core);
    SocketAddress bound;
    UniqueFd shared = attachLoopbackUdpListener(*core, bound);
    CHECK_EQ(core->listenerCount(), size_t{1});
    UniqueFd client(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    CHECK(::sendto(client.get(), "q", 1, 0, bound.sockaddrPtr(), bound.length()) == 1);
    const Stats& s = core->stats();
    CHECK(runUntil(*core, [&] { return s.get(Stat::udp_datagrams_in) == 1; }));
    CHECK_EQ(s.get(Stat::udp_dropped_error), uint64_t{1});
    CHECK_EQ(s.get(Stat::no_original_dst), uint64_t{0});  // the TCP listeners' counter
    CHECK_EQ(s.get(Stat::udp_sessions_total), uint64_t{0});
    CHECK_EQ(core->udpSessions(), size_t{0});
    core->stopAccepting();
    CHECK_EQ(core->listenerCount(), size_t{0});
    core->runOnce(0);  // the detached listener is freed after the batch
  });
}


// A relay driven on loopback without TPROXY. The listener is bound to the wildcard address and
// attached to the relay directly (not through UdpRelay::attach, so the relay does not know it as
// its own and relays what it receives): a datagram a client sends to 127.0.0.x:P reaches it with
// original destination 127.0.0.x:P, as a TPROXY rule would deliver it. The relay's own listener (for
// its buffers) is a plain socket on another port. Everything is SO_REUSEADDR, so the relay's reply
// socket can bind the destination beside the listener and the test's server.
struct TestOwner final : UdpRelayOwner {
  bool allow = true;
  bool allowUdpDestination(const ListenerOptions&, const SocketAddress&, const SocketAddress&) override { return allow; }
  // 127.0.0.x stands for a foreign destination here.
  LocalIp isThisHost(const SocketAddress&) override { return LocalIp::kNo; }
};

UniqueFd udpSocket(const SocketAddress& at, bool reuse) {
  UniqueFd fd(::socket(at.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  CHECK(fd);
  const int one = 1;
  if (reuse) CHECK(::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
  CHECK(::bind(fd.get(), at.sockaddrPtr(), at.length()) == 0);
  return fd;
}

SocketAddress localOf(int fd) {
  SocketAddress a;
  socklen_t len = SocketAddress::capacity();
  CHECK(::getsockname(fd, a.sockaddrPtr(), &len) == 0);
  return a;
}

// Waits (poll, liveness bound) for a datagram on fd; returns its size, -1 on timeout.
ssize_t recvWithin(int fd, char* buf, size_t len, SocketAddress* from = nullptr, int timeoutMs = 5000) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeoutMs) != 1) return -1;
  SocketAddress a;
  socklen_t alen = SocketAddress::capacity();
  const ssize_t n = ::recvfrom(fd, buf, len, MSG_DONTWAIT, a.sockaddrPtr(), &alen);
  if (from) *from = a;
  return n;
}

struct RelayRig {
  std::unique_ptr<EventLoop> loop;
  Stats stats;
  WorkerLatency latency;
  CoreOptions options;
  TestOwner owner;
  std::unique_ptr<UdpRelay> relay;
  UniqueFd ownListenFd;
  UniqueFd listenFd;
  std::unique_ptr<UdpListener> listener;
  uint16_t port = 0;

  // production: the listener is what openUdpListenSocket opens (no SO_REUSEADDR), on 0.0.0.0.
  explicit RelayRig(size_t maxSessions = 4096, bool production = false) {
    SysError err;
    loop = EventLoop::create(err);
    CHECK(loop);
    options.udpMaxSessions = maxSessions;
    relay = std::make_unique<UdpRelay>(*loop, stats, latency, options, owner);
    ownListenFd = udpSocket(addr("127.0.0.1", 0), false);
    ListenerOptions own = udpListener("127.0.0.1", localOf(ownListenFd.get()).port());
    CHECK(!relay->attach(own, ownListenFd.get(), nullptr));
    if (production) {
      listenFd = openUdpListenSocket(udpListener("0.0.0.0", 0), nullptr, err);
      CHECK(listenFd);
    } else {
      listenFd = udpSocket(addr("0.0.0.0", 0), true);
      const int one = 1;
      CHECK(::setsockopt(listenFd.get(), SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof one) == 0);
    }
    port = localOf(listenFd.get()).port();
    listener = UdpListener::attach(*relay, *loop, udpListener("0.0.0.0", port), listenFd.get(), err);
    CHECK(listener);
  }
  ~RelayRig() {
    listener.reset();
    relay.reset();
  }
  // One batch, then what it closed is freed (WorkerCore::runOnce's order).
  void runOnce(int timeoutMs = 10) {
    loop->waitAndDispatch(timeoutMs);
    relay->disposeClosed();
  }
  bool runUntil(const std::function<bool()>& pred, int timeoutMs = 5000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      runOnce();
    }
    return true;
  }
  uint64_t get(Stat s) const { return stats.get(s); }
};

// A server at ip:P that only hears the relay's upstream sockets (connected to 127.0.0.1, any
// port: a connected socket outranks the listener and the reply socket for that source), so a
// client on 127.0.0.3 still reaches the listener.
UniqueFd serverAt(const char* ip, uint16_t port) {
  UniqueFd fd = udpSocket(addr(ip, port), true);
  const SocketAddress peer = addr("127.0.0.1", 0);
  CHECK(::connect(fd.get(), peer.sockaddrPtr(), peer.length()) == 0);
  return fd;
}

UniqueFd clientAt(const char* ip) { return udpSocket(addr(ip, 0), false); }

void sendTo(int fd, const SocketAddress& to, const char* data) {
  CHECK(::sendto(fd, data, std::strlen(data), 0, to.sockaddrPtr(), to.length()) == static_cast<ssize_t>(std::strlen(data)));
}

// A table of one session, and that session live: 127.0.0.3 -> 127.0.0.2:port, relayed. A server
// waits on 127.0.0.4:port for a second flow.
struct FullTable {
  RelayRig rig{1};
  UniqueFd server2 = serverAt("127.0.0.2", rig.port);
  UniqueFd server4 = serverAt("127.0.0.4", rig.port);
  UniqueFd client = clientAt("127.0.0.3");
  FullTable() {
    sendTo(client.get(), addr("127.0.0.2", rig.port), "a");
    CHECK(rig.runUntil([&] { return rig.get(Stat::udp_datagrams_upstream) == 1; }));
  }
};

void relayTests() {
  run("udp relay rig: a datagram goes to its original destination, the reply comes back from it", [] {
    RelayRig rig;
    UniqueFd server = serverAt("127.0.0.2", rig.port);
    UniqueFd client = clientAt("127.0.0.3");
    const SocketAddress dst = addr("127.0.0.2", rig.port);
    sendTo(client.get(), dst, "ping");
    CHECK(rig.runUntil([&] { return rig.get(Stat::udp_datagrams_upstream) == 1; }));
    char buf[64];
    SocketAddress upstream;
    CHECK_EQ(recvWithin(server.get(), buf, sizeof buf, &upstream), ssize_t{4});
    CHECK(std::memcmp(buf, "ping", 4) == 0);
    CHECK(::sendto(server.get(), "pong", 4, 0, upstream.sockaddrPtr(), upstream.length()) == 4);
    CHECK(rig.runUntil([&] { return rig.get(Stat::udp_datagrams_out) == 1; }));
    SocketAddress from;
    CHECK_EQ(recvWithin(client.get(), buf, sizeof buf, &from), ssize_t{4});
    CHECK(std::memcmp(buf, "pong", 4) == 0);
    CHECK(from == dst);
    CHECK_EQ(rig.relay->sessionCount(), size_t{1});
  });


  run("udp relay: a full table makes room for a new flow by closing the session idle longest", [] {
    FullTable t;
    RelayRig& rig = t.rig;
    UniqueFd& client = t.client;
    UniqueFd& server4 = t.server4;
    sendTo(client.get(), addr("127.0.0.4", rig.port), "b");
    CHECK(rig.runUntil([&] { return rig.get(Stat::udp_datagrams_upstream) == 2; }));
    CHECK_EQ(rig.get(Stat::udp_sessions_total), uint64_t{2});
    CHECK_EQ(rig.get(Stat::udp_sessions_evicted), uint64_t{1});
    CHECK_EQ(rig.get(Stat::udp_sessions_active), uint64_t{1});
    CHECK_EQ(rig.relay->sessionCount(), size_t{1});
    char buf[8];
    CHECK_EQ(recvWithin(server4.get(), buf, sizeof buf), ssize_t{1});
  });

  run("udp relay: out of fds with a full table, the session idle longest gives its fds to a new flow", [] {
    FullTable t;
    RelayRig& rig = t.rig;
    UniqueFd& client = t.client;
    // No fd can be opened: the soft limit is the lowest free number.
    rlimit saved{};
    CHECK(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    int lowest;
    {
      UniqueFd probe(::eventfd(0, EFD_CLOEXEC));
      CHECK(probe);
      lowest = probe.get();
    }
    rlimit tight = saved;
    tight.rlim_cur = static_cast<rlim_t>(lowest);
    CHECK(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
    sendTo(client.get(), addr("127.0.0.4", rig.port), "b");
    const bool relayed = rig.runUntil([&] { return rig.get(Stat::udp_datagrams_in) == 2; });
    ::setrlimit(RLIMIT_NOFILE, &saved);
    CHECK(relayed);
    CHECK_EQ(rig.get(Stat::udp_dropped_error), uint64_t{0});
    CHECK_EQ(rig.get(Stat::udp_sessions_evicted), uint64_t{1});
    CHECK_EQ(rig.get(Stat::udp_datagrams_upstream), uint64_t{2});
    CHECK_EQ(rig.relay->sessionCount(), size_t{1});
  });

  run("udp relay: a new flow whose session cannot be opened does not evict a live session", [] {
    // One session allowed. A broadcast destination cannot be connected to (EACCES without
    // SO_BROADCAST): that datagram is dropped, and the session already there must stay.
    RelayRig rig(1);
    UniqueFd server = serverAt("127.0.0.2", rig.port);
    UniqueFd client = clientAt("127.0.0.3");
    sendTo(client.get(), addr("127.0.0.2", rig.port), "a");
    CHECK(rig.runUntil([&] { return rig.get(Stat::udp_datagrams_upstream) == 1; }));
    CHECK_EQ(rig.relay->sessionCount(), size_t{1});
    const int one = 1;
    CHECK(::setsockopt(client.get(), SOL_SOCKET, SO_BROADCAST, &one, sizeof one) == 0);
    sendTo(client.get(), addr("127.255.255.255", rig.port), "b");
    CHECK(rig.runUntil([&] { return rig.get(Stat::udp_datagrams_in) >= 2; }));
    CHECK(rig.get(Stat::udp_dropped_error) >= 1);
    CHECK_EQ(rig.get(Stat::udp_sessions_total), uint64_t{1});
    CHECK_EQ(rig.get(Stat::udp_sessions_evicted), uint64_t{0});
    CHECK_EQ(rig.relay->sessionCount(), size_t{1});
  });

}

}  // namespace

int main() {
  tableTests();
  bool transparent = false;
  run("IP_TRANSPARENT can be set (CAP_NET_ADMIN or CAP_NET_RAW: run as root), as the socket and relay tests need", [&] {
    transparent = canBeTransparent();
    CHECK(transparent);
  });
  if (transparent) {
    socketTests();
    relayTests();
  }
  return finish();
}
