// `splicegate run`: raise the fd limit, open the listening sockets (in this thread), start the
// first config generation's workers on them, serve the admin endpoint; on SIGHUP (or POST /reload)
// re-read the config and switch generations (reload.ts); on SIGTERM/SIGINT drain: stop accepting
// and close the listening sockets, let active connections finish up to drain_timeout, close the
// rest, exit 0.

import type { SplicegateConfig } from '../config/types';
import { configWarnings } from '../config/warnings';
import { startAdminServer, type AdminServer } from '../admin/admin-server';
import { loadBinding } from '../native/binding';
import { fdWarningRule } from './fd-warning';
import { loopWarningRule } from './loop-warning';
import { watchCounters } from '../stats/counter-watch';
import { DenyLog } from './deny-log';
import { AccessLogHolder } from './access-log-holder';
import { DEFAULT_LATENCY_LOG_INTERVAL_MS, startLatencyLog, type LatencyLog } from '../latency/interval-log';
import { closeLatencyPool } from '../latency/merge-pool';
import { ListenSocketPool } from './listen-sockets';
import { ProxyRuntime } from './runtime';
import { Reloader, reloadResponse } from './reload';
import { takeActivatedSockets } from './socket-activation';
import { takeHeldStartupSignals } from './startup-signals';
import { addressKey } from '../config/address';
import { createLogger, type Logger } from '../util/logger';
import { serverInfo } from '../admin/server-info';
import { packageVersion } from '../util/version';

export interface RunProxyOptions {
  /** Where the config came from (file path or "(built-in default config)"), for logs. */
  configSource: string;
  /** The config file, re-read on SIGHUP and POST /reload; undefined for the built-in config. */
  configPath?: string;
  /** How to read configPath again on reload (`--envoy` converts it); loadConfigFile by default. */
  loadConfig?: (path: string) => SplicegateConfig;
  /** `splicegate run --latency-log FILE`: HdrHistogram interval log to write, if requested. */
  latencyLogPath?: string;
  /** `--latency-log-interval`: one interval every this many ms. */
  latencyLogIntervalMs?: number;
}

/** How often counters are read for once-only warnings (loop_rejected, downstream_cx_accept_paused). */
const COUNTER_WATCH_MS = 1000;

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

/**
 * SIGHUP re-reads the config (reload.ts; the outcome is logged there) and SIGUSR1 reopens the access
 * log. Both are handled from the first moment of runProxy, because their default actions end the
 * process (SIGHUP: `systemctl reload` right after `start`, with Type=exec, killed it while its
 * workers started) or open the inspector port (SIGUSR1). A SIGHUP that arrives before the first
 * generation serves is applied once it does; it may mean the file changed after it was read.
 */
function controlSignals(log: Logger): { logsOpen(reopenLogs: () => boolean): void; serve(reloader: Reloader): void } {
  let reload: (() => void) | undefined;
  let heldHangup = false;
  let reopen: (() => boolean) | undefined;
  process.on('SIGHUP', () => {
    if (reload !== undefined) return reload();
    heldHangup = true;
    log.info('SIGHUP during start-up: the config is re-read once ready');
  });
  const onUsr1 = (): void => {
    if (reopen === undefined) log.info('SIGUSR1 during start-up: the access log is being opened, nothing to reopen');
    else if (!reopen()) log.info('SIGUSR1: no access log to reopen');
  };
  process.on('SIGUSR1', onUsr1);
  // Those that arrived while the program loaded (startup-signals.ts): in the same synchronous step.
  const early = takeHeldStartupSignals();
  if (early.has('SIGHUP')) {
    heldHangup = true;
    log.info('SIGHUP during start-up: the config is re-read once ready');
  }
  if (early.has('SIGUSR1')) onUsr1();
  return {
    logsOpen(reopenLogs) {
      reopen = reopenLogs;
    },
    serve(reloader) {
      reload = () => {
        reloader.reload('SIGHUP').catch((err: unknown) => log.error('reload failed', { error: err instanceof Error ? err.message : String(err) }));
      };
      if (heldHangup) reload();
    },
  };
}

export async function runProxy(config: SplicegateConfig, options: RunProxyOptions): Promise<number> {
  const startedAtMs = Date.now();
  const log = createLogger(process.env.SPLICEGATE_DEBUG ? 'debug' : 'info');
  const control = controlSignals(log);
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
  // Here, not in the workers: one socket per listener address for the process's life (no
  // SO_REUSEPORT), so a second instance fails with EADDRINUSE, and neither a worker's death nor a
  // reload that keeps the listener loses anything queued.
  // Sockets systemd passed (LISTEN_FDS) are taken over by the first generation instead of bound.
  const activated = takeActivatedSockets(binding, config.listeners, log);
  const passed = new Map([...activated].map(([index, fd]) => [addressKey(config.listeners[index]!.address), fd] as const));
  const pool = new ListenSocketPool(binding, passed);
  const denyLog = new DenyLog({ log });
  // Opened before the workers start, so an unwritable file stops the start with its path. A reload
  // that changes it opens the new one first (access-log-holder.ts).
  const accessLog = await AccessLogHolder.open(config.accessLog, log);
  const runtime = new ProxyRuntime({
    binding,
    pool,
    fdLimit: limits.soft,
    log,
    onWorkerEvents: (id, events, dropped) => denyLog.add(id, events, dropped),
    onAccessLog: (_id: number, lines: string, count: number) => accessLog.write(lines, count),
  });
  const reloader = new Reloader({
    runtime,
    pool,
    configPath: options.configPath,
    log,
    prepare: (next) => accessLog.prepare(next.accessLog),
    ...(options.loadConfig === undefined ? {} : { load: options.loadConfig }),
  });
  const reopenLogs = (): boolean => accessLog.reopen();
  control.logsOpen(reopenLogs);
  let admin: AdminServer | undefined;
  let latencyLog: LatencyLog | undefined;
  try {
    const first = await runtime.startGeneration(config, options.configSource);
    runtime.activate(first);
    admin = await startAdminServer(
      config.admin.address,
      {
        readiness: () => runtime.readiness(),
        allowedHosts: () => runtime.active.config.admin.allowedHosts,
        reload: async () => reloadResponse(await reloader.reload('POST /reload')),
        counters: async () => accessLog.withCounters(await runtime.counters()),
        reopenLogs,
        hosts: () => runtime.hosts(),
        latency: runtime,
        serverInfo: () =>
          serverInfo({
            version: packageVersion(),
            startedAtMs,
            configFile: runtime.active.info.source,
            config: () => runtime.active.config,
            readiness: () => runtime.readiness(),
            workersAlive: () => runtime.active.supervisor.listeningCount(),
            workerRestarts: () => runtime.active.supervisor.restartCount,
          }),
        ...(process.env.SPLICEGATE_TEST_HOOKS === '1' ? { crashWorker: (id: number) => runtime.crashWorker(id) } : {}),
      },
      log,
    ).catch((err: unknown) => {
      // Named like a listener in the message (formatSystemError): "listen admin 127.0.0.1:9901: ...".
      if (err instanceof Error && 'syscall' in err) Object.assign(err, { context: 'admin' });
      throw err;
    });
    // Before ready, like a listener: a log that cannot be opened stops the start with its path
    // (opened after ready, the failure left workers and admin running and the process deaf to signals).
    if (options.latencyLogPath) {
      latencyLog = await startLatencyLog(options.latencyLogPath, options.latencyLogIntervalMs ?? DEFAULT_LATENCY_LOG_INTERVAL_MS, runtime, { log });
    }
  } catch (err) {
    await admin?.close().catch(() => undefined);
    await runtime.stop().catch(() => undefined);
    await closeLatencyPool().catch(() => undefined);
    throw err;
  }
  // Reloads only once the first generation serves; one asked for meanwhile runs now.
  control.serve(reloader);
  log.info('ready', { admin: admin.address, config_generation: runtime.active.number });
  const watch = watchCounters(() => runtime.counters(), [loopWarningRule(() => runtime.active.config, log), fdWarningRule(() => runtime.active.config, limits.soft, log)], COUNTER_WATCH_MS, (err) =>
    log.debug('counter watch: read failed', { error: err instanceof Error ? err.message : String(err) }),
  );

  const signal = await signals.first;
  log.info('draining', { signal, drain_timeout_ms: runtime.active.config.drainTimeoutMs });
  await runtime.drain(signals.second);
  watch.stop();
  // The log's last interval is read from the workers, so it closes before they stop.
  await latencyLog?.close();
  await runtime.stop();
  await admin.close();
  denyLog.close();
  await accessLog.close();
  await closeLatencyPool();
  log.info('stopped');
  return 0;
}
