// `splicegate run`: raise the fd limit, start the workers, serve the admin endpoint, and on
// SIGTERM/SIGINT drain: stop accepting, let active connections finish up to drain_timeout, close
// the rest, exit 0.

import type { SplicegateConfig } from '../config/types';
import { startAdminServer, type AdminServer } from '../admin/admin-server';
import { nativePolicies } from '../config/policy-native';
import { loadBinding, type NativeWorkerOptions } from '../native/binding';
import { DenyLog } from './deny-log';
import { CounterAggregator, type CounterValues } from '../stats/counters';
import { mergeHosts, type HostView } from '../stats/hosts';
import { DEFAULT_LATENCY_LOG_INTERVAL_MS, startLatencyLog } from '../latency/interval-log';
import { closeLatencyPool } from '../latency/merge-pool';
import type { LatencySource, WorkerLatencyExport } from '../latency/source';
import { WorkerSupervisor } from '../supervisor/worker-supervisor';
import { createLogger, type Logger } from '../util/logger';

export interface RunProxyOptions {
  /** Where the config came from (file path or "(built-in default config)"), for logs. */
  configSource: string;
  /** `splicegate run --latency-log FILE`: HdrHistogram interval log to write, if requested. */
  latencyLogPath?: string;
  /** `--latency-log-interval`: one interval every this many ms. */
  latencyLogIntervalMs?: number;
}

/** Share of the open-files limit that pipes may take (two fds each), split across workers. */
const PIPE_FD_SHARE = 0.25;
const DRAIN_POLL_MS = 100;
/** Latency exports kept from workers that exited, so merged histograms do not lose their samples. */
const MAX_RETIRED_LATENCY = 16;

/** fds kept back from the connection bound for listeners, epoll, timers, logs and the admin server. */
const RESERVED_FDS = 256;

function nativeOptionsFor(config: SplicegateConfig, fdLimit: number): NativeWorkerOptions {
  const { cluster, workers } = config;
  // Limits are enforced per worker (lock-free host caches), so each worker gets its share.
  const share = (total: number): number => Math.max(1, Math.ceil(total / workers));
  // 0 means "no per-host bound": only max_downstream_connections (and the fd limit) apply.
  const perHost = (total: number): number => (total > 0 ? share(total) : Number.MAX_SAFE_INTEGER);
  const maxDownstream =
    cluster.maxDownstreamConnections > 0 ? cluster.maxDownstreamConnections : Math.floor((fdLimit - RESERVED_FDS) / 2);
  return {
    connectTimeoutMs: cluster.connectTimeoutMs,
    idleTimeoutMs: cluster.idleTimeoutMs,
    upstreamMark: cluster.upstreamMark,
    cleanupIntervalMs: cluster.cleanupIntervalMs,
    upstreamPortOverride: cluster.upstreamPortOverride,
    maxHosts: share(cluster.maxHosts),
    maxConnectionsPerHost: perHost(cluster.maxConnectionsPerHost),
    maxPendingPerHost: perHost(cluster.maxPendingPerHost),
    maxDownstreamConnections: share(maxDownstream),
    ...(cluster.preconnect
      ? {
          preconnectPorts: cluster.preconnect.ports,
          preconnectPerHost: cluster.preconnect.perHost,
          preconnectTtlMs: cluster.preconnect.ttlMs,
        }
      : {}),
    maxPipes: Math.max(16, Math.floor((fdLimit * PIPE_FD_SHARE) / 2 / config.workers)),
    maxIdlePipes: 64,
    relayMode: config.tuning.relayMode,
    pipeSize: config.tuning.pipeSize,
    copyBufferSize: config.tuning.copyBufferSize,
    driver: config.tuning.driver,
    recordLatency: config.tuning.recordLatency,
    // Listener i uses policies[listenerPolicyIndexes(config)[i]] (src/worker/proxy-worker.ts).
    policies: nativePolicies(config).policies,
  };
}

class ProxyRuntime implements LatencySource {
  private draining = false;
  private readonly aggregator: CounterAggregator;

  constructor(
    private readonly config: SplicegateConfig,
    private readonly supervisor: WorkerSupervisor,
    statNames: readonly string[],
    private readonly hostStatNames: readonly string[],
    private readonly log: Logger,
  ) {
    this.aggregator = new CounterAggregator(statNames);
    supervisor.on('worker-exit', (_id, lastStats, lastLatency) => {
      if (lastStats) this.aggregator.retire(lastStats);
      if (lastLatency) {
        this.retiredLatency.push(lastLatency);
        // Bounded: after many worker deaths the oldest retired histograms are let go.
        if (this.retiredLatency.length > MAX_RETIRED_LATENCY) this.retiredLatency.shift();
      }
    });
  }

  private readonly retiredLatency: WorkerLatencyExport[] = [];

  /** LatencySource: live workers' histograms plus those of workers that exited. */
  async collect(): Promise<WorkerLatencyExport[]> {
    return [...this.retiredLatency, ...(await this.supervisor.collectLatency())];
  }

  readiness(): { ready: boolean; detail: string } {
    const listening = this.supervisor.listeningCount();
    const total = this.supervisor.workerCount;
    if (this.draining) return { ready: false, detail: 'draining' };
    const ready = listening === total;
    return { ready, detail: ready ? 'ready' : `starting: ${listening}/${total} workers listening` };
  }

  async counters(): Promise<CounterValues> {
    return this.aggregator.sum(await this.supervisor.collectStats());
  }

  async hosts(): Promise<HostView[]> {
    return mergeHosts(this.hostStatNames, await this.supervisor.collectHosts());
  }

  /** Stops accepting, waits for active connections up to drain_timeout, closes the rest. */
  async drain(forceNow: Promise<void>): Promise<void> {
    this.draining = true;
    this.supervisor.broadcast({ type: 'stop-accepting' });
    const deadline = Date.now() + this.config.drainTimeoutMs;
    let forced = false;
    forceNow.then(() => {
      forced = true;
    });
    for (;;) {
      const active = (await this.counters()).downstream_cx_active ?? 0;
      if (active === 0) {
        this.log.info('drained: no active connections');
        return;
      }
      if (forced || Date.now() >= deadline) {
        this.log.warn(forced ? 'second signal: closing active connections now' : 'drain_timeout reached: closing active connections', {
          active,
        });
        this.supervisor.broadcast({ type: 'close-all' });
        return;
      }
      await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
    }
  }
}

function waitForSignal(log: Logger): { first: Promise<string>; second: Promise<void> } {
  let signals = 0;
  let resolveFirst: (signal: string) => void = () => undefined;
  let resolveSecond: () => void = () => undefined;
  const first = new Promise<string>((r) => (resolveFirst = r));
  const second = new Promise<void>((r) => (resolveSecond = r));
  const onSignal = (signal: NodeJS.Signals): void => {
    signals += 1;
    log.info('signal received', { signal, count: signals });
    if (signals === 1) resolveFirst(signal);
    else resolveSecond();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return { first, second };
}

export async function runProxy(config: SplicegateConfig, options: RunProxyOptions): Promise<number> {
  const log = createLogger(process.env.SPLICEGATE_DEBUG ? 'debug' : 'info');
  const binding = loadBinding();
  const limits = binding.raiseFdLimit();
  log.info('starting', {
    config: options.configSource,
    workers: config.workers,
    listeners: config.listeners.map((l) => `${l.name}=${l.address.text}`).join(','),
    nofile: limits.soft,
  });
  const signals = waitForSignal(log);
  const nativeOptions = nativeOptionsFor(config, limits.soft);
  const supervisor = new WorkerSupervisor({ config, nativeOptions, log });
  // A worker's counter block: the core's stats, then its policy counters (summed by name).
  const counterNames = [...binding.statNames, ...binding.policyCounterNames(nativeOptions.policies ?? [])];
  const runtime = new ProxyRuntime(config, supervisor, counterNames, binding.hostStatNames, log);
  const denyLog = new DenyLog({ log });
  supervisor.on('worker-events', (id, events, dropped) => denyLog.add(id, events, dropped));
  let admin: AdminServer | undefined;
  try {
    await supervisor.start();
    admin = await startAdminServer(
      config.admin.address,
      {
        readiness: () => runtime.readiness(),
        counters: () => runtime.counters(),
        hosts: () => runtime.hosts(),
        latency: runtime,
        ...(process.env.SPLICEGATE_TEST_HOOKS === '1' ? { crashWorker: (id: number) => supervisor.crashWorker(id) } : {}),
      },
      log,
    );
  } catch (err) {
    await supervisor.stop().catch(() => undefined);
    throw err;
  }
  log.info('ready', { admin: admin.address });
  const latencyLog = options.latencyLogPath
    ? await startLatencyLog(options.latencyLogPath, options.latencyLogIntervalMs ?? DEFAULT_LATENCY_LOG_INTERVAL_MS, runtime, { log })
    : undefined;

  const signal = await signals.first;
  log.info('draining', { signal, drain_timeout_ms: config.drainTimeoutMs });
  await runtime.drain(signals.second);
  // The log's last interval is read from the workers, so it closes before they stop.
  await latencyLog?.close();
  await supervisor.stop();
  await admin.close();
  denyLog.close();
  await closeLatencyPool();
  log.info('stopped');
  return 0;
}
