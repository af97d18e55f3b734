// Unit tests for the access log's core half: the JSON line of a record (every key, nulls, escaping,
// IPv6, refusals), the sampler's fraction, and the bounded buffer (no allocation per append, drops
// counted, swapOut hands over a batch).
#include <string>
#include <vector>

#include "test_harness.h"
#include "../core/access_log.h"
#include "../core/worker_events.h"

using namespace splicegate;

#include "alloc_counter.h"

namespace {

using splicegate::testing::run;

SocketAddress addr(const char* ip, uint16_t port) { return *SocketAddress::fromIp(ip, port); }

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

}  // namespace

int main() {
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

  return splicegate::testing::finish();
}
