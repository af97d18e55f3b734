// `splicegate run`: raise the fd limit, open the listening sockets (once, in this thread), start
// the workers on them, serve the admin endpoint, and on SIGTERM/SIGINT drain: stop accepting and
// close the listening sockets, let active connections finish up to drain_timeout, close the rest,
// exit 0.

import type { SplicegateConfig } from '../config/types';
import { configWarnings } from '../config/warnings';
import { startAdminServer, type AdminServer } from '../admin/admin-server';
import { loadBinding } from '../native/binding';
import { nativeOptionsFor } from './native-options';
import { loopWarningRule } from './loop-warning';
import { watchCounters } from '../stats/counter-watch';
import { DenyLog } from './deny-log';
import { CounterAggregator, type CounterValues } from '../stats/counters';
import { mergeHosts, type HostView } from '../stats/hosts';
import { DEFAULT_LATENCY_LOG_INTERVAL_MS, startLatencyLog } from '../latency/interval-log';
import { closeLatencyPool } from '../latency/merge-pool';
import type { LatencySource, WorkerLatencyExport } from '../latency/source';
import { WorkerSupervisor } from '../supervisor/worker-supervisor';
import { ListenSockets } from './listen-sockets';
import { createLogger, type Logger } from '../util/logger';

export interface RunProxyOptions {
  /** Where the config came from (file path or "(built-in default config)"), for logs. */
  configSource: string;
  /** `splicegate run --latency-log FILE`: HdrHistogram interval log to write, if requested. */
  latencyLogPath?: string;
  /** `--latency-log-interval`: one interval every this many ms. */
  latencyLogIntervalMs?: number;
}

const DRAIN_POLL_MS = 100;
/** How often counters are read for once-only warnings (loop_rejected). */
const COUNTER_WATCH_MS = 1000;
/** Latency exports kept from workers that exited, so merged histograms do not lose their samples. */
const MAX_RETIRED_LATENCY = 16;

class ProxyRuntime implements LatencySource {
  private draining = false;
  private readonly aggregator: CounterAggregator;

  constructor(
    private readonly config: SplicegateConfig,
    private readonly supervisor: WorkerSupervisor,
    private readonly listenSockets: ListenSockets,
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
    // Once no worker can still be attaching, the sockets close: their queues are reset and new
    // connections are refused (with the last worker's dup) instead of waiting in a backlog.
    await this.supervisor.stopAccepting();
    this.listenSockets.close();
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
  for (const w of configWarnings(config)) log.warn('config warning', { path: w.path, message: w.message });
  const signals = waitForSignal(log);
  // Here, not in the workers: one socket per listener for the process's life (no SO_REUSEPORT), so
  // a second instance fails with EADDRINUSE and a worker's death loses nothing queued.
  const listenSockets = ListenSockets.open(binding, config.listeners);
  const nativeOptions = nativeOptionsFor(config, limits.soft);
  const supervisor = new WorkerSupervisor({
    config,
    nativeOptions,
    listeners: listenSockets.handoffs(),
    log,
  });
  // A worker's counter block: the core's stats, then its policy counters (summed by name).
  const counterNames = [...binding.statNames, ...binding.policyCounterNames(nativeOptions.policies ?? [])];
  const runtime = new ProxyRuntime(config, supervisor, listenSockets, counterNames, binding.hostStatNames, log);
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
    listenSockets.close();
    throw err;
  }
  log.info('ready', { admin: admin.address });
  const watch = watchCounters(() => runtime.counters(), [loopWarningRule(config, log)], COUNTER_WATCH_MS, (err) =>
    log.debug('counter watch: read failed', { error: err instanceof Error ? err.message : String(err) }),
  );
  const latencyLog = options.latencyLogPath
    ? await startLatencyLog(options.latencyLogPath, options.latencyLogIntervalMs ?? DEFAULT_LATENCY_LOG_INTERVAL_MS, runtime, { log })
    : undefined;

  const signal = await signals.first;
  log.info('draining', { signal, drain_timeout_ms: config.drainTimeoutMs });
  await runtime.drain(signals.second);
  watch.stop();
  // The log's last interval is read from the workers, so it closes before they stop.
  await latencyLog?.close();
  await supervisor.stop();
  listenSockets.close();
  await admin.close();
  denyLog.close();
  await closeLatencyPool();
  log.info('stopped');
  return 0;
}
