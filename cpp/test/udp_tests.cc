// Unit tests for UDP listeners (cpp/core/udp_session.h, udp_relay.h): the session table (create,
// reuse, expiry, LRU eviction) with plain entries and a fake clock, and the listening socket on
// loopback. Relaying needs a TPROXY rule (every datagram that reaches the socket without one is
// addressed to the listener itself), so that path is tested in the namespace lab
// (test/integration/udp.test.ts); here a datagram sent straight to the listener must be refused.
#include <netinet/in.h>
#include <sys/socket.h>

#include <fcntl.h>

#include <memory>
#include <vector>

#include "loopback.h"
#include "test_harness.h"
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
