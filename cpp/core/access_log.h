// The access log's core half: one fixed-size record per relayed (or refused) connection and per
// HTTP-listener request, written by the loop thread into a bounded per-worker buffer
// (worker_events.h) when it ends, and the JSON line it becomes (formatted off the loop thread, by the addon on the JS thread).
//
// A record holds no pointer and no string of variable length, so appending one never allocates
// and a record stays valid after its connection, listener and policy are gone. The control layer
// drains the buffer every ~100 ms; a record that finds it full is dropped and counted
// (access_log_dropped), never waited for.
//
// Line format (docs/CONFIG.md "access_log"): one JSON object per line, keys in this order, every key
// always present (null when it does not apply). "type" names the record's kind; a later kind (an
// HTTP request) adds keys after "worker" and keeps the ones here with the same meaning:
//   {"time","type":"connection","listener","client","destination","destination_source","policy",
//    "rule","bytes_sent","bytes_received","connect_ms","ttfb_ms","duration_ms","close_reason","refusal","worker"}
// A request on a `mode: http` listener (type "request") adds, after "worker":
//   "method","status","error"
#pragma once

#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "close_reason.h"
#include "policy.h"
#include "policy_rules.h"
#include "socket_address.h"

namespace splicegate {

// How the destination was found. Names are a contract (the "destination_source" values): add,
// never rename. The HTTP listener adds header and connect.
#define SPLICEGATE_DESTINATION_SOURCES(X)  \
  X(None, none)                  /* none found (refused before) */ \
  X(SoOriginalDst, so_original_dst) /* SO_ORIGINAL_DST (iptables REDIRECT/DNAT) */ \
  X(Tproxy, tproxy)              /* the accepted socket's local address (TPROXY) */ \
  X(ProxyProtocol, proxy_protocol) /* a trusted PROXY header */ \
  X(Header, header)              /* the HTTP listener's routing header */ \
  X(Connect, connect)            /* an HTTP CONNECT request's target */

enum class DestinationSource : uint8_t {
#define SPLICEGATE_DST_ENUM(Name, name) k##Name,
  SPLICEGATE_DESTINATION_SOURCES(SPLICEGATE_DST_ENUM)
#undef SPLICEGATE_DST_ENUM
};

// Why a connection was refused before anything was relayed (close_reason "refused"; at accept no
// Connection exists and no CloseReason is counted, but the line is written all the same, so the
// log has one line per downstream_cx_total). Named after the counter that also counts it.
#define SPLICEGATE_REFUSALS(X)                                                 \
  X(None, none)                                                                \
  X(PolicyDenied, policy_denied)       /* the destination policy */            \
  X(LoopRejected, loop_rejected)       /* would connect back into the proxy */ \
  X(NoOriginalDst, no_original_dst)    /* not redirected: nothing to relay to */ \
  X(DownstreamOverflow, downstream_cx_overflow) /* this worker's share is full */ \
  X(UpstreamOverflow, upstream_cx_overflow)     /* a host circuit breaker */     \
  X(ProxyProtocolUntrusted, proxy_protocol_untrusted) /* header from an untrusted peer */

enum class Refusal : uint8_t {
#define SPLICEGATE_REFUSAL_ENUM(Name, name) k##Name,
  SPLICEGATE_REFUSALS(SPLICEGATE_REFUSAL_ENUM)
#undef SPLICEGATE_REFUSAL_ENUM
};

const char* destinationSourceName(DestinationSource source);
const char* refusalName(Refusal refusal);
const char* closeReasonName(CloseReason reason);

// An IPv4 or IPv6 address in 20 bytes (a sockaddr_in6 is 28, sockaddr_storage 128): in every
// connection twice. Family, IP and port, what the line prints; an IPv6 scope id and flow label are
// not kept. The family is AF_UNSPEC when unknown.
struct PackedAddress {
  uint8_t ip[16] = {};  // IPv4: the first 4 bytes; network order
  uint16_t port = 0;    // host order
  uint8_t family = AF_UNSPEC;
  void set(const SocketAddress& address);
  bool known() const { return family == AF_INET || family == AF_INET6; }
  SocketAddress get() const;
};
static_assert(sizeof(PackedAddress) == 20, "PackedAddress is in every connection twice");

struct AccessRecord {
  static constexpr size_t kNameCapacity = 65;  // listener names are at most 64 characters
  static constexpr uint64_t kNone = UINT64_MAX;  // a time that did not happen (no connect, no byte)
  enum class Policy : uint8_t { kNone, kAllow, kDeny };  // kNone: no policy was consulted
  enum class Kind : uint8_t { kConnection, kRequest };
  static constexpr size_t kErrorCapacity = 24;  // the longest x-splicegate-error reason is 18
  static constexpr uint8_t kNoMethod = UINT8_MAX;  // no request head was parsed

  uint64_t wallTimeMs = 0;  // CLOCK_REALTIME of the close, milliseconds
  uint64_t bytesSent = 0;      // client -> upstream (the client's bytes)
  uint64_t bytesReceived = 0;  // upstream -> client
  uint64_t connectUs = kNone;  // upstream connect, from its start to established
  uint64_t ttfbUs = kNone;     // established -> first upstream byte to the client
  uint64_t durationUs = 0;     // accept -> close
  PackedAddress client;        // the TCP peer, or the client a PROXY header named
  PackedAddress destination;   // the one judged and dialled (after upstream_port_override)
  PolicyDecision decision;
  uint32_t policyIndex = 0;    // which policy decided ([0] top level)
  Policy policy = Policy::kNone;
  DestinationSource source = DestinationSource::kNone;
  CloseReason reason = CloseReason::kCompleted;
  Refusal refusal = Refusal::kNone;
  Kind kind = Kind::kConnection;
  // Requests only (Kind::kRequest): the llhttp method, the status sent to the client (0: none
  // was), and the x-splicegate-error reason splicegate answered with ("" when none).
  uint8_t method = kNoMethod;
  uint16_t status = 0;
  char error[kErrorCapacity] = {};  // NUL-terminated
  char listener[kNameCapacity] = {};  // NUL-terminated

  void setListener(const std::string& name);
  void setError(const char* reason);
};

// Which records are kept: a fraction `sample` of connections, decided at the close before the
// record is written (an unsampled connection costs one random number, nothing else). 0 = none.
class AccessSampler {
 public:
  AccessSampler() = default;
  AccessSampler(double sample, uint64_t seed);
  bool enabled() const { return enabled_; }
  bool take() {
    if (all_) return true;
    if (!enabled_) return false;
    // xorshift64*: fast, good enough to pick a fraction, no shared state between workers.
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return static_cast<uint32_t>((state_ * 0x2545F4914F6CDD1DULL) >> 32) < threshold_;
  }

 private:
  bool enabled_ = false;
  bool all_ = false;
  uint32_t threshold_ = 0;
  uint64_t state_ = 1;
};

// The rule names a record's PolicyDecision refers to, copied once from the options so that
// formatting never touches the worker's compiled policies (they belong to the loop thread).
class AccessLogNames {
 public:
  AccessLogNames() = default;
  explicit AccessLogNames(const std::vector<PolicyRules>& policies);
  const std::string& ruleName(uint32_t policy, const PolicyDecision& decision) const;

 private:
  std::vector<std::vector<std::string>> rules_;
};

// Appends r as one JSON line (with its '\n') to out.
void appendAccessLine(const AccessRecord& r, const AccessLogNames& names, uint32_t worker, std::string& out);

}  // namespace splicegate
