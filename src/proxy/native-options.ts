// Config + open-files limit -> the options each worker's native core gets. Every value that has a
// config key is sent explicitly, so the config's defaults (src/config/schema.ts, DEFAULTS) are the
// only ones in force; test/config-defaults.test.ts checks that. Everything derived from
// the fd limit is clamped to the range the addon accepts (cpp/addon/option_reader.cc): with
// LimitNOFILE=infinity the limit is about 2^30, and an unclamped share of it is out of range.

import type { SplicegateConfig } from '../config/types';
import { nativePolicies } from '../config/policy-native';
import type { NativeWorkerOptions } from '../native/binding';

/** The most of the open-files limit that pipes may take (two fds each), split across workers. */
const PIPE_FD_SHARE = 0.25;

/**
 * fds per relayed connection in the default bound: its two sockets, and room for one pipe (two
 * fds) per four connections, as HAProxy derives maxconn and maxpipes from the open-files limit.
 * Without that room, busy splices could take the last fds and leave none for the admin endpoint.
 */
export const FDS_PER_CONNECTION = 2.5;

/** Pipes per worker whatever the budget: splicing needs a few, and a pipe that cannot be made only means the copy path. */
const MIN_PIPES = 16;

/** fds kept back from the connection bound for listeners, epoll, timers, logs and the admin server. */
export const RESERVED_FDS = 256;

/**
 * The part of the usable fds (limit - RESERVED_FDS) that idle keep-alive upstreams of http
 * listeners may hold, split across workers (httpPoolMaxIdle, each worker's total bound whatever the
 * hosts). Taken out of what the default connection bound and the pipe pool get, only when an http
 * listener keeps a pool: without a bound of its own, the pool (max_idle_per_host times every host
 * used) could hold the fds the connections were counted on, and the reserve. A worker out of fds
 * also closes idle pooled connections at once (docs/HTTP.md, "The keep-alive pool").
 */
export const HTTP_POOL_FD_SHARE = 0.1;

/** The addon's accepted ranges for the options derived here (keep in step with option_reader.cc). */
export const NATIVE_RANGES = {
  maxHosts: { min: 1, max: 1e9 },
  maxConnectionsPerHost: { min: 1, max: Number.MAX_SAFE_INTEGER },
  maxPendingPerHost: { min: 1, max: Number.MAX_SAFE_INTEGER },
  maxDownstreamConnections: { min: 1, max: 1e9 },
  maxPipes: { min: 0, max: 1 << 20 },
  maxIdlePipes: { min: 0, max: 1 << 20 },
  httpPoolMaxIdle: { min: 0, max: 1 << 20 },
} as const;

const SEND_PROXY_VERSION = { off: 0, v1: 1, v2: 2 } as const;

type RangedOption = keyof typeof NATIVE_RANGES;

function clamp(name: RangedOption, value: number): number {
  const { min, max } = NATIVE_RANGES[name];
  return Math.min(max, Math.max(min, Math.floor(value)));
}

/** The worker count's share of a process-wide bound, at least 1. */
function shareOf(total: number, workers: number): number {
  return Math.max(1, Math.ceil(total / workers));
}

/**
 * Worker `workerId`'s part of a bound that must hold exactly: the parts of all workers add up to
 * `total` (the first `total % workers` workers get one more), where ceil(total / workers) each
 * allowed up to workers - 1 more. At least 1, so with fewer than `workers` the bound is `workers`.
 */
export function workerPart(total: number, workers: number, workerId: number): number {
  return Math.max(1, Math.floor(total / workers) + (workerId < total % workers ? 1 : 0));
}

/**
 * Access-log records one worker keeps between drains (every ACCESS_LOG_DRAIN_MS): room for ~80,000
 * closes per second per worker at a 100 ms drain, ~3 MiB reserved per worker (200-byte records).
 */
export const ACCESS_LOG_CAPACITY = 8192;

/** The options of worker `workerId` (they differ only in its part of max_downstream_connections). */
export function nativeOptionsFor(config: SplicegateConfig, fdLimit: number, workerId = 0): NativeWorkerOptions {
  const { cluster, workers } = config;
  // A limit below the reserve still starts (with the smallest bounds), it does not go negative.
  const usableFds = Math.max(0, fdLimit - RESERVED_FDS);
  // max_hosts and the idle pool bound are per worker (each worker has its own host cache and pool),
  // so each worker gets its share.
  const share = (total: number): number => shareOf(total, workers);
  // Per-host bounds are not split: every worker counts in the process's shared per-host counts
  // (cpp/core/shared_host_counts.h), so the whole value bounds the process, across workers, config
  // generations and orphaned loops. 0 means "no per-host bound": only max_downstream_connections
  // (and the fd limit) apply.
  const perHost = (total: number): number => (total > 0 ? total : Number.MAX_SAFE_INTEGER);
  // Idle pooled upstreams of http listeners get their part first (HTTP_POOL_FD_SHARE).
  const keepsPool = config.listeners.some((l) => l.mode === 'http') && cluster.httpPool.maxIdlePerHost > 0;
  const poolFds = keepsPool ? Math.floor(usableFds * HTTP_POOL_FD_SHARE) : 0;
  const connectionFds = usableFds - poolFds;
  const maxDownstream = cluster.maxDownstreamConnections > 0 ? cluster.maxDownstreamConnections : Math.floor(connectionFds / FDS_PER_CONNECTION);
  // The pipe pool gets the fds the connections leave (two sockets each), at most its share of the
  // limit: an explicit bound that takes them all leaves only the minimum.
  const pipeFds = Math.min(fdLimit * PIPE_FD_SHARE, Math.max(0, connectionFds - 2 * maxDownstream));
  return {
    connectTimeoutMs: cluster.connectTimeoutMs,
    idleTimeoutMs: cluster.idleTimeoutMs,
    upstreamMark: cluster.upstreamMark,
    cleanupIntervalMs: cluster.cleanupIntervalMs,
    upstreamPortOverride: cluster.upstreamPortOverride,
    maxHosts: clamp('maxHosts', share(cluster.maxHosts)),
    maxConnectionsPerHost: clamp('maxConnectionsPerHost', perHost(cluster.maxConnectionsPerHost)),
    maxPendingPerHost: clamp('maxPendingPerHost', perHost(cluster.maxPendingPerHost)),
    // Each worker stops accepting at its part; the parts add up to the configured bound exactly.
    maxDownstreamConnections: clamp('maxDownstreamConnections', workerPart(maxDownstream, workers, workerId)),
    // Off is said explicitly too (no ports, none per host): the core's own defaults are for its
    // unit tests only (cpp/core/core_options.h), never what a configured proxy runs with.
    preconnectPorts: cluster.preconnect ? cluster.preconnect.ports : [],
    preconnectPerHost: cluster.preconnect ? cluster.preconnect.perHost : 0,
    ...(cluster.preconnect ? { preconnectTtlMs: cluster.preconnect.ttlMs } : {}),
    maxPipes: clamp('maxPipes', Math.max(MIN_PIPES, pipeFds / 2 / workers)),
    maxIdlePipes: clamp('maxIdlePipes', 64),
    relayMode: config.tuning.relayMode,
    pipeSize: config.tuning.pipeSize,
    copyBufferSize: config.tuning.copyBufferSize,
    driver: config.tuning.driver,
    recordLatency: config.tuning.recordLatency,
    sendProxyProtocol: SEND_PROXY_VERSION[cluster.sendProxyProtocol],
    originalSource: cluster.originalSource,
    // The sample is applied in the core, before a record exists: unsampled connections cost nothing.
    // 0 without an access log: no buffer, no records.
    accessLogSample: config.accessLog?.sample ?? 0,
    accessLogCapacity: ACCESS_LOG_CAPACITY,
    // Listener i uses policies[listenerPolicyIndexes(config.listeners)[i]] (src/proxy/listen-sockets.ts).
    policies: nativePolicies(config).policies,
    // Idle upstreams are kept per worker (each has its own host cache): each gets its share.
    httpPoolMaxIdlePerHost: cluster.httpPool.maxIdlePerHost > 0 ? share(cluster.httpPool.maxIdlePerHost) : 0,
    httpPoolIdleTimeoutMs: cluster.httpPool.idleTimeoutMs,
    // This worker's part of the pool's fds (at least 1); 0 (no total bound) where no pool is kept.
    httpPoolMaxIdle: clamp('httpPoolMaxIdle', keepsPool ? workerPart(poolFds, workers, workerId) : 0),
    udpSessionTimeoutMs: cluster.udpSessionTimeoutMs,
    udpMaxSessions: cluster.udpMaxSessionsPerWorker,
    // A dead worker's loop finishes its connections as an orphan, bounded like a drain.
    orphanTimeoutMs: config.drainTimeoutMs,
  };
}
