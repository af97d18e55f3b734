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
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "test_harness.h"
#include "../core/loop_thread.h"
#include "../core/host_cache.h"
#include "../core/original_dst.h"
#include "../core/pipe_pool.h"
#include "../core/policy_set.h"
#include "../core/worker_events.h"
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
  LocalIp isLocalIp(const SocketAddress&) override { return LocalIp::kNo; }
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

struct Proxy {
  std::unique_ptr<LoopThread> thread;
  SocketAddress listenAddr;
  explicit Proxy(const SocketAddress& target, CoreOptions options = {}) {
    auto ops = std::make_unique<FixedDestinationOps>();
    ops->target = target;
    SysError err;
    auto core = WorkerCore::create(options, std::move(ops), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "test";
    lo.address = addr("127.0.0.1", 0);
    CHECK(!core->openListener(lo, &listenAddr));
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
  run("max_downstream_connections refuses the next client at once", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    CoreOptions options;
    options.maxDownstreamConnections = 1;
    Proxy proxy(serverAddr, options);
    UniqueFd first = connectTo(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));  // the first one is relayed
    CHECK(upstream);
    UniqueFd second = connectTo(proxy.listenAddr);
    pollfd p{second.get(), POLLIN, 0};
    CHECK(::poll(&p, 1, 3000) == 1);
    char byte;
    const ssize_t n = ::recv(second.get(), &byte, 1, 0);
    CHECK(n < 0 && errno == ECONNRESET);  // refused with a reset, nothing relayed
    CHECK(proxy.waitStat(Stat::downstream_cx_overflow, 1));
    CHECK(proxy.stat(Stat::upstream_cx_total) == 1);
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
  run("openListener refuses a policy index beyond the configured policies", [] {
    CoreOptions options;
    options.policies = {policyOf({}, true)};
    SysError err;
    auto core = WorkerCore::create(options, err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "bad";
    lo.address = addr("127.0.0.1", 0);
    lo.policy = 1;
    CHECK(static_cast<bool>(core->openListener(lo, nullptr)));
    lo.policy = 0;
    CHECK(!core->openListener(lo, nullptr));
  });
  run("a denied destination is reset at once, counted, buffered as an event and never connected", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);  // 127.0.0.1: loopback, a built-in deny
    CoreOptions options;
    options.policies = {policyOf({}, true)};
    Proxy proxy(serverAddr, options);
    UniqueFd client = connectTo(proxy.listenAddr);
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
    CHECK(events[0].source.toString().rfind("127.0.0.1:", 0) == 0);
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
    UniqueFd client = connectTo(proxy.listenAddr);
    UniqueFd upstream(::accept(server.get(), nullptr, nullptr));
    CHECK(upstream);  // deny_special off and the rule names another port: relayed
    CHECK(policyCounter(proxy.thread->core(), "policy_denied") == 0);

    CoreOptions denying;
    std::vector<PortRange> thisPort = {{serverAddr.port(), serverAddr.port()}};
    denying.policies = {policyOf({ruleOf("this-port", false, "127.0.0.0/8", thisPort)}, false)};
    Proxy refusing(serverAddr, denying);
    UniqueFd refused = connectTo(refusing.listenAddr);
    CHECK(isReset(refused.get()));
    CHECK(policyCounter(refusing.thread->core(), "policy.this-port.denied") == 1);
    std::vector<WorkerEvent> events;
    onLoop(*refusing.thread, [&](WorkerCore& c) { c.takeEvents(events); });
    CHECK(events.size() == 1 && refusing.thread->core().policies().decidedBy(0, events[0].decision) == "this-port");
  });
}

// --- out of fds ---------------------------------------------------------------------------------

void fdExhaustionTests() {
  run("upstream socket() out of fds: the spare fd serves the accepted client, accepting pauses, the next waits", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    Proxy proxy(serverAddr);
    // Unconnected client sockets made now: connecting them later takes no new fd.
    UniqueFd first(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    UniqueFd second(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    // Fill every hole below the highest open fd, so exactly one fd number is left under the limit.
    std::vector<UniqueFd> fillers;
    int highest = 0;
    for (;;) {
      UniqueFd f(::fcntl(0, F_DUPFD_CLOEXEC, 0));
      CHECK(f);
      const int n = f.get();
      fillers.push_back(std::move(f));
      if (n > highest) highest = n;
      // Stop once a dup lands above every fd opened before it: no holes remain below it.
      bool holes = false;
      for (int i = 0; i < n; ++i) {
        if (::fcntl(i, F_GETFD) < 0) holes = true;
      }
      if (!holes) break;
    }
    fillers.pop_back();  // frees the highest number: the single fd left
    rlimit saved{};
    CHECK(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
    rlimit low = saved;
    low.rlim_cur = static_cast<rlim_t>(highest + 1);
    CHECK(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    // accept4 takes the last fd; socket() then fails with EMFILE and the spare fd stands in.
    CHECK(::connect(first.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
    const bool connecting = proxy.waitStat(Stat::upstream_cx_total, 1);
    const bool paused = proxy.stat(Stat::downstream_cx_accept_paused) >= 1;
    CHECK(::connect(second.get(), proxy.listenAddr.sockaddrPtr(), proxy.listenAddr.length()) == 0);
    // Several ticks pass (50 ms each) with no fd to take back the spare: the second stays queued.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const uint64_t acceptedWhileOut = proxy.stat(Stat::downstream_cx_total);
    const uint64_t failed = proxy.stat(Stat::upstream_cx_connect_fail);
    CHECK(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
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
  policyTests();
  fdExhaustionTests();
  return splicegate::testing::finish();
}
