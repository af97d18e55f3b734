// The one place that finds and loads the compiled addon, with a typed surface instead of `any`.
// When it is missing, the error says which command builds it.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkerLatencyExport } from '../latency/source';

export interface NativeWorkerOptions {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  upstreamMark: number;
  cleanupIntervalMs?: number;
  upstreamPortOverride?: number;
  maxHosts?: number;
  maxConnectionsPerHost?: number;
  maxPendingPerHost?: number;
  maxDownstreamConnections?: number;
  preconnectPorts?: number[];
  preconnectPerHost?: number;
  preconnectTtlMs?: number;
  maxPipes?: number;
  maxIdlePipes?: number;
  pipeSize?: number;
  copyBufferSize?: number;
  relayBudgetBytes?: number;
  acceptBatch?: number;
  relayMode?: 'auto' | 'splice' | 'copy';
  recordLatency?: boolean;
  /** Who runs the core's loop: a native thread (default) or the worker thread's libuv loop. */
  driver?: 'thread' | 'uv';
  /** Destination policies, copied once into CoreOptions: [0] top level, then listeners' own (src/config/policy-native.ts). */
  policies?: NativePolicyOptions[];
  /** PROXY header on every upstream connection: 0 off, 1 or 2 the version (cluster.send_proxy_protocol). */
  sendProxyProtocol?: 0 | 1 | 2;
  /** Bind upstream sockets to the client's IP (cluster.original_source). */
  originalSource?: boolean;
  /** cluster.http_pool.max_idle_per_host, this worker's share (idle keep-alive upstreams per host). */
  httpPoolMaxIdlePerHost?: number;
  /** cluster.http_pool.idle_timeout. */
  httpPoolIdleTimeoutMs?: number;
  /** Idle keep-alive upstreams this worker keeps in all (its part of HTTP_POOL_FD_SHARE of the fds); 0 = no total bound. */
  httpPoolMaxIdle?: number;
  /** cluster.udp_session_timeout: a UDP session ends after this long without a datagram. */
  udpSessionTimeoutMs?: number;
  /** cluster.udp_max_sessions_per_worker: UDP sessions per worker; the one idle longest makes room. */
  udpMaxSessions?: number;
  /** Access log: fraction of connections that get a record (access_log.sample); 0 or absent = off. */
  accessLogSample?: number;
  /** Records a worker buffers between two drains; more are dropped and counted (access_log_dropped). */
  accessLogCapacity?: number;
  /**
   * How long the loop of a worker whose thread died may go on relaying what it had (as an orphan,
   * docs/ARCHITECTURE.md) before the rest is cut with resets: the config's drain_timeout.
   */
  orphanTimeoutMs?: number;
}

/**
 * One destination policy in the compact form the addon copies once (cpp/addon/option_reader.cc):
 * per rule a name and an action, then all CIDRs and port ranges as flat typed arrays.
 */
export interface NativePolicyOptions {
  defaultAction: 'allow' | 'deny';
  denySpecial: boolean;
  ruleNames: string[];
  /** Per rule: 1 = allow, 0 = deny. */
  ruleActions: Uint8Array;
  /** 7 words per CIDR: rule index, family (4 or 6), prefix length, address as 4 big-endian 32-bit words (IPv4 in the first). */
  cidrs: Uint32Array;
  /** 3 words per port range: rule index, first, last. A rule with none matches every port. */
  ports: Uint32Array;
}

export interface NativeListenerOptions {
  name: string;
  host: string;
  port: number;
  transparent: boolean;
  /** listeners[].protocol; absent = tcp. udp needs transparent (cpp/core/udp_relay.h). */
  protocol?: 'tcp' | 'udp';
  backlog: number;
  /** Index into NativeWorkerOptions.policies; 0 (the top-level policy) when absent. */
  policy?: number;
  /** listeners[].proxy_protocol; absent = no header is read. */
  proxyProtocol?: NativeProxyProtocolOptions;
  /** listeners[].http; present iff the listener is mode: http (docs/HTTP.md). */
  http?: NativeHttpListenerOptions;
}

export interface NativeHttpListenerOptions {
  /** Lower case. */
  headerName: string;
  /** Canonical CIDRs; the clients whose routing header is honoured. */
  trustedSources: string[];
  stripHeader: boolean;
  connect: boolean;
  requestHeadTimeoutMs: number;
  maxRequestHeadBytes: number;
}

export interface NativeProxyProtocolOptions {
  /** Canonical CIDRs ("10.0.0.0/8"); the peers allowed to send a header. */
  trustedSources: string[];
  required: boolean;
  timeoutMs: number;
}

/**
 * One listening socket of the process, opened by the main thread (bound and listening, no
 * SO_REUSEPORT: an address another process listens on throws EADDRINUSE). Its fd is handed to the
 * workers; it stays open until close(), so a worker's death never resets its accept queue.
 */
export interface ListenSocket {
  /** The fd number (-1 once closed); workers of this process attach to it. */
  readonly fd: number;
  /** The bound address, e.g. "0.0.0.0:15001". */
  readonly address: string;
  close(): void;
}

/** One worker's data plane: a C++ epoll loop on its own native thread. */
export interface NativeWorker {
  /**
   * Accepts on the process's listening socket `fd` (a ListenSocket's; before start()). The worker
   * keeps its own dup, so the ListenSocket must stay open at least until this returns. Returns the
   * bound address; throws a system error.
   */
  attachListener(options: NativeListenerOptions, fd: number): string;
  start(): void;
  stopAccepting(): void;
  closeAll(): void;
  /**
   * Every counter in one block: `statNames`, then `policyCounterNames(options.policies)`, then
   * `listenerStatNames` for each attached listener in attach order.
   */
  stats(): Float64Array;
  /** Snapshot of the host cache, taken on the loop thread; values has hostStatNames.length per host. */
  hosts(callback: (snapshot: NativeHostSnapshot) => void): void;
  /** The worker's latency histograms (src/latency/native-format.ts), taken on the loop thread. */
  latency(callback: (snapshot: WorkerLatencyExport) => void): void;
  /** Takes the events buffered since the last call (on the loop thread); bounded, the excess counted in `dropped`. */
  drainEvents(callback: (batch: NativeEventBatch) => void): void;
  /** Takes the buffered access-log records (on the loop thread) and formats them as JSON lines here. */
  drainAccessLog(workerId: number, callback: (batch: NativeAccessLogBatch) => void): void;
  /** Whether `drainEvents` would find an event or a drop; read without waking the loop thread. */
  holdsEvents(): boolean;
  /** Whether `drainAccessLog` would find a record or a drop; read without waking the loop thread. */
  holdsAccessRecords(): boolean;
  close(): void;
}

/** A destination-policy deny: the connection was reset, never connected upstream. */
export interface NativePolicyDeniedEvent {
  kind: 'policy_denied';
  /** Wall-clock time of the deny, ms since the epoch. */
  timeMs: number;
  /** Client address ("ip:port", "[ip6]:port"), or "unknown". */
  source: string;
  /** The destination judged (after upstream_port_override). */
  destination: string;
  listener: string;
  /** The deciding rule's name, "special" (built-in denies) or "default". */
  rule: string;
}

/** Events a worker reports for logging; access-log records (issue 11) will join this union. */
export type NativeWorkerEvent = NativePolicyDeniedEvent;

export interface NativeEventBatch {
  events: NativeWorkerEvent[];
  /** Events that did not fit in the worker's buffer since the last drain. */
  dropped: number;
}

/** One drain of a worker's access log (cpp/core/access_log.h has the line format). */
export interface NativeAccessLogBatch {
  /** `count` JSON lines, each ending in "\n"; "" when there are none. */
  lines: string;
  count: number;
  /** Records that did not fit in the worker's buffer since the last drain. */
  dropped: number;
}

export interface NativeHostSnapshot {
  addresses: string[];
  values: Float64Array;
}

export interface NativeSocketInfo {
  type: 'stream' | 'dgram' | 'seqpacket' | 'other';
  family: 'ipv4' | 'ipv6' | 'unix' | 'other';
  listening: boolean;
  /** "0.0.0.0:15001", "[::]:15006"; "" for other families. */
  address: string;
}

/**
 * The process's orphaned worker loops: a worker thread that died left its native loop relaying
 * the connections it had (accepting nothing new) until they end.
 */
export interface NativeOrphans {
  /** Orphans still running (or ended and not yet joined). */
  count: number;
  /** Orphans ever adopted by this process. */
  adopted: number;
  /** In `statNames` order: counters counted since adoption (ended orphans included), gauges now. */
  values: Float64Array;
}

export interface NativeBinding {
  NativeWorker: new (options: NativeWorkerOptions) => NativeWorker;
  /** With fd: takes over that inherited listening socket (socket activation) instead of binding. */
  ListenSocket: new (options: NativeListenerOptions, fd?: number) => ListenSocket;
  /** What an inherited fd is; throws a system error (EBADF, ENOTSOCK). */
  inspectSocket(fd: number): NativeSocketInfo;
  statNames: readonly string[];
  hostStatNames: readonly string[];
  /** The per-listener counters a worker keeps for each listener (listener.<name>.<stat> in /stats). */
  listenerStatNames: readonly string[];
  raiseFdLimit(): { soft: number; hard: number };
  /** Names of the policy counters NativeWorker.stats() appends after statNames, for these policies (summed by name). */
  policyCounterNames(policies: NativePolicyOptions[]): string[];
  orphans(): NativeOrphans;
  /** Every orphan closes what it still relays (with resets) and ends; orphans().count then drops to 0. */
  endOrphans(): void;
  /** The access-log records orphans made since the last call, formatted here: `count` JSON lines. */
  orphanAccessLog(): { lines: string; count: number };
}

const ADDON_RELATIVE_PATHS = [
  ['build', 'Release', 'splicegate.node'],
  ['build', 'Debug', 'splicegate.node'],
];

/** The package root: this file runs compiled, from dist/src/native/. */
function packageRoot(): string {
  return join(__dirname, '..', '..', '..');
}

let cached: NativeBinding | undefined;

export function loadBinding(): NativeBinding {
  if (cached) return cached;
  const root = packageRoot();
  for (const parts of ADDON_RELATIVE_PATHS) {
    const file = join(root, ...parts);
    if (existsSync(file)) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      cached = require(file) as NativeBinding;
      return cached;
    }
  }
  throw new Error(
    `splicegate's native addon is not built (looked for build/Release/splicegate.node under ${root}). ` +
      'Run `npm install` (or `npm run compile`) in the splicegate directory.',
  );
}
