// Unit tests for UDP listeners (cpp/core/udp_session.h, udp_relay.h): the session table (create,
// reuse, expiry, LRU eviction) with plain entries and a fake clock, and the listening socket on
// loopback. Relaying needs a TPROXY rule (every datagram that reaches the socket without one is
// addressed to the listener itself), so that path is tested in the namespace lab
// (test/integration/udp.test.ts); here a datagram sent straight to the listener must be refused.
#include <netinet/in.h>
#include <sys/socket.h>

#include <fcntl.h>
#include <poll.h>
#include <net/if.h>

#include <array>
#include <cstring>
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

// IP_TRANSPARENT needs CAP_NET_ADMIN; without it the socket tests have nothing to test.
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
  if (!canBeTransparent()) {
    std::printf("skip udp socket tests: IP_TRANSPARENT needs CAP_NET_ADMIN\n");
    return;
  }
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
    t.attach(*core);
    t.send("ping");
    std::string got;
    SocketAddress upstream;
    CHECK(runUntil(*core, [&] { return FakeTproxy::receive(t.server.get(), got, &upstream); }));
    CHECK(got == "ping");
    CHECK_EQ(core->udpSessions(), size_t{1});
    CHECK(::sendto(t.server.get(), "pong", 4, 0, upstream.sockaddrPtr(), upstream.length()) == 4);
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
    UniqueFd udp = openUdpListenSocket(udpListener("127.0.0.1", 0), &bound, err);
    CHECK(udp);
    CHECK(!core->attachListener(udpListener("127.0.0.1", bound.port()), udp.get(), nullptr));
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
    t.attach(*core);
    t.send("ping");
    std::string got;
    CHECK(runUntil(*core, [&] { return FakeTproxy::receive(t.server.get(), got); }));
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
    UniqueFd shared = openUdpListenSocket(udpListener("127.0.0.1", 0), &bound, err);
    CHECK(shared);
    CHECK(!core->attachListener(udpListener("127.0.0.1", bound.port()), shared.get(), nullptr));
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

}  // namespace

int main() {
  tableTests();
  socketTests();
  return finish();
}
