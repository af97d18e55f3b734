// The orphan registry (cpp/core/orphan_registry.h): a running LoopThread whose owner is gone stops
// accepting, keeps relaying what it has, and ends on its own (joined and freed by the reaper) once
// its last connection closed, at its deadline (with resets), or when told to (endAll). Real
// loopback sockets; every wait is a bounded liveness limit on a condition, never a sleep.

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "loopback.h"
#include "test_harness.h"
#include "../core/listener.h"
#include "../core/loop_thread.h"
#include "../core/orphan_registry.h"
#include "../core/policy_rules.h"
#include "../core/worker_core.h"

using namespace splicegate;
using namespace splicegate::testing;

namespace {

UniqueFd acceptWithin(int listenFd, int timeoutMs = 10000) {
  pollfd p{listenFd, POLLIN, 0};
  if (::poll(&p, 1, timeoutMs) != 1) return {};
  return UniqueFd(::accept4(listenFd, nullptr, nullptr, SOCK_CLOEXEC));
}

// One client connection relayed by a worker loop (a LoopThread, as the addon runs it) to a server.
struct RelayedPair {
  SocketAddress serverAddr;
  UniqueFd server;
  SocketAddress listenAddr;
  UniqueFd listenSocket;  // the process's socket: outlives the loop, as in the addon
  std::unique_ptr<LoopThread> loop;
  UniqueFd client;
  UniqueFd upstream;  // the server's side of the relayed connection

  // http: an HTTP listener (docs/HTTP.md), which connects upstream only for a request, so
  // `upstream` stays empty here.
  explicit RelayedPair(CoreOptions options = {}, bool http = false) {
    server = listenOn(serverAddr);
    auto ops = std::make_unique<FixedDestinationOps>();
    ops->target = serverAddr;
    SysError err;
    auto core = WorkerCore::create(options, std::move(ops), err);
    CHECK(core);
    ListenerOptions lo;
    lo.name = "test";
    lo.address = addr("127.0.0.1", 0);
    if (http) {
      lo.http.enabled = true;
      lo.http.trustedSources = {*parseCidr("127.0.0.0/8")};
    }
    listenSocket = openListenSocket(lo, &listenAddr, err);
    CHECK(listenSocket);
    CHECK(!core->attachListener(lo, listenSocket.get(), nullptr));
    loop = std::make_unique<LoopThread>(std::move(core));
    loop->start();
    client = connectClient(listenAddr);
    if (http) return;
    upstream = acceptWithin(server.get());
    CHECK(upstream);
  }

  // One message each way through the relay.
  bool roundTrip(const std::string& up, const std::string& down) const {
    if (!writeAll(client.get(), up.data(), up.size())) return false;
    std::string got;
    if (readUntil(upstream.get(), got, [&](const std::string& s) { return s.size() >= up.size(); }) != End::kOpen) return false;
    if (got != up) return false;
    if (!writeAll(upstream.get(), down.data(), down.size())) return false;
    got.clear();
    return readUntil(client.get(), got, [&](const std::string& s) { return s.size() >= down.size(); }) == End::kOpen &&
           got == down;
  }
};

double orphanStat(const OrphanRegistry& registry, Stat s) {
  std::vector<double> values(Stats::size());
  registry.readStats(values.data());
  return values[static_cast<size_t>(s)];
}

double closedTotal(const OrphanRegistry& registry) {
  std::vector<double> values(Stats::size());
  registry.readStats(values.data());
  double sum = 0;
  for (size_t i = 0; i < Stats::size(); ++i) {
    if (std::strncmp(kStatNames[i], "cx_close_", 9) == 0) sum += values[i];
  }
  return sum;
}

template <typename Pred>
bool waitFor(Pred pred, int timeoutMs = 10000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

OrphanRegistry::Counters snapshot(const Stats& stats) {
  OrphanRegistry::Counters out{};
  for (size_t i = 0; i < Stats::size(); ++i) out[i] = stats.get(static_cast<Stat>(i));
  return out;
}

}  // namespace

int main() {
  run("an orphan accepts nothing new, keeps relaying, and ends (joined, freed) after its last connection closes", [] {
    RelayedPair r;
    CHECK(r.roundTrip("ping", "pong"));
    OrphanRegistry registry;
    registry.adopt(std::move(r.loop), OrphanRegistry::Counters{}, 60000);
    CHECK(registry.count() == 1);
    CHECK(registry.adoptedTotal() == 1);
    // It left the listener (the gauge is set as it detaches)...
    CHECK(waitFor([&] { return orphanStat(registry, Stat::listeners_active) == 0; }));
    // ...so a new connection waits in the shared socket's queue for another worker (here: us).
    UniqueFd late = connectClient(r.listenAddr);
    UniqueFd taken = acceptWithin(r.listenSocket.get());
    CHECK(taken);
    // The connection it had goes on, both ways.
    CHECK(r.roundTrip("more", "data"));
    CHECK(registry.count() == 1);
    CHECK(orphanStat(registry, Stat::downstream_cx_active) == 1);
    // Both ends close normally: the orphan has nothing left and ends.
    ::shutdown(r.client.get(), SHUT_WR);
    ::shutdown(r.upstream.get(), SHUT_WR);
    std::string rest;
    CHECK(readToEnd(r.client.get(), rest) == End::kEof);
    CHECK(registry.waitEmpty(10000));
    CHECK(registry.count() == 0);
    // The counts stay after it is gone: with nothing reported by its owner, all of them.
    CHECK(orphanStat(registry, Stat::downstream_cx_total) == 1);
    CHECK(orphanStat(registry, Stat::downstream_cx_active) == 0);
    CHECK(orphanStat(registry, Stat::cx_drained) == 0);
    CHECK(orphanStat(registry, Stat::cx_close_completed) == 1);
  });

  run("an orphan with reported counters adds only the difference", [] {
    RelayedPair r;
    CHECK(r.roundTrip("ping", "pong"));
    CHECK(waitFor([&] { return r.loop->stats().get(Stat::bytes_sent) == 4; }));
    const OrphanRegistry::Counters reported = snapshot(r.loop->stats());
    OrphanRegistry registry;
    registry.adopt(std::move(r.loop), reported, 60000);
    CHECK(r.roundTrip("12345678", "abc"));
    r.client.reset();
    r.upstream.reset();
    CHECK(registry.waitEmpty(10000));
    CHECK(orphanStat(registry, Stat::downstream_cx_total) == 0);  // accepted before the report
    CHECK(orphanStat(registry, Stat::bytes_received) == 8);
    CHECK(orphanStat(registry, Stat::bytes_sent) == 3);
    CHECK(closedTotal(registry) == 1);
  });

  run("an orphan past its deadline cuts what it still relays with a reset, then ends", [] {
    RelayedPair r;
    CHECK(r.roundTrip("ping", "pong"));
    OrphanRegistry registry;
    registry.adopt(std::move(r.loop), OrphanRegistry::Counters{}, 0);
    std::string rest;
    CHECK(readToEnd(r.client.get(), rest) == End::kReset);
    CHECK(registry.waitEmpty(10000));
    CHECK(orphanStat(registry, Stat::cx_drained) == 1);
  });

  run("endAll: every orphan cuts its connections with resets and ends (the process's drain)", [] {
    RelayedPair a;
    RelayedPair b;
    OrphanRegistry registry;
    registry.adopt(std::move(a.loop), OrphanRegistry::Counters{}, 60000);
    registry.adopt(std::move(b.loop), OrphanRegistry::Counters{}, 60000);
    CHECK(registry.count() == 2);
    CHECK(a.roundTrip("x", "y"));
    registry.endAll();
    std::string rest;
    CHECK(readToEnd(a.client.get(), rest) == End::kReset);
    CHECK(readToEnd(b.client.get(), rest) == End::kReset);
    CHECK(registry.waitEmpty(10000));
    CHECK(registry.adoptedTotal() == 2);
    CHECK(orphanStat(registry, Stat::cx_drained) == 2);
  });

  run("a registry destroyed with orphans still relaying ends them first", [] {
    RelayedPair r;
    {
      OrphanRegistry registry;
      registry.adopt(std::move(r.loop), OrphanRegistry::Counters{}, 60000);
      CHECK(r.roundTrip("x", "y"));
    }
    std::string rest;
    CHECK(readToEnd(r.client.get(), rest) == End::kReset);
  });

  run("an orphan's access-log records reach the registry's queue, before and after the death, as lines with its worker id", [] {
    CoreOptions options;
    options.accessLogSample = 1;
    options.accessLogCapacity = 64;
    RelayedPair first(options);
    // A connection that closed before the death, its record not yet drained by the owner...
    CHECK(first.roundTrip("a", "b"));
    first.client.reset();
    first.upstream.reset();
    CHECK(waitFor([&] { return first.loop->stats().get(Stat::access_log_records) == 1; }));
    OrphanRegistry registry;
    // ...and the one still open at the death (the second client, on the same loop).
    UniqueFd client2 = connectClient(first.listenAddr);
    UniqueFd upstream2 = acceptWithin(first.server.get());
    CHECK(upstream2);
    registry.adopt(std::move(first.loop), OrphanRegistry::Counters{}, 60000,
                   OrphanAccessLog{std::make_shared<const AccessLogNames>(), 7});
    client2.reset();
    upstream2.reset();
    CHECK(registry.waitEmpty(10000));
    std::string lines;
    CHECK(registry.takeAccessLines(lines) == 2);
    size_t n = 0;
    for (size_t at = lines.find("\"worker\":7"); at != std::string::npos; at = lines.find("\"worker\":7", at + 1)) ++n;
    CHECK(n == 2);
    CHECK(registry.takeAccessLines(lines) == 0);  // taken once
    CHECK(orphanStat(registry, Stat::access_log_dropped) == 0);
  });

  run("an HTTP orphan closes its idle pooled upstream connections as it ends, and counts them before its counters are final", [] {
    RelayedPair r(CoreOptions{}, /*http=*/true);
    const std::string req = "GET /1 HTTP/1.1\r\nhost: test\r\n\r\n";
    CHECK(writeAll(r.client.get(), req.data(), req.size()));
    UniqueFd upstream = acceptWithin(r.server.get());
    CHECK(upstream);
    std::string got;
    CHECK(readUntil(upstream.get(), got, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }) ==
          End::kOpen);
    const std::string resp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    CHECK(writeAll(upstream.get(), resp.data(), resp.size()));
    got.clear();
    CHECK(readUntil(r.client.get(), got, [&](const std::string& b) { return b.size() >= resp.size(); }) == End::kOpen);
    CHECK(got == resp);
    // The response's end pooled the upstream in the same pump that sent it; the adoption is posted
    // to the loop after that. The client leaves: the orphan has no connection, only the idle upstream.
    OrphanRegistry registry;
    registry.adopt(std::move(r.loop), OrphanRegistry::Counters{}, 60000);
    r.client.reset();
    CHECK(registry.waitEmpty(10000));
    std::string rest;
    CHECK(readToEnd(upstream.get(), rest) == End::kEof);  // closed with FIN: its exchange was complete
    CHECK(orphanStat(registry, Stat::http_pool_discarded) == 1);
    CHECK(orphanStat(registry, Stat::cx_close_completed) == 1);
  });

  return finish();
}
