// Unit tests for the access log's core half: the JSON line of a record (every key, nulls, escaping,
// IPv6, refusals), the sampler's fraction, the bounded buffer (no allocation per append, drops
// counted, swapOut hands over a batch), and the records a WorkerCore writes on loopback: a relayed
// connection, a policy refusal at accept, a full buffer, and a core destroyed with a connection
// open after its listener was detached.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "test_harness.h"
#include "../core/access_log.h"
#include "../core/listener.h"
#include "../core/worker_core.h"
#include "../core/worker_events.h"

using namespace splicegate;

#include "alloc_counter.h"
#include "loopback.h"

namespace {

using namespace splicegate::testing;

PolicyRules rulesNamed(std::vector<std::string> names) {
  PolicyRules p;
  for (auto& n : names) {
    PolicyRule r;
    r.name = n;
    p.rules.push_back(r);
  }
  return p;
}

AccessRecord relayed() {
  AccessRecord r;
  r.wallTimeMs = 1764266400123;  // 2025-11-27T18:00:00.123Z
  r.setListener("main");
  r.client.set(addr("10.0.0.7", 40000));
  r.destination.set(addr("93.184.216.34", 443));
  r.source = DestinationSource::kSoOriginalDst;
  r.policy = AccessRecord::Policy::kAllow;
  r.policyIndex = 0;
  r.decision.allow = true;
  r.decision.by = PolicyDecision::By::kRule;
  r.decision.rule = 1;
  r.bytesSent = 517;
  r.bytesReceived = 1048576;
  r.connectUs = 1234;
  r.ttfbUs = 20;
  r.durationUs = 5000000;
  r.reason = CloseReason::kCompleted;
  return r;
}

// A core with one plain listener "plain" on loopback whose fake original destination is `target`,
// logging every connection; `allowLoopback`: a policy whose rule "lo" allows 127.0.0.0/8, else one
// that denies everything by default.
struct LoggedCore {
  UniqueFd listenSocket;
  std::unique_ptr<WorkerCore> core;
  SocketAddress listenAddr;
  LoggedCore(const SocketAddress& target, bool allowLoopback, size_t capacity = 64, bool http = false) {
    auto ops = std::make_unique<FixedDestinationOps>();
    ops->target = target;
    CoreOptions options;
    options.accessLogSample = 1;
    options.accessLogCapacity = capacity;
    PolicyRules policy;
    policy.denySpecial = false;
    policy.defaultAllow = false;
    if (allowLoopback) {
      PolicyRule rule;
      rule.name = "lo";
      rule.allow = true;
      rule.cidrs.push_back(*parseCidr("127.0.0.0/8"));
      policy.rules.push_back(rule);
    }
    options.policies.push_back(policy);
    SysError err;
    core = WorkerCore::create(options, std::move(ops), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "plain";
    lo.address = addr("127.0.0.1", 0);
    lo.http.enabled = http;
    listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
  }
  std::vector<AccessRecord> take(uint64_t* dropped = nullptr) {
    std::vector<AccessRecord> out;
    const uint64_t d = core->takeAccessRecords(out);
    if (dropped) *dropped = d;
    return out;
  }
};

bool acceptOn(WorkerCore& core, int server, UniqueFd& out) {
  return runUntil(core, [&] {
    pollfd p{server, POLLIN, 0};
    if (::poll(&p, 1, 0) != 1) return false;
    out.reset(::accept(server, nullptr, nullptr));
    return true;
  });
}

void coreTests() {
  run("a relayed connection's record: listener, client, destination and source, policy, bytes, timings", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    LoggedCore lc(serverAddr, /*allowLoopback=*/true);
    UniqueFd client = connectClient(lc.listenAddr);
    sockaddr_storage local{};
    socklen_t localLen = sizeof local;
    ::getsockname(client.get(), reinterpret_cast<sockaddr*>(&local), &localLen);
    CHECK(writeAll(client.get(), "hello", 5));
    ::shutdown(client.get(), SHUT_WR);
    UniqueFd up;
    CHECK(acceptOn(*lc.core, server.get(), up));
    std::string got;
    CHECK(runUntil(*lc.core, [&] {
      char b[64];
      const ssize_t n = ::recv(up.get(), b, sizeof b, MSG_DONTWAIT);
      if (n > 0) got.append(b, static_cast<size_t>(n));
      return n == 0;
    }));
    CHECK(got == "hello");
    CHECK(writeAll(up.get(), "world!", 6));
    up.reset();
    CHECK(runUntil(*lc.core, [&] { return lc.core->activeConnections() == 0; }));
    std::vector<AccessRecord> records = lc.take();
    CHECK_EQ(records.size(), 1u);
    const AccessRecord& r = records[0];
    CHECK(std::string(r.listener) == "plain");
    CHECK(r.client.get() == SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&local), localLen));
    CHECK(r.destination.get() == serverAddr);
    CHECK(r.source == DestinationSource::kSoOriginalDst);
    CHECK(r.policy == AccessRecord::Policy::kAllow);
    CHECK_EQ(r.bytesSent, 5u);
    CHECK_EQ(r.bytesReceived, 6u);
    CHECK(r.reason == CloseReason::kCompleted);
    CHECK(r.refusal == Refusal::kNone);
    // Measured, not merely set: the connect (non-blocking, completed by a later event) and the
    // first byte (written by this thread well after the connect) each took time, within the
    // connection's duration.
    CHECK(r.connectUs != AccessRecord::kNone && r.connectUs > 0);
    CHECK(r.ttfbUs != AccessRecord::kNone && r.ttfbUs > 0);
    CHECK(r.durationUs >= r.connectUs + r.ttfbUs);
    std::string line;
    AccessLogNames names(std::vector<PolicyRules>(1, PolicyRules{true, false, {PolicyRule{"lo", true, {}, {}}}}));
    appendAccessLine(r, names, 0, line);
    CHECK(line.find("\"policy\":\"allow\",\"rule\":\"lo\"") != std::string::npos);
    CHECK_EQ(lc.core->stats().get(Stat::access_log_records), 1u);
  });

  run("a connection the policy refuses at accept gets a record: refused, policy_denied, no bytes", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    LoggedCore lc(serverAddr, /*allowLoopback=*/false);
    UniqueFd client = connectClient(lc.listenAddr);
    CHECK(runUntil(*lc.core, [&] { return lc.core->stats().get(Stat::downstream_cx_total) == 1; }));
    std::vector<AccessRecord> records = lc.take();
    CHECK_EQ(records.size(), 1u);
    const AccessRecord& r = records[0];
    CHECK(std::string(r.listener) == "plain");
    CHECK(r.reason == CloseReason::kRefused);
    CHECK(r.refusal == Refusal::kPolicyDenied);
    CHECK(r.policy == AccessRecord::Policy::kDeny);
    CHECK(r.decision.by == PolicyDecision::By::kDefault);
    CHECK(r.destination.get() == serverAddr);
    CHECK_EQ(r.bytesSent, 0u);
    CHECK(r.connectUs == AccessRecord::kNone);
  });

  run("a connection refused as a loop names the destination it would have looped to", [] {
    // The original destination is another listener of the same core: relaying would connect the
    // proxy to itself. The record says where the connection was headed and how that was learnt.
    SysError err;
    ListenerOptions second;
    second.name = "second";
    second.address = addr("127.0.0.1", 0);
    SocketAddress secondAddr;
    UniqueFd secondSocket = openListenSocket(second, &secondAddr, err);
    CHECK(secondSocket);
    LoggedCore lc(secondAddr, /*allowLoopback=*/true);
    CHECK(!lc.core->attachListener(second, secondSocket.get(), nullptr));
    UniqueFd client = connectClient(lc.listenAddr);
    CHECK(runUntil(*lc.core, [&] { return lc.core->stats().get(Stat::loop_rejected) == 1; }));
    std::vector<AccessRecord> records = lc.take();
    CHECK_EQ(records.size(), 1u);
    const AccessRecord& r = records[0];
    CHECK(std::string(r.listener) == "plain");
    CHECK(r.reason == CloseReason::kRefused);
    CHECK(r.refusal == Refusal::kLoopRejected);
    CHECK(r.destination.get() == secondAddr);
    CHECK(r.source == DestinationSource::kSoOriginalDst);
  });

  run("a connection an http listener refuses as a loop names the destination it would have looped to", [] {
    // As on a relaying listener: the original destination is another listener of the same core.
    SysError err;
    ListenerOptions second;
    second.name = "second";
    second.address = addr("127.0.0.1", 0);
    SocketAddress secondAddr;
    UniqueFd secondSocket = openListenSocket(second, &secondAddr, err);
    CHECK(secondSocket);
    LoggedCore lc(secondAddr, /*allowLoopback=*/true, 64, /*http=*/true);
    CHECK(!lc.core->attachListener(second, secondSocket.get(), nullptr));
    UniqueFd client = connectClient(lc.listenAddr);
    CHECK(runUntil(*lc.core, [&] { return lc.core->stats().get(Stat::loop_rejected) == 1; }));
    std::vector<AccessRecord> records = lc.take();
    CHECK_EQ(records.size(), 1u);
    const AccessRecord& r = records[0];
    CHECK(std::string(r.listener) == "plain");
    CHECK(r.kind == AccessRecord::Kind::kConnection);
    CHECK(r.reason == CloseReason::kRefused);
    CHECK(r.refusal == Refusal::kLoopRejected);
    CHECK(r.destination.get() == secondAddr);
    CHECK(r.source == DestinationSource::kSoOriginalDst);
  });

  run("records beyond the buffer's capacity are dropped and counted, never waited for", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    LoggedCore lc(serverAddr, /*allowLoopback=*/false, /*capacity=*/2);
    std::vector<UniqueFd> clients;
    for (int i = 0; i < 5; ++i) clients.push_back(connectClient(lc.listenAddr));
    CHECK(runUntil(*lc.core, [&] { return lc.core->stats().get(Stat::downstream_cx_total) == 5; }));
    uint64_t dropped = 0;
    CHECK_EQ(lc.take(&dropped).size(), 2u);
    CHECK_EQ(dropped, 3u);
    CHECK_EQ(lc.core->stats().get(Stat::access_log_dropped), 3u);
    CHECK_EQ(lc.core->stats().get(Stat::access_log_records), 2u);
  });

  run("a core destroyed with a connection open after its listener was detached still names it", [] {
    SocketAddress serverAddr;
    UniqueFd server = listenOn(serverAddr);
    auto lc = std::make_unique<LoggedCore>(serverAddr, /*allowLoopback=*/true);
    UniqueFd client = connectClient(lc->listenAddr);
    UniqueFd up;
    CHECK(acceptOn(*lc->core, server.get(), up));
    CHECK(runUntil(*lc->core, [&] { return lc->core->activeConnections() == 1; }));
    lc->core->stopAccepting();
    lc->core->runOnce(0);  // frees the detached Listener where the core does so
    lc->core->closeAllConnections(CloseReason::kDrained);
    std::vector<AccessRecord> records = lc->take();
    CHECK_EQ(records.size(), 1u);
    CHECK(std::string(records[0].listener) == "plain");
    CHECK(records[0].reason == CloseReason::kDrained);
    lc.reset();
    // The destructor closes what is still open after freeing its listeners: the record it writes
    // must not read a freed Listener (AddressSanitizer in `npm test` checks this path).
    auto lc2 = std::make_unique<LoggedCore>(serverAddr, /*allowLoopback=*/true);
    UniqueFd client2 = connectClient(lc2->listenAddr);
    UniqueFd up2;
    CHECK(acceptOn(*lc2->core, server.get(), up2));
    CHECK(runUntil(*lc2->core, [&] { return lc2->core->activeConnections() == 1; }));
    lc2.reset();
  });
}

}  // namespace

int main() {
  std::signal(SIGPIPE, SIG_IGN);
  coreTests();
  run("a relayed connection's line has every key in order", [] {
    AccessLogNames names({rulesNamed({"corp", "web"})});
    std::string line;
    appendAccessLine(relayed(), names, 3, line);
    const std::string want =
        "{\"time\":\"2025-11-27T18:00:00.123Z\",\"type\":\"connection\",\"listener\":\"main\","
        "\"client\":\"10.0.0.7:40000\",\"destination\":\"93.184.216.34:443\",\"destination_source\":\"so_original_dst\","
        "\"policy\":\"allow\",\"rule\":\"web\",\"bytes_sent\":517,\"bytes_received\":1048576,\"connect_ms\":1.234,"
        "\"ttfb_ms\":0.020,\"duration_ms\":5000.000,\"close_reason\":\"completed\",\"refusal\":null,\"worker\":3}\n";
    if (line != want) std::fprintf(stderr, "  got  %s  want %s", line.c_str(), want.c_str());
    CHECK(line == want);
  });

  run("a refused connection: nulls where nothing happened, the refusal named", [] {
    AccessLogNames names({rulesNamed({})});
    AccessRecord r;
    r.wallTimeMs = 0;
    r.setListener("l6");
    r.client.set(addr("::1", 5555));
    r.destination.set(addr("2001:db8::1", 80));
    r.source = DestinationSource::kProxyProtocol;
    r.policy = AccessRecord::Policy::kDeny;
    r.decision.allow = false;
    r.decision.by = PolicyDecision::By::kSpecial;
    r.reason = CloseReason::kRefused;
    r.refusal = Refusal::kPolicyDenied;
    std::string line;
    appendAccessLine(r, names, 0, line);
    CHECK(line.find("\"time\":\"1970-01-01T00:00:00.000Z\"") != std::string::npos);
    CHECK(line.find("\"client\":\"[::1]:5555\",\"destination\":\"[2001:db8::1]:80\"") != std::string::npos);
    CHECK(line.find("\"destination_source\":\"proxy_protocol\"") != std::string::npos);
    CHECK(line.find("\"policy\":\"deny\",\"rule\":\"special\"") != std::string::npos);
    CHECK(line.find("\"connect_ms\":null,\"ttfb_ms\":null") != std::string::npos);
    CHECK(line.find("\"close_reason\":\"refused\",\"refusal\":\"policy_denied\"") != std::string::npos);
  });

  run("unknown addresses, no policy and no destination source are null", [] {
    AccessRecord r;
    r.reason = CloseReason::kRefused;
    r.refusal = Refusal::kNoOriginalDst;
    std::string line;
    appendAccessLine(r, AccessLogNames(), 1, line);
    CHECK(line.find("\"client\":null,\"destination\":null,\"destination_source\":null,\"policy\":null,\"rule\":null") !=
          std::string::npos);
    CHECK(line.find("\"refusal\":\"no_original_dst\"") != std::string::npos);
  });

  run("addresses round-trip through the 20-byte PackedAddress into the line", [] {
    static_assert(sizeof(PackedAddress) == 20, "in every connection twice");
    struct Case {
      const char* ip;
      uint16_t port;
      const char* printed;
    };
    const Case cases[] = {
        {"10.0.0.7", 40000, "\"10.0.0.7:40000\""},
        {"0.0.0.0", 0, "\"0.0.0.0:0\""},
        {"255.255.255.255", 65535, "\"255.255.255.255:65535\""},
        {"::1", 5555, "\"[::1]:5555\""},
        {"::", 1, "\"[::]:1\""},
        {"2001:db8:1:2:3:4:5:6", 443, "\"[2001:db8:1:2:3:4:5:6]:443\""},
        {"::ffff:10.0.0.1", 80, "\"[::ffff:10.0.0.1]:80\""},  // IPv4-mapped stays IPv6
        {"fe80::1", 8080, "\"[fe80::1]:8080\""},
    };
    for (const Case& c : cases) {
      const SocketAddress original = addr(c.ip, c.port);
      AccessRecord r = relayed();
      r.client.set(original);
      r.destination.set(original);
      CHECK(r.client.known());
      CHECK(r.client.get() == original);
      CHECK(r.client.get().family() == original.family());
      std::string line;
      appendAccessLine(r, AccessLogNames(), 0, line);
      const std::string want = std::string("\"client\":") + c.printed + ",\"destination\":" + c.printed + ",";
      if (line.find(want) == std::string::npos) std::fprintf(stderr, "  got  %s  want %s\n", line.c_str(), want.c_str());
      CHECK(line.find(want) != std::string::npos);
    }
    // A scope id is not part of what is kept or printed; family, IP and port are.
    sockaddr_in6 scoped{};
    scoped.sin6_family = AF_INET6;
    scoped.sin6_port = htons(80);
    scoped.sin6_scope_id = 2;
    scoped.sin6_addr.s6_addr[0] = 0xfe;
    scoped.sin6_addr.s6_addr[1] = 0x80;
    scoped.sin6_addr.s6_addr[15] = 1;
    PackedAddress p;
    p.set(SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&scoped), sizeof scoped));
    CHECK(p.get() == addr("fe80::1", 80));
    // An unknown address clears what was there, and prints null.
    p.set(SocketAddress());
    CHECK(!p.known());
    CHECK(p.get().family() == AF_UNSPEC);
    AccessRecord r = relayed();
    r.destination = p;
    std::string line;
    appendAccessLine(r, AccessLogNames(), 0, line);
    CHECK(line.find("\"client\":\"10.0.0.7:40000\",\"destination\":null,") != std::string::npos);
  });

  run("names are JSON-escaped and truncated to the record's capacity", [] {
    AccessRecord r = relayed();
    r.setListener(std::string("a\"b\\c\n") + std::string(100, 'x'));
    AccessLogNames names({rulesNamed({"x", "y\"z"})});
    std::string line;
    appendAccessLine(r, names, 0, line);
    CHECK(line.find("\"listener\":\"a\\\"b\\\\c\\u000a" + std::string(AccessRecord::kNameCapacity - 1 - 6, 'x') + "\"") !=
          std::string::npos);
    CHECK(line.find("\"rule\":\"y\\\"z\"") != std::string::npos);
  });

  run("every close reason and destination source has its contract name", [] {
    CHECK(std::string(closeReasonName(CloseReason::kIdleTimeout)) == "idle_timeout");
    CHECK(std::string(closeReasonName(CloseReason::kRefused)) == "refused");
    CHECK(std::string(destinationSourceName(DestinationSource::kTproxy)) == "tproxy");
    CHECK(std::string(refusalName(Refusal::kLoopRejected)) == "loop_rejected");
  });

  run("the sampler keeps all, none, or about the fraction asked", [] {
    AccessSampler all(1.0, 7), none(0.0, 7), quarter(0.25, 7);
    CHECK(all.enabled() && !none.enabled() && quarter.enabled());
    int kept = 0;
    for (int i = 0; i < 100000; ++i) {
      CHECK(all.take());
      CHECK(!none.take());
      if (quarter.take()) ++kept;
    }
    CHECK(kept > 24000 && kept < 26000);
  });

  run("the buffer appends without allocating, counts drops, and swaps a batch out", [] {
    BoundedBuffer<AccessRecord> buffer(4);
    const size_t before = g_allocations;
    for (int i = 0; i < 6; ++i) {
      AccessRecord* r = buffer.append();
      if (r) r->bytesSent = static_cast<uint64_t>(i);
    }
    CHECK_EQ(g_allocations, before);
    std::vector<AccessRecord> out;
    CHECK_EQ(buffer.swapOut(out), 2u);
    CHECK_EQ(out.size(), 4u);
    CHECK_EQ(out[3].bytesSent, 3u);
    CHECK_EQ(buffer.size(), 0u);
    const size_t afterSwap = g_allocations;
    for (int i = 0; i < 4; ++i) CHECK(buffer.append() != nullptr);  // room for a full batch again
    CHECK_EQ(g_allocations, afterSwap);
    CHECK(buffer.append() == nullptr);
    CHECK_EQ(buffer.swapOut(out), 1u);
  });

  run("the buffer tells another thread whether a take would find anything, a drop included", [] {
    BoundedBuffer<AccessRecord> buffer(1);
    CHECK(!buffer.holding());
    CHECK(buffer.append() != nullptr);
    CHECK(buffer.holding());
    std::vector<AccessRecord> out;
    buffer.swapOut(out);
    CHECK(!buffer.holding());  // taken: the periodic drain may skip the loop thread again
    CHECK(buffer.append() != nullptr);
    CHECK(buffer.append() == nullptr);  // dropped: the count still has to reach the control layer
    buffer.swapOut(out);
    CHECK(!buffer.holding());
    CHECK(buffer.append() != nullptr);
    CHECK_EQ(buffer.take(out), 0u);
    CHECK(!buffer.holding());
    BoundedBuffer<AccessRecord> full(0);  // the access log off: every append is a drop
    CHECK(full.append() == nullptr);
    CHECK(full.holding());
    CHECK_EQ(full.swapOut(out), 1u);
    CHECK(!full.holding());
  });

  return splicegate::testing::finish();
}
