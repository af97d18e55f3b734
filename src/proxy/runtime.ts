// The running proxy as the admin endpoint and the signal handlers see it: the config generations
// that are alive (the active one, plus older ones still finishing their connections after a
// reload), their counters summed so that totals never go backwards across worker deaths and
// generations, readiness, and the drain at shutdown. Starting and switching generations is
// reload.ts's job; this module owns their lifecycle once started.

import type { SplicegateConfig } from '../config/types';
import type { NativeBinding, NativeWorkerEvent } from '../native/binding';
import { RetiredLatency } from '../latency/retired';
import type { LatencySource, WorkerLatencyExport } from '../latency/source';
import { CounterAggregator, type CounterBlock, type CounterValues } from '../stats/counters';
import { mergeHosts, type HostView } from '../stats/hosts';
import { listenerCounterNames } from '../stats/listeners';
import { Generation, type GenerationInfo } from '../supervisor/generation';
import type { Logger } from '../util/logger';
import { nativeOptionsFor } from './native-options';
import type { ListenSocketPool } from './listen-sockets';

/** How often the drain reads the orphans' count while they finish their connections. */
const ORPHAN_POLL_MS = 100;
/** After endOrphans(), how long to wait for the orphaned loops to be joined before going on anyway. */
const ORPHAN_END_MS = 5000;
/** How often orphans' access-log records are taken and written (as often as a worker's drain). */
const ORPHAN_ACCESS_LOG_MS = 100;

export interface RuntimeOptions {
  binding: Pick<NativeBinding, 'statNames' | 'hostStatNames' | 'policyCounterNames' | 'listenerStatNames' | 'orphans' | 'endOrphans' | 'orphanAccessLog'>;
  pool: ListenSocketPool;
  /** The open-files limit the workers' shares are computed from. */
  fdLimit: number;
  log: Logger;
  /** Every generation's workers' buffered events (deny log). */
  onWorkerEvents?: (worker: number, events: NativeWorkerEvent[], dropped: number) => void;
  /** Every generation's workers' access-log lines (src/proxy/access-log.ts); worker -1: orphans' (each line names its worker). */
  onAccessLog?: (worker: number, lines: string, count: number) => void;
}

export interface Readiness {
  ready: boolean;
  detail: string;
  /** The active config generation (left out while draining). */
  generation?: GenerationInfo;
}

export class ProxyRuntime implements LatencySource {
  /** Alive generations, oldest first; the last one that reached 'active' is the active one. */
  private readonly live: Generation[] = [];
  private activeGeneration: Generation | undefined;
  private nextNumber = 1;
  private draining = false;
  private readonly aggregator: CounterAggregator;
  /** Histograms of workers that exited, folded: merged totals keep their samples. */
  private readonly retiredLatency = new RetiredLatency();
  /** Reload and drain run one at a time, in the order they were asked for. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly reloadStats = { config_reloads: 0, config_reload_failures: 0 };

  /** Takes orphans' access-log lines while any orphan lives (see watchOrphanAccessLog). */
  private orphanAccessLog: NodeJS.Timeout | undefined;

  constructor(private readonly options: RuntimeOptions) {
    this.aggregator = new CounterAggregator(options.binding.statNames);
  }

  /**
   * A dead worker's loop goes on closing connections (an orphan): their records come through the
   * addon's queue, not a worker's port. They are taken every ORPHAN_ACCESS_LOG_MS from the worker
   * exit that left an orphan until no orphan is left and its last records are written; a process
   * with no orphan runs no timer for them (an idle proxy should not wake for nothing).
   */
  private watchOrphanAccessLog(): void {
    if (!this.options.onAccessLog || this.orphanAccessLog) return;
    this.orphanAccessLog = setInterval(() => {
      // Read before the take: an orphan that ends queues its last records before it stops counting.
      const none = this.options.binding.orphans().count === 0;
      this.writeOrphanAccessLog();
      if (none) {
        clearInterval(this.orphanAccessLog);
        this.orphanAccessLog = undefined;
      }
    }, ORPHAN_ACCESS_LOG_MS).unref();
  }

  private writeOrphanAccessLog(): void {
    const { onAccessLog, binding } = this.options;
    if (!onAccessLog) return;
    const batch = binding.orphanAccessLog();
    if (batch.count > 0) onAccessLog(-1, batch.lines, batch.count);
  }

  get isDraining(): boolean {
    return this.draining;
  }

  get active(): Generation {
    if (!this.activeGeneration) throw new Error('no config generation is active');
    return this.activeGeneration;
  }

  /** Runs `fn` after every reload or drain asked for earlier has finished. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  countReload(ok: boolean): void {
    if (ok) this.reloadStats.config_reloads += 1;
    else this.reloadStats.config_reload_failures += 1;
  }

  /**
   * Leases the config's listening sockets (kept ones are shared with the live generations) and
   * starts its workers; resolves once all listen. Nothing changes for the running generations: on
   * any failure the new workers and the sockets only they leased are gone again, and it throws.
   */
  async startGeneration(config: SplicegateConfig, source: string): Promise<Generation> {
    const { binding, pool, fdLimit, log } = this.options;
    const nativeOptions = nativeOptionsFor(config, fdLimit);
    const sockets = pool.lease(config.listeners);
    let generation: Generation;
    try {
      generation = new Generation({
        number: this.nextNumber,
        source,
        config,
        nativeOptions: (id) => nativeOptionsFor(config, fdLimit, id),
        sockets,
        // A worker's counter block: the core's stats, its policy counters, then its listeners'
        // counters in the order the workers attach them (the handoffs'); all summed by name. UDP
        // listeners have no per-listener block (their counters are the udp_* ones): left out.
        counterNames: [
          ...binding.statNames,
          ...binding.policyCounterNames(nativeOptions.policies ?? []),
          ...listenerCounterNames(
            sockets.handoffs().filter((h) => h.options.protocol !== 'udp').map((h) => h.options.name),
            binding.listenerStatNames,
          ),
        ],
        log,
      });
    } catch (err) {
      sockets.close();
      throw err;
    }
    this.nextNumber += 1;
    // Workers that listened since their last start: only such a worker's end can leave an orphaned
    // loop (one that could not start, restarted again and again while out of fds, has none).
    const listened = new Set<number>();
    generation.supervisor.on('worker-listening', (id) => listened.add(id));
    generation.supervisor.on('worker-exit', (id, lastStats, lastLatency) => {
      const ran = listened.delete(id);
      // A retired generation's worker cut at its drain deadline may leave an orphan too.
      if (binding.orphans().count > 0) this.watchOrphanAccessLog();
      // Only while the generation is live: a retired generation's totals were taken at retirement.
      if (!this.live.includes(generation)) return;
      // The counters the worker last reported; what its loop counts after them (if it relays on
      // as an orphan) comes from binding.orphans() (see counters()).
      if (lastStats) this.aggregator.retire(lastStats, generation.counterNames);
      if (lastLatency) this.retiredLatency.add([lastLatency]);
      const orphans = binding.orphans();
      if (ran && orphans.count > 0) {
        log.info('orphaned worker loops relay what they had, accepting nothing new', {
          worker: id,
          config_generation: generation.number,
          orphans: orphans.count,
          connections: orphans.values[binding.statNames.indexOf('downstream_cx_active')] ?? 0,
        });
      }
    });
    const { onWorkerEvents } = this.options;
    if (onWorkerEvents) generation.supervisor.on('worker-events', onWorkerEvents);
    const { onAccessLog } = this.options;
    if (onAccessLog) generation.supervisor.on('access-log', (id, lines, count) => onAccessLog(id, lines, count));
    // Counted from the start: a worker that dies while the generation is still starting counts too.
    this.live.push(generation);
    try {
      await generation.start();
    } catch (err) {
      this.live.splice(this.live.indexOf(generation), 1);
      throw err;
    }
    return generation;
  }

  /** Makes a started generation the one readiness and the crash hook refer to. */
  activate(generation: Generation): Generation | undefined {
    const previous = this.activeGeneration;
    this.activeGeneration = generation;
    return previous;
  }

  /**
   * Retires a generation that is no longer active: it stops accepting (sockets it alone leased
   * close), its connections finish up to `deadline` and the rest are closed with resets, then its
   * last counters join the retired totals and its workers exit. Safe to call twice.
   */
  async retire(generation: Generation, deadline: number, forceNow?: Promise<void>): Promise<void> {
    if (!this.live.includes(generation)) return;
    const { log } = this.options;
    await generation.stopAccepting();
    log.info('config generation stopped accepting', { config_generation: generation.number });
    const cut = await generation.drain(deadline, forceNow);
    if (cut > 0) log.warn('config generation: drain_timeout reached, closed its active connections', { config_generation: generation.number, active: cut });
    await this.finish(generation);
    log.info('config generation retired', { config_generation: generation.number, connections_cut: cut });
  }

  /** Takes a generation's last readings into the retired totals (in one turn), then stops it. */
  private async finish(generation: Generation): Promise<void> {
    await generation.refreshFinal();
    const at = this.live.indexOf(generation);
    if (at < 0) return;
    // Synchronous from here: no counters() call can see these blocks both live and retired.
    this.live.splice(at, 1);
    for (const block of generation.currentBlocks()) this.aggregator.retire(block.values, block.names);
    this.retiredLatency.add(generation.currentLatency());
    await generation.stop();
  }

  /** LatencySource: live workers' histograms plus those of workers that exited. */
  async collect(): Promise<WorkerLatencyExport[]> {
    const live = [...this.live];
    await Promise.all(live.map((g) => g.supervisor.collectLatency()));
    return [...this.retiredLatency.exports(), ...this.live.flatMap((g) => g.currentLatency())];
  }

  readiness(): Readiness {
    if (this.draining) return { ready: false, detail: 'draining' };
    const generation = this.active;
    const listening = generation.supervisor.listeningCount();
    const total = generation.supervisor.workerCount;
    const ready = listening === total;
    return { ready, detail: ready ? 'ready' : `starting: ${listening}/${total} workers listening`, generation: generation.info };
  }

  async counters(): Promise<CounterValues> {
    await Promise.all(this.live.map((g) => g.refreshStats()));
    // Summed in one turn after the refresh: generations and workers gone meanwhile are in the
    // retired totals and no longer live (see finish and WorkerSupervisor.currentStats).
    const blocks: CounterBlock[] = this.live.flatMap((g) => g.currentBlocks());
    // Orphaned loops (workers whose thread died): what they counted after their worker's last
    // report, and their gauges. Monotonic: ended orphans' counts stay in it.
    const orphans = this.options.binding.orphans();
    blocks.push({ names: this.options.binding.statNames, values: orphans.values });
    return {
      ...this.aggregator.sumBlocks(blocks),
      config_generation: this.activeGeneration?.number ?? 0,
      config_generations_live: this.live.length,
      workers_orphaned: orphans.count,
      workers_orphaned_total: orphans.adopted,
      ...this.reloadStats,
    };
  }

  async hosts(): Promise<HostView[]> {
    const snapshots = await Promise.all(this.live.map((g) => g.supervisor.collectHosts()));
    return mergeHosts(this.options.binding.hostStatNames, snapshots.flat());
  }

  /** Test hook: kills one worker of the active generation. */
  crashWorker(id: number): boolean {
    return this.active.supervisor.crashWorker(id);
  }

  /**
   * Shutdown: waits for a reload in progress, then every live generation stops accepting (their
   * sockets close), connections finish up to drain_timeout (of the active config), the rest are
   * closed. Reloads asked for after this are refused.
   */
  async drain(forceNow: Promise<void>): Promise<void> {
    this.draining = true;
    await this.exclusive(async () => {
      const { log } = this.options;
      const generations = [...this.live];
      await Promise.all(generations.map((g) => g.stopAccepting()));
      const deadline = Date.now() + this.active.config.drainTimeoutMs;
      let forced = false;
      void forceNow.then(() => {
        forced = true;
        log.warn('second signal: closing active connections now');
      });
      const cut = await Promise.all([...generations.map((g) => g.drain(deadline, forceNow)), this.drainOrphans(deadline, forceNow)]);
      const active = cut.reduce((a, b) => a + b, 0);
      if (active === 0) log.info('drained: no active connections');
      else if (!forced) log.warn('drain_timeout reached: closing active connections', { active });
    });
  }

  /**
   * Waits until every orphaned loop has ended or until `deadline` / `forceNow`, then ends the rest
   * (their connections reset, counted in cx_drained). Returns how many connections were cut.
   */
  private async drainOrphans(deadline: number, forceNow?: Promise<void>): Promise<number> {
    const { binding } = this.options;
    const activeAt = binding.statNames.indexOf('downstream_cx_active');
    let forced = false;
    void forceNow?.then(() => {
      forced = true;
    });
    for (;;) {
      const orphans = binding.orphans();
      if (orphans.count === 0) return 0;
      if (forced || Date.now() >= deadline) {
        await this.endOrphans();
        return orphans.values[activeAt] ?? 0;
      }
      await sleep(ORPHAN_POLL_MS);
    }
  }

  /** Ends every orphaned loop now and waits (bounded) until they are joined: none may run at exit. */
  private async endOrphans(): Promise<void> {
    const { binding, log } = this.options;
    if (binding.orphans().count === 0) return;
    binding.endOrphans();
    const until = Date.now() + ORPHAN_END_MS;
    while (binding.orphans().count > 0 && Date.now() < until) await sleep(ORPHAN_POLL_MS);
    const left = binding.orphans().count;
    if (left > 0) log.warn('orphaned worker loops did not end in time', { orphans: left });
  }

  /** After drain: every generation's workers exit, and no orphaned loop is left. */
  async stop(): Promise<void> {
    await Promise.all([...this.live].map((g) => this.finish(g)));
    // A worker the pool had to terminate (it did not close in time) leaves an orphan too.
    await this.endOrphans();
    clearInterval(this.orphanAccessLog);
    this.orphanAccessLog = undefined;
    this.writeOrphanAccessLog();  // the last records, the ended orphans' included
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
