// Plain option structs, validated by the control layer and copied once into the core: the core
// never walks JS objects.
//
// Where defaults live: a configured proxy gets every field that has a config key explicitly from
// the control layer (src/proxy/native-options.ts -> cpp/addon/option_reader.cc), so the one source
// of those defaults is src/config/schema.ts (DEFAULTS), documented in docs/CONFIG.md and checked by
// test/config-defaults.test.ts. The initialisers below serve the C++ unit tests, which build a
// CoreOptions directly, and the fields without a config key (maxCopyBuffers, relayBudgetBytes,
// acceptBatch), which only these set. Where a config default cannot be written here they differ:
// max_connections/max_pending 0 (no per-host bound) reach the core as 2^53 - 1, and
// max_downstream_connections 0 as a share of the fd limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "policy_rules.h"
#include "shared_host_counts.h"
#include "socket_address.h"

namespace splicegate {

struct CoreOptions {
  uint32_t connectTimeoutMs = 5000;
  uint32_t idleTimeoutMs = 3600 * 1000;
  uint32_t upstreamMark = 0;  // SO_MARK on upstream sockets; 0 = leave unset
  uint32_t cleanupIntervalMs = 5000;  // unused hosts leave the cache after this long
  uint16_t upstreamPortOverride = 0;  // Envoy's upstream_port_override; 0 = keep the original port
  // Per-worker shares of the configured limits (the control layer divides by the worker count),
  // except the per-host ones: with sharedHostCounts they bound the process (all workers, config
  // generations and orphaned loops that share it) and are passed whole.
  size_t maxHosts = 10000;
  uint64_t maxConnectionsPerHost = 1024;
  uint64_t maxPendingPerHost = 1024;
  // Where the per-host connection counts are kept across workers (host_cache.h); the addon passes
  // SharedHostCounts::process(). Null: per-host limits bound this worker only (core tests).
  SharedHostCounts* sharedHostCounts = nullptr;
  uint64_t maxDownstreamConnections = 1 << 20;
  // Preconnect: warm sockets per used host, for these destination ports only; 0 = off.
  std::vector<uint16_t> preconnectPorts;
  uint32_t preconnectPerHost = 0;
  uint32_t preconnectTtlMs = 2000;
  // Pipes per worker (each is two fds). In use only while a direction has bytes in flight.
  size_t maxPipes = 2048;
  size_t maxIdlePipes = 128;
  size_t pipeSize = 0;  // bytes; 0 = the kernel's default (64 KiB)
  // Small-message path: a direction whose reads stay below spliceThreshold copies through a
  // pooled buffer (recv/send); one that fills a whole buffer switches to splice(2).
  size_t copyBufferSize = 16384;
  // Copy buffers per worker (lent plus pooled); 0 = derived from memory: 64 MiB worth
  // (4096 x 16 KiB), or 1/64 of physical memory if that is less. A direction that finds none (and
  // no pipe) waits for one to be released.
  size_t maxCopyBuffers = 0;
  // Bytes one connection may move per wakeup before yielding to the others.
  size_t relayBudgetBytes = 1 << 20;
  // Upper bound on accepts per listener wakeup, so a connect storm cannot starve relaying.
  int acceptBatch = 64;
  // Latency histograms on (default) or off, for the recording-cost A/B in bench/.
  bool recordLatency = true;
  // Relay strategy: "auto" (copy small, splice bulk), "splice" (always), "copy" (never splice).
  enum class RelayMode { kAuto, kSplice, kCopy } relayMode = RelayMode::kAuto;
  // PROXY protocol header written at the start of every upstream connection: 0 = off, 1 or 2 = that
  // version (cluster.send_proxy_protocol).
  uint8_t sendProxyProtocol = 0;
  // Upstream sockets bind to the client's IP (IP_TRANSPARENT, kernel-chosen port), so the
  // destination sees the client (cluster.original_source). Disables preconnect: a warm socket is
  // opened before its client is known.
  bool originalSource = false;
  // Access log (access_log.h): the fraction of connections that get a record, decided when each
  // closes; 0 = off (no buffer is allocated). Records wait in a buffer of accessLogCapacity until
  // the control layer drains them; what does not fit is counted in access_log_dropped.
  double accessLogSample = 0;
  size_t accessLogCapacity = 16384;
  // Destination policies (policy.h): [0] is the top-level `policy`, then one per listener that
  // carries its own. Each worker compiles its own DestinationPolicy from these once. Empty = no
  // policy at all (every destination allowed, no special denies).
  std::vector<PolicyRules> policies;
  // HTTP listeners' upstream keep-alive pool (cluster.http_pool), per worker: idle connections
  // kept per original host (the worker's share), and how long one may sit idle.
  uint32_t httpPoolMaxIdlePerHost = 16;
  uint32_t httpPoolIdleTimeoutMs = 60000;
  // Idle connections the worker's pool keeps in all, whatever the hosts: the control layer derives
  // it from the open-files limit (src/proxy/native-options.ts), so that a pool spread over many
  // hosts cannot hold the fds the connections need. 0 = no total bound.
  size_t httpPoolMaxIdle = 0;
  // UDP listeners (udp_relay.h): a (client, original destination) session ends after this long
  // without a datagram either way (cluster.udp_session_timeout); at most udpMaxSessions per worker
  // (cluster.udp_max_sessions_per_worker), the one idle longest evicted to make room.
  uint32_t udpSessionTimeoutMs = 60000;
  size_t udpMaxSessions = 4096;
};

// listeners[].proxy_protocol: a PROXY v1/v2 header read before anything is connected.
struct ProxyProtocolOptions {
  bool enabled = false;
  // The peer addresses (of the TCP connection) allowed to send a header.
  std::vector<IpCidr> trustedSources;
  // true: a connection without a valid header from a trusted peer is reset (one from an untrusted
  // peer at accept). false: one whose first bytes are no PROXY signature is relayed as plain
  // traffic; a header from an untrusted peer is still reset (proxy_protocol_untrusted).
  bool required = true;
  uint32_t timeoutMs = 3000;  // the whole header must arrive within this long after accept
};

// listeners[].http (mode: http): each request is routed on its own (docs/HTTP.md).
struct HttpListenerOptions {
  bool enabled = false;  // mode: http
  std::string headerName = "x-envoy-original-dst-host";  // lower case
  // The peer addresses whose routing header is honoured; anyone else's is ignored and counted.
  std::vector<IpCidr> trustedSources;
  bool stripHeader = true;  // the routing header never reaches the upstream
  bool connect = true;      // CONNECT ip:port tunnels
  uint32_t requestHeadTimeoutMs = 10000;
  uint32_t maxRequestHeadBytes = 65536;
};

struct ListenerOptions {
  std::string name;
  SocketAddress address;
  bool transparent = false;
  bool udp = false;  // protocol: udp (transparent only; udp_relay.h)
  int backlog = 4096;
  uint32_t policy = 0;  // index into CoreOptions::policies
  ProxyProtocolOptions proxyProtocol;
  HttpListenerOptions http;
};

}  // namespace splicegate
