// Unit tests for the connection pipeline's protocol stage (PROXY protocol in, listeners[].proxy_protocol)
// and the PROXY header written upstream (cluster.send_proxy_protocol), on real loopback sockets.
// The original-destination syscalls go through a fake that names a fixed target, so a test can tell
// "relayed to the header's destination" from "relayed to the socket's own".
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "loopback.h"
#include "test_harness.h"
#include "../core/listener.h"
#include "../core/original_dst.h"
#include "../core/proxy_protocol.h"
#include "../core/worker_core.h"

using namespace splicegate;
using namespace splicegate::testing;

namespace {


void sendAll(int fd, const std::string& s) { CHECK(::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size())); }

// Accepts one connection on `server` while driving the core; false when none came in time.
bool acceptWhileRunning(WorkerCore& core, int server, UniqueFd& out, int timeoutMs = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (std::chrono::steady_clock::now() < deadline) {
    core.runOnce(10);
    pollfd p{server, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) {
      out.reset(::accept(server, nullptr, nullptr));
      return static_cast<bool>(out);
    }
  }
  return false;
}

// A core with one proxy_protocol listener on loopback; the fake "original destination" is `target`.
struct Stage {
  UniqueFd listenSocket;
  std::unique_ptr<WorkerCore> core;
  SocketAddress listenAddr;
  Stage(const SocketAddress& target, ProxyProtocolOptions pp, CoreOptions options = {}) {
    auto ops = std::make_unique<FixedDestinationOps>();
    ops->target = target;
    SysError err;
    core = WorkerCore::create(options, std::move(ops), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "pp";
    lo.address = addr("127.0.0.1", 0);
    lo.proxyProtocol = std::move(pp);
    listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
  }
  uint64_t stat(Stat s) const { return core->stats().get(s); }
};

ProxyProtocolOptions trusting(const char* cidr, bool required = true, uint32_t timeoutMs = 3000) {
  ProxyProtocolOptions pp;
  pp.enabled = true;
  pp.trustedSources.push_back(*parseCidr(cidr));
  pp.required = required;
  pp.timeoutMs = timeoutMs;
  return pp;
}

std::string v1Line(const SocketAddress& dst) {
  return "PROXY TCP4 192.0.2.7 " + dst.ipString() + " 40000 " + std::to_string(dst.port()) + "\r\n";
}

// A server whose address nobody relays to unless a header names it; the fake target is another.
struct TwoServers {
  SocketAddress namedAddr, fakeAddr;
  UniqueFd named, fake;
  TwoServers() : named(listenOn(namedAddr)), fake(listenOn(fakeAddr)) {}
};

void stageTests() {
  run("v1 header split across reads: relayed to the header's destination, bytes after it first", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.0/8"));
    UniqueFd client = connectTo(stage.listenAddr);
    const std::string header = v1Line(s.namedAddr);
    sendAll(client.get(), header.substr(0, 9));
    // The stage has read the first part (the connection is accepted and nothing is connected yet).
    CHECK(runUntil(*stage.core, [&] { return stage.core->activeConnections() == 1; }));
    for (int i = 0; i < 5; ++i) stage.core->runOnce(10);
    CHECK(stage.stat(Stat::upstream_cx_total) == 0);
    sendAll(client.get(), header.substr(9) + "hello");
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, s.named.get(), up));
    ::shutdown(client.get(), SHUT_WR);
    // The server reads the bytes that followed the header, then the client's FIN, relayed.
    std::string got;
    End end = End::kTimeout;
    std::atomic<bool> readerDone{false};
    std::thread reader([&] {
      end = readToEnd(up.get(), got);
      readerDone = true;
    });
    const bool finished = runUntil(*stage.core, [&] { return readerDone.load(); });
    reader.join();
    CHECK(finished);
    CHECK(end == End::kEof);
    CHECK(got == "hello");
    up.reset();  // the server finishes too: the relay completes with FIN both ways
    std::string back;
    CHECK(runUntil(*stage.core, [&] { return stage.core->activeConnections() == 0; }));
    CHECK(readToEnd(client.get(), back) == End::kEof);
    CHECK(stage.stat(Stat::bytes_received) == 5);
    CHECK(stage.stat(Stat::proxy_protocol_accepted) == 1);
    CHECK(stage.stat(Stat::cx_close_completed) == 1);
  });

  run("v2 header and data in one segment: relayed to the header's destination", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32"));
    UniqueFd client = connectTo(stage.listenAddr);
    uint8_t header[proxy_protocol::kMaxWrittenLength];
    const size_t n = proxy_protocol::write(proxy_protocol::Version::v2, addr("192.0.2.7", 40000), s.namedAddr, header, sizeof header);
    CHECK(n > 0);
    sendAll(client.get(), std::string(reinterpret_cast<char*>(header), n) + "ping");
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, s.named.get(), up));
    char buf[16] = {};
    CHECK(runUntil(*stage.core, [&] { return ::recv(up.get(), buf, sizeof buf, MSG_DONTWAIT) == 4; }));
    CHECK(std::string(buf, 4) == "ping");
    CHECK(stage.stat(Stat::proxy_protocol_accepted) == 1);
  });

  run("v2 LOCAL: relayed to the socket's own original destination", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32"));
    UniqueFd client = connectTo(stage.listenAddr);
    // signature, v2 LOCAL, UNSPEC, length 0
    const uint8_t local[16] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00};
    sendAll(client.get(), std::string(reinterpret_cast<const char*>(local), sizeof local) + "x");
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, s.fake.get(), up));
    CHECK(stage.stat(Stat::proxy_protocol_local) == 1);
  });

  run("malformed header: reset, counted, nothing connected", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32"));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), "PROXY TCP4 not-an-ip\r\n");
    std::string got;
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::proxy_protocol_error) == 1; }));
    reader.join();
    CHECK(end == End::kReset);
    CHECK(stage.stat(Stat::upstream_cx_total) == 0);
    CHECK(stage.stat(Stat::cx_close_protocol_error) == 1);
    CHECK(stage.stat(Stat::proxy_protocol_error_v1_bad_address) == 1);
  });

  run("plain bytes where the header is required: reset as an error", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32"));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), "GET / HTTP/1.1\r\n\r\n");
    std::string got;
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::proxy_protocol_error) == 1; }));
    reader.join();
    CHECK(end == End::kReset);
    CHECK(stage.stat(Stat::proxy_protocol_error_not_proxy) == 1);
  });

  run("optional header, plain traffic: every byte reaches the socket's own destination", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32", /*required=*/false));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), "GET / HTTP/1.1\r\n\r\n");
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, s.fake.get(), up));
    std::string got;
    CHECK(runUntil(*stage.core, [&] {
      char buf[64];
      const ssize_t n = ::recv(up.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) got.append(buf, static_cast<size_t>(n));
      return got.size() >= 18;
    }));
    CHECK(got == "GET / HTTP/1.1\r\n\r\n");
    CHECK(stage.stat(Stat::proxy_protocol_plain) == 1);
  });

  // With the header optional, a client that half-closes before its first byte has sent no header:
  // its (empty) stream is plain, and its FIN is passed on like any half-close, so a server that
  // speaks after its client's EOF still answers. Required, it stays an error (reset).
  run("optional header, a half-close before any byte: plain, the FIN goes through and the answer comes back", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32", /*required=*/false));
    UniqueFd client = connectTo(stage.listenAddr);
    ::shutdown(client.get(), SHUT_WR);
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, s.fake.get(), up));
    std::string got;
    CHECK(runUntil(*stage.core, [&] {
      char buf[64];
      return ::recv(up.get(), buf, sizeof buf, MSG_DONTWAIT) == 0;  // the client's FIN
    }));
    sendAll(up.get(), "banner");
    ::shutdown(up.get(), SHUT_WR);
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::cx_close_completed) == 1; }));
    reader.join();
    CHECK(end == End::kEof);
    CHECK(got == "banner");
    CHECK(stage.stat(Stat::proxy_protocol_plain) == 1);
    CHECK(stage.stat(Stat::proxy_protocol_error) == 0);
  });

  run("required header, a half-close before any byte: reset as an error", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32", /*required=*/true));
    UniqueFd client = connectTo(stage.listenAddr);
    ::shutdown(client.get(), SHUT_WR);
    std::string got;
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::proxy_protocol_error) == 1; }));
    reader.join();
    CHECK(end == End::kReset);
  });

  run("untrusted sender with a required header: reset at accept, counted", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("10.0.0.0/8"));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), v1Line(s.namedAddr));
    std::string got;
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::proxy_protocol_untrusted) == 1; }));
    reader.join();
    CHECK(end == End::kReset);
    CHECK(stage.stat(Stat::upstream_cx_total) == 0);
  });

  run("a refusal at accept ends with one close reason, refused, like a refusal after the header", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("10.0.0.0/8"));
    UniqueFd client = connectTo(stage.listenAddr);
    std::string got;
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::proxy_protocol_untrusted) == 1; }));
    CHECK(readToEnd(client.get(), got) == End::kReset);
    CHECK(stage.stat(Stat::cx_close_refused) == 1);
    // Every accepted connection is counted under exactly one reason once it has ended.
    uint64_t closed = 0;
    for (size_t i = 0; i < Stats::size(); ++i) {
      if (std::strncmp(kStatNames[i], "cx_close_", 9) == 0) closed += stage.stat(static_cast<Stat>(i));
    }
    CHECK(closed == stage.stat(Stat::downstream_cx_total));
  });

  run("untrusted sender with an optional header: a header is reset, not honoured nor passed on", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("10.0.0.0/8", /*required=*/false));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), v1Line(s.namedAddr) + "data");
    std::string got;
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::proxy_protocol_untrusted) == 1; }));
    reader.join();
    CHECK(end == End::kReset);
    CHECK(stage.stat(Stat::upstream_cx_total) == 0);
    CHECK(stage.stat(Stat::proxy_protocol_accepted) == 0);
  });

  run("untrusted sender with an optional header: plain traffic is relayed to the socket's destination", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("10.0.0.0/8", /*required=*/false));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), "plain");
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, s.fake.get(), up));
    std::string got;
    CHECK(runUntil(*stage.core, [&] {
      char buf[64];
      const ssize_t n = ::recv(up.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) got.append(buf, static_cast<size_t>(n));
      return got.size() >= 5;
    }));
    CHECK(got == "plain");
    CHECK(stage.stat(Stat::proxy_protocol_plain) == 1);
  });

  run("slow header: reset after the timeout, counted", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32", true, /*timeoutMs=*/200));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), "PROXY TCP4 ");
    const auto started = std::chrono::steady_clock::now();
    std::string got;
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::proxy_protocol_timeout) == 1; }));
    reader.join();
    CHECK(end == End::kReset);
    CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(200));
    CHECK(stage.stat(Stat::cx_close_protocol_timeout) == 1);
    CHECK(stage.core->activeConnections() == 0);
  });

  run("at rest the tick slows; an awaited header brings the 50 ms tick back before its timeout", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32", true, /*timeoutMs=*/200));
    CHECK(runUntil(*stage.core, [&] { return stage.core->resting(); }));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), "PROXY TCP4 ");
    CHECK(runUntil(*stage.core, [&] { return stage.core->activeConnections() == 1; }));
    const auto accepted = std::chrono::steady_clock::now();
    CHECK(!stage.core->resting());
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::proxy_protocol_timeout) == 1; }));
    // Had the tick stayed at its 1 s rest period, the deadline would be seen 1 s after the rest
    // began at the earliest, i.e. at least 800 ms after the accept.
    CHECK(std::chrono::steady_clock::now() - accepted < std::chrono::milliseconds(800));
    // Nothing waits any more: the tick rests again.
    CHECK(runUntil(*stage.core, [&] { return stage.core->resting(); }));
  });

  run("an idle relayed connection lets the tick rest, and the idle timeout still ends it", [] {
    TwoServers s;
    CoreOptions options;
    options.idleTimeoutMs = 300;
    Stage stage(s.fakeAddr, trusting("10.0.0.0/8", /*required=*/false), options);
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), "plain");
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, s.fake.get(), up));
    CHECK(runUntil(*stage.core, [&] { return stage.core->resting(); }));
    CHECK(stage.core->activeConnections() == 1);
    std::string got;
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::cx_idle_timeout) == 1; }));
    reader.join();
    CHECK(end == End::kReset);
    CHECK(stage.core->activeConnections() == 0);
  });

  run("drain while a header is awaited: the connection is reset and counted as drained", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32"));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), "PROXY ");
    CHECK(runUntil(*stage.core, [&] { return stage.core->activeConnections() == 1; }));
    stage.core->closeAllConnections(CloseReason::kDrained);
    CHECK(stage.core->activeConnections() == 0);
    std::string got;
    CHECK(readToEnd(client.get(), got) == End::kReset);
    CHECK(stage.stat(Stat::cx_close_drained) == 1);
    CHECK(stage.stat(Stat::downstream_cx_active) == 0);
    // The tick no longer sees it (it left the waiting list): nothing is counted twice.
    for (int i = 0; i < 5; ++i) stage.core->runOnce(10);
    CHECK(stage.stat(Stat::proxy_protocol_timeout) == 0);
  });

  run("a header naming our own listener is refused as a loop", [] {
    TwoServers s;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32"));
    UniqueFd client = connectTo(stage.listenAddr);
    sendAll(client.get(), v1Line(stage.listenAddr));
    std::string got;
    End end = End::kTimeout;
    std::thread reader([&] { end = readToEnd(client.get(), got); });
    CHECK(runUntil(*stage.core, [&] { return stage.stat(Stat::loop_rejected) == 1; }));
    reader.join();
    CHECK(end == End::kReset);
    CHECK(stage.stat(Stat::cx_close_refused) == 1);
  });
}

void sendTests() {
  run("send_proxy_protocol v2: the upstream reads a header naming client and destination, then the data", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.sendProxyProtocol = 2;
    ProxyProtocolOptions off;
    Stage stage(serverAddr, off, options);
    UniqueFd client = connectTo(stage.listenAddr);
    SocketAddress clientAddr;
    socklen_t len = SocketAddress::capacity();
    ::getsockname(client.get(), clientAddr.sockaddrPtr(), &len);
    sendAll(client.get(), "data");
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, server.get(), up));
    std::string got;
    proxy_protocol::ParseResult r;
    CHECK(runUntil(*stage.core, [&] {
      char buf[256];
      const ssize_t n = ::recv(up.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) got.append(buf, static_cast<size_t>(n));
      r = proxy_protocol::parse(reinterpret_cast<const uint8_t*>(got.data()), got.size());
      return r.status == proxy_protocol::ParseStatus::done && got.size() == r.header.length + 4;
    }));
    CHECK(r.header.version == 2);
    CHECK(r.header.command == proxy_protocol::Command::proxy);
    CHECK(r.header.source == clientAddr);
    CHECK(r.header.destination == serverAddr);
    CHECK(got.substr(r.header.length) == "data");
    CHECK(stage.stat(Stat::proxy_protocol_sent) == 1);
  });

  run("send_proxy_protocol v1 after a v2 header in: the real client, not the sender", [] {
    TwoServers s;
    CoreOptions options;
    options.sendProxyProtocol = 1;
    Stage stage(s.fakeAddr, trusting("127.0.0.1/32"), options);
    UniqueFd client = connectTo(stage.listenAddr);
    uint8_t header[proxy_protocol::kMaxWrittenLength];
    const size_t n = proxy_protocol::write(proxy_protocol::Version::v2, addr("192.0.2.7", 40000), s.namedAddr, header, sizeof header);
    sendAll(client.get(), std::string(reinterpret_cast<char*>(header), n) + "after");
    UniqueFd up;
    CHECK(acceptWhileRunning(*stage.core, s.named.get(), up));
    const std::string want = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 " + std::to_string(s.namedAddr.port()) + "\r\nafter";
    std::string got;
    CHECK(runUntil(*stage.core, [&] {
      char buf[256];
      const ssize_t k = ::recv(up.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (k > 0) got.append(buf, static_cast<size_t>(k));
      return got.size() >= want.size();
    }));
    CHECK(got == want);
  });
}

void cidrTests() {
  run("trusted sources: IPv4, IPv6, mapped IPv4 and non-byte prefixes", [] {
    std::vector<IpCidr> cidrs{*parseCidr("10.1.0.0/17"), *parseCidr("fd00:1::/64")};
    CHECK(cidrsContain(cidrs, addr("10.1.127.255", 1)));
    CHECK(!cidrsContain(cidrs, addr("10.1.128.0", 1)));
    CHECK(cidrsContain(cidrs, addr("::ffff:10.1.0.1", 1)));
    CHECK(cidrsContain(cidrs, addr("fd00:1::2", 1)));
    CHECK(!cidrsContain(cidrs, addr("fd00:2::2", 1)));
    CHECK(cidrsContain({*parseCidr("0.0.0.0/0")}, addr("192.0.2.1", 1)));
    // A CIDR of one family never trusts the other's addresses, whatever their bytes: 2001:db8::
    // starts with the bytes of 32.1.13.184.
    CHECK(!cidrsContain({*parseCidr("32.1.13.184/29")}, addr("2001:db8::1", 1)));
    CHECK(!cidrsContain({*parseCidr("::/0")}, addr("192.0.2.1", 1)));
    CHECK(cidrsContain({*parseCidr("::/0")}, addr("2001:db8::1", 1)));
  });
}

}  // namespace

int main() {
  std::signal(SIGPIPE, SIG_IGN);
  cidrTests();
  stageTests();
  sendTests();
  return splicegate::testing::finish();
}
