// One config generation: the workers started with one config, attached to that config's listening
// sockets (a lease on the process's pool, so sockets kept across a reload are shared with the
// generations before and after). A generation is started, serves, and on a reload (or drain)
// retires: it stops accepting, gives its socket lease back, lets its connections finish up to a
// deadline, closes what is left, reports its last counters and exits.

import type { SplicegateConfig } from '../config/types';
import type { WorkerLatencyExport } from '../latency/source';
import type { NativeWorkerOptions } from '../native/binding';
import type { ListenSockets } from '../proxy/listen-sockets';
import type { CounterBlock } from '../stats/counters';
import type { Logger } from '../util/logger';
import { WorkerSupervisor } from './worker-supervisor';

export type GenerationState = 'starting' | 'active' | 'retiring' | 'retired';

/** Who the admin and the logs say a generation is. */
export interface GenerationInfo {
  number: number;
  /** The config file it was read from (or the built-in config's label). */
  source: string;
  /** When the config was read, ISO 8601. */
  loadedAt: string;
  workers: number;
}

export interface GenerationOptions {
  number: number;
  source: string;
  config: SplicegateConfig;
  /** Worker `id`'s core options. */
  nativeOptions: (id: number) => NativeWorkerOptions;
  sockets: ListenSockets;
  /** Names of each worker's counter slots (the core's stats, then this config's policy counters). */
  counterNames: readonly string[];
  log: Logger;
}

/** How often a retiring generation's active connections are read while it drains. */
const DRAIN_POLL_MS = 100;
/** After close-all, how long to wait for the close to show in the counters before exiting anyway. */
const CLOSE_ALL_SETTLE_MS = 2000;

export class Generation {
  readonly number: number;
  readonly config: SplicegateConfig;
  readonly counterNames: readonly string[];
  readonly supervisor: WorkerSupervisor;
  readonly info: GenerationInfo;
  state: GenerationState = 'starting';
  private readonly sockets: ListenSockets;
  private stopped: Promise<void> | undefined;

  constructor(options: GenerationOptions) {
    this.number = options.number;
    this.config = options.config;
    this.counterNames = options.counterNames;
    this.sockets = options.sockets;
    this.info = { number: options.number, source: options.source, loadedAt: new Date().toISOString(), workers: options.config.workers };
    this.supervisor = new WorkerSupervisor({
      config: options.config,
      nativeOptions: options.nativeOptions,
      listeners: options.sockets.handoffs(),
      log: options.log,
      configGeneration: options.number,
    });
  }

  /** Resolves once every worker listens; on a bootstrap failure the generation is torn down and the error thrown. */
  async start(): Promise<void> {
    try {
      await this.supervisor.start();
    } catch (err) {
      this.state = 'retired';
      await this.stop().catch(() => undefined);
      throw err;
    }
    this.state = 'active';
  }

  addresses(): string[] {
    return this.sockets.addresses();
  }

  /** Asks every live worker for its counters (a worker that does not answer keeps its last ones). */
  async refreshStats(): Promise<void> {
    await this.supervisor.collectStats();
  }

  /** The counters refreshStats (or a worker's last answer) left, each with this generation's names. Synchronous. */
  currentBlocks(): CounterBlock[] {
    return this.supervisor.currentStats().map((values) => ({ names: this.counterNames, values }));
  }

  async activeConnections(): Promise<number> {
    const i = this.counterNames.indexOf('downstream_cx_active');
    await this.refreshStats();
    return this.supervisor.currentStats().reduce((sum, values) => sum + (values[i] ?? 0), 0);
  }

  /**
   * Leaves the listening sockets: every worker stops accepting (no worker of this generation
   * attaches or restarts after this), then the lease is given back, so a socket no newer
   * generation uses closes. Sockets a newer generation leases stay open with their queues.
   */
  async stopAccepting(): Promise<void> {
    this.state = 'retiring';
    await this.supervisor.stopAccepting();
    this.sockets.close();
  }

  /**
   * Waits until no connection is active or until `deadline` (ms since the epoch) or `forceNow`,
   * then closes what is left (each with a reset, counted in cx_close_drained). Returns how many
   * connections were still active when they were closed (0 if none had to be).
   */
  async drain(deadline: number, forceNow?: Promise<void>): Promise<number> {
    let forced = false;
    void forceNow?.then(() => {
      forced = true;
    });
    for (;;) {
      const active = await this.activeConnections();
      if (active === 0) return 0;
      if (forced || Date.now() >= deadline) {
        this.supervisor.broadcast({ type: 'close-all' });
        // close-all runs on each loop thread; wait (bounded) until it shows, so the counters the
        // generation leaves behind include those closes.
        const settle = Date.now() + CLOSE_ALL_SETTLE_MS;
        while (Date.now() < settle && (await this.activeConnections()) > 0) await sleep(DRAIN_POLL_MS);
        return active;
      }
      await sleep(DRAIN_POLL_MS);
    }
  }

  /** Asks every live worker for its last counters and histograms; read them with currentBlocks / currentLatency. */
  async refreshFinal(): Promise<void> {
    await Promise.all([this.supervisor.collectStats(), this.supervisor.collectLatency()]);
  }

  currentLatency(): WorkerLatencyExport[] {
    return this.supervisor.currentLatency();
  }

  /**
   * Idempotent: every worker leaves the sockets (one still starting is waited for, so none can
   * attach to a closed fd number), the lease is given back, every worker exits (closing whatever
   * it still holds, with resets) and the thread pool goes.
   */
  stop(): Promise<void> {
    this.state = 'retired';
    this.stopped ??= (async () => {
      await this.supervisor.stopAccepting();
      this.sockets.close();
      await this.supervisor.stop();
    })();
    return this.stopped;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
