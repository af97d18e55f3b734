// Runs the proxy workers as long-lived piscina tasks (one per thread, minThreads = maxThreads),
// keeps a MessagePort to each, restarts a worker that dies while the others keep serving (they
// share the process's listening sockets, so nothing queued is lost), backs off and finally gives
// up on a worker that keeps dying (restart-policy.ts), and restarts nothing once draining began.

import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import Piscina from 'piscina';
import type { SplicegateConfig } from '../config/types';
import { isOutOfResources, mentionsOutOfResources } from '../config/syserr';
import type { WorkerLatencyExport } from '../latency/source';
import { DEFAULT_RESTART_POLICY, RestartPolicy, type RestartPolicyOptions } from './restart-policy';
import type { NativeWorkerEvent, NativeWorkerOptions } from '../native/binding';
import type { Logger } from '../util/logger';
import {
  deserializeError,
  type ListenerHandoff,
  type PoolTask,
  type SerializedError,
  type SupervisorToWorker,
  type WorkerTask,
  type WorkerToSupervisor,
} from '../worker/messages';

type WorkerState = 'starting' | 'listening' | 'exiting' | 'dead';

interface WorkerSlot {
  id: number;
  generation: number;
  state: WorkerState;
  port: MessagePort;
  startedAt: number;
  lastStats?: Float64Array;
  lastLatency?: WorkerLatencyExport;
  failure?: SerializedError;
  /** Its 'exited' message arrived: nothing more will come on the port. */
  exited?: boolean;
  onExited?: () => void;
}

/** How long a worker's end waits for its 'exited' message (which is already on its way). */
const EXITED_MESSAGE_WAIT_MS = 2000;

export interface SupervisorOptions {
  config: SplicegateConfig;
  /** Worker `id`'s core options (its part of max_downstream_connections differs). */
  nativeOptions: (id: number) => NativeWorkerOptions;
  /** The process's listening sockets (kept open by the caller); every worker attaches to all. */
  listeners: ListenerHandoff[];
  log: Logger;
  restartPolicy?: RestartPolicyOptions;
  /** The config generation these workers serve (docs/OPERATIONS.md, reload), for the logs. */
  configGeneration?: number;
}

interface PendingRequest {
  replies: WorkerToSupervisor[];
  /** Slots yet to answer; a slot that dies stops being waited for. */
  waiting: Set<WorkerSlot>;
  resolve: () => void;
}

export declare interface WorkerSupervisor {
  on(event: 'worker-exit', listener: (id: number, lastStats: Float64Array | undefined, lastLatency: WorkerLatencyExport | undefined) => void): this;
  on(event: 'worker-listening', listener: (id: number) => void): this;
  on(event: 'worker-abandoned', listener: (id: number, error: Error) => void): this;
  on(event: 'worker-events', listener: (id: number, events: NativeWorkerEvent[], dropped: number) => void): this;
  on(event: 'access-log', listener: (id: number, lines: string, count: number, dropped: number) => void): this;
}

/** How often a worker whose thread could not start (out of fds) is tried again. */
const THREAD_RETRY_MS = 1000;

export class WorkerSupervisor extends EventEmitter {
  private readonly pool: Piscina<PoolTask, number>;
  private readonly slots: WorkerSlot[] = [];
  private readonly restarts: RestartPolicy;
  private readonly pending = new Map<number, PendingRequest>();
  private nextRequestId = 1;
  private stopping = false;
  /** Set by stopAccepting(): the listening sockets may be closed, so no worker is (re)started. */
  private draining = false;
  private restarted = 0;

  constructor(private readonly options: SupervisorOptions) {
    super();
    const workers = options.config.workers;
    this.restarts = new RestartPolicy(options.restartPolicy ?? DEFAULT_RESTART_POLICY);
    this.pool = new Piscina<PoolTask, number>({
      filename: join(__dirname, '..', 'worker', 'proxy-worker.js'),
      minThreads: workers,
      maxThreads: workers,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      // The task never finishes while the proxy runs; Atomics.wait between tasks would only block
      // the thread's event loop, which carries our control messages.
      atomics: 'disabled',
      maxQueue: workers * 4,
    });
    // A thread that cannot start (Node's ERR_WORKER_INIT_FAILED, or EMFILE loading the worker's
    // module: the process is out of fds) is reported by piscina as an 'error' event on the pool,
    // which without a listener ended the whole process. Its launch stays queued in piscina, which
    // adds threads only when a task is submitted: retry below until a thread starts.
    this.pool.on('error', (err: unknown) => {
      this.options.log.warn('worker thread failed to start; retrying every second while a worker waits for one', {
        config_generation: this.options.configGeneration,
        reason: err instanceof Error ? err.message : String(err),
        waiting: this.pool.queueSize,
      });
      this.scheduleThreadRetry();
    });
  }

  private threadRetry: NodeJS.Timeout | undefined;

  /**
   * While a launch waits in piscina's queue for a thread that failed to start, submit (and at once
   * withdraw) a placeholder task once a second: submitting is what makes piscina add a thread,
   * which then takes the waiting launch. The placeholder is aborted while still queued, so it never
   * reaches a thread.
   */
  private scheduleThreadRetry(): void {
    if (this.threadRetry !== undefined || this.stopping) return;
    this.threadRetry = setTimeout(() => {
      this.threadRetry = undefined;
      if (this.stopping || this.draining || this.pool.queueSize === 0) return;
      const abort = new AbortController();
      this.pool.run({ kind: 'thread-start-probe' }, { signal: abort.signal }).catch(() => undefined);
      abort.abort();
    }, THREAD_RETRY_MS);
    this.threadRetry.unref();
  }

  get workerCount(): number {
    return this.options.config.workers;
  }

  /** Starts every worker; resolves when all listen, rejects with the first bootstrap error. */
  async start(): Promise<void> {
    const started = Array.from({ length: this.workerCount }, (_, id) => this.launch(id, 0));
    await Promise.all(started);
  }

  /** Workers relaunched after dying, since start (the admin's /server_info shows it). */
  get restartCount(): number {
    return this.restarted;
  }

  listeningCount(): number {
    return this.slots.filter((s) => s.state === 'listening').length;
  }

  /** Every live worker's counters; a worker that does not answer within timeoutMs gives its last ones. */
  async collectStats(timeoutMs = 1000): Promise<Float64Array[]> {
    const live = this.liveSlots();
    await this.ask(live, (requestId) => ({ type: 'stats', requestId }), timeoutMs);
    return live.map((s) => s.lastStats).filter((v): v is Float64Array => v !== undefined);
  }

  /** Every live worker's host-cache snapshot (workers that do not answer in time are left out). */
  async collectHosts(timeoutMs = 1000): Promise<Array<{ addresses: string[]; values: Float64Array }>> {
    const replies = await this.ask(this.liveSlots(), (requestId) => ({ type: 'hosts', requestId }), timeoutMs);
    return replies.flatMap((r) => (r.type === 'hosts' ? [{ addresses: r.addresses, values: r.values }] : []));
  }

  /** Every live worker's latency export; a worker that does not answer in time gives its last one. */
  async collectLatency(timeoutMs = 2000): Promise<WorkerLatencyExport[]> {
    const live = this.liveSlots();
    await this.ask(live, (requestId) => ({ type: 'latency', requestId }), timeoutMs);
    return live.map((s) => s.lastLatency).filter((v): v is WorkerLatencyExport => v !== undefined);
  }

  /**
   * Drain: every worker leaves the listening sockets and no worker is started again. Resolves when
   * each worker that was alive (also one still starting) has answered or died, or after timeoutMs;
   * after that no worker of this supervisor will attach, so the caller may close the sockets.
   */
  async stopAccepting(timeoutMs = 5000): Promise<void> {
    this.draining = true;
    // A starting worker reads this message only after it attached (its port starts then).
    const slots = this.slots.filter((s) => s.state === 'starting' || s.state === 'listening');
    await this.ask(slots, (requestId) => ({ type: 'stop-accepting', requestId }), timeoutMs);
  }

  /**
   * The counters each worker not known dead last reported (collectStats refreshes them). Read
   * synchronously after a collect: a worker's death is reported ('worker-exit', which retires its
   * counters) in the same turn its slot turns dead, so no worker is counted both live and retired.
   */
  currentStats(): Float64Array[] {
    return this.slots.filter((s) => s.state !== 'dead').flatMap((s) => (s.lastStats ? [s.lastStats] : []));
  }

  /** Like currentStats, for the latency exports (collectLatency refreshes them). */
  currentLatency(): WorkerLatencyExport[] {
    return this.slots.filter((s) => s.state !== 'dead').flatMap((s) => (s.lastLatency ? [s.lastLatency] : []));
  }

  private liveSlots(): WorkerSlot[] {
    return this.slots.filter((s) => s.state === 'listening' || s.state === 'exiting');
  }

  /** Sends one request to each slot and gathers the replies that carry its requestId. */
  private async ask(
    slots: WorkerSlot[],
    message: (requestId: number) => SupervisorToWorker,
    timeoutMs: number,
  ): Promise<WorkerToSupervisor[]> {
    if (slots.length === 0) return [];
    const requestId = this.nextRequestId++;
    const replies: WorkerToSupervisor[] = [];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.pending.set(requestId, {
        replies,
        waiting: new Set(slots),
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
      for (const slot of slots) this.post(slot, message(requestId));
    });
    this.pending.delete(requestId);
    return replies;
  }

  broadcast(message: SupervisorToWorker): void {
    for (const slot of this.slots) {
      if (slot.state === 'listening' || slot.state === 'exiting') this.post(slot, message);
    }
  }

  /** Test hook: makes one worker thread die abruptly. Returns false if there is no such worker. */
  crashWorker(id: number): boolean {
    const slot = this.slots[id];
    if (!slot || slot.state !== 'listening') return false;
    this.post(slot, { type: 'crash' });
    return true;
  }

  /**
   * Tells every worker to close and exit, waits (up to graceMs) until each task has ended, then
   * tears the thread pool down. The wait matters: destroying the pool terminates the threads, and a
   * thread terminated in the middle of a native call (its close()) aborts the whole process.
   */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    clearTimeout(this.threadRetry);
    for (const slot of this.slots) {
      if (slot.state === 'listening' || slot.state === 'starting') {
        slot.state = 'exiting';
        this.post(slot, { type: 'exit' });
      }
    }
    await this.allGone(graceMs);
    await this.pool.destroy();
  }

  private allGone(timeoutMs: number): Promise<void> {
    const gone = (): boolean => this.slots.every((s) => s.state === 'dead');
    if (gone()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.off('worker-exit', onExit);
        resolve();
      };
      const onExit = (): void => {
        if (gone()) done();
      };
      const timer = setTimeout(done, timeoutMs);
      this.on('worker-exit', onExit);
    });
  }

  private post(slot: WorkerSlot, message: SupervisorToWorker): void {
    try {
      slot.port.postMessage(message);
    } catch {
      // The port closed with its worker; the exit handler deals with the slot.
    }
  }

  private launch(id: number, generation: number): Promise<void> {
    if (generation > 0) this.restarted += 1;
    const channel = new MessageChannel();
    const slot: WorkerSlot = { id, generation, state: 'starting', port: channel.port1, startedAt: Date.now() };
    this.slots[id] = slot;

    const listening = new Promise<void>((resolve, reject) => {
      channel.port1.on('message', (message: WorkerToSupervisor) => {
        switch (message.type) {
          case 'listening':
            slot.state = 'listening';
            this.options.log.info('worker listening', {
              worker: id,
              generation,
              config_generation: this.options.configGeneration,
              addresses: message.addresses.join(','),
            });
            this.emit('worker-listening', id);
            resolve();
            break;
          case 'failed':
            slot.failure = message.error;
            reject(deserializeError(message.error));
            break;
          case 'events':
            this.emit('worker-events', id, message.events, message.dropped);
            break;
          case 'access-log':
            this.emit('access-log', id, message.lines, message.count, message.dropped);
            break;
          case 'exited':
            slot.exited = true;
            slot.onExited?.();
            break;
          case 'stats':
          case 'hosts':
          case 'latency':
          case 'stopped-accepting': {
            if (message.type === 'stats') slot.lastStats = message.values;
            if (message.type === 'latency') slot.lastLatency = message.export;
            const pending = this.pending.get(message.requestId);
            if (pending && pending.waiting.delete(slot)) {
              pending.replies.push(message);
              if (pending.waiting.size === 0) pending.resolve();
            }
            break;
          }
        }
      });
    });

    const task: WorkerTask = {
      workerId: id,
      generation,
      config: this.options.config,
      nativeOptions: this.options.nativeOptions(id),
      listeners: this.options.listeners,
      port: channel.port2,
    };
    this.pool.run(task, { transferList: [channel.port2] }).then(
      () => this.afterLastMessage(slot).then(() => this.onWorkerGone(slot, undefined)),
      (err: unknown) => this.onWorkerGone(slot, err instanceof Error ? err : new Error(String(err))),
    );
    // A bootstrap failure is reported through 'failed' (keeping errno fields); if the thread dies
    // before it can say so, the task rejection above ends this promise instead.
    return Promise.race([
      listening,
      new Promise<void>((_, reject) => slot.port.once('close', () => reject(new Error(`worker ${id} exited during startup`)))),
    ]);
  }

  /** Resolves once a worker that ended normally has had its last messages (access log) handled. */
  private afterLastMessage(slot: WorkerSlot): Promise<void> {
    if (slot.exited) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        slot.onExited = undefined;
        resolve();
      };
      const timer = setTimeout(done, EXITED_MESSAGE_WAIT_MS);
      slot.onExited = done;
    });
  }

  private onWorkerGone(slot: WorkerSlot, err: Error | undefined): void {
    const diedStarting = slot.state === 'starting';
    slot.state = 'dead';
    slot.port.close();
    for (const pending of this.pending.values()) {
      if (pending.waiting.delete(slot) && pending.waiting.size === 0) pending.resolve();
    }
    this.emit('worker-exit', slot.id, slot.lastStats, slot.lastLatency);
    if (this.stopping) return;
    const reason = slot.failure?.message ?? err?.message ?? 'exited';
    if (this.draining) {
      // A worker that never listened did not die while draining: its end rejects its launch
      // (with its bootstrap failure, or 'exited during startup'), and whoever launched it reports
      // that (start, a reload, a restart); the drain is only the teardown around that failure.
      // Its 'failed' message and its thread's end may arrive in either order, so slot.failure
      // cannot tell.
      if (!diedStarting) {
        this.options.log.warn('worker died while draining; not restarting it', { worker: slot.id, generation: slot.generation, reason });
      }
      return;
    }

    const outOfResources = failedForResources(slot.failure) || failedForResources(err);
    const decision = this.restarts.onExit(slot.id, Date.now() - slot.startedAt, { outOfResources });
    if (!decision.restart) {
      this.options.log.error('worker keeps dying; not restarting it', { worker: slot.id, failures: decision.streak, reason });
      this.emit('worker-abandoned', slot.id, err ?? new Error(reason));
      return;
    }
    this.options.log.warn('worker died; restarting', {
      worker: slot.id,
      generation: slot.generation,
      reason,
      failures: decision.streak,
      restart_in_ms: decision.delayMs,
      ...(outOfResources ? { out_of_resources: true } : {}),
    });
    setTimeout(() => {
      if (this.stopping || this.draining) return;
      this.launch(slot.id, slot.generation + 1).catch((e: unknown) => {
        this.options.log.warn('worker restart failed', { worker: slot.id, reason: e instanceof Error ? e.message : String(e) });
      });
    }, decision.delayMs).unref();
  }
}

/**
 * A failure that says the process is out of fds or memory (the core's "epoll_create1 failed:
 * EMFILE"), not that the worker is broken. Node raises ERR_WORKER_INIT_FAILED only when the new
 * thread's event loop cannot be made (uv_loop_init: EMFILE, ENFILE, ENOMEM) or the thread itself
 * cannot be created (EAGAIN: the thread or memory limit); a worker that cannot get memory for its
 * isolate or context gets ERR_WORKER_OUT_OF_MEMORY, and bad worker code ends in its own error.
 * So ERR_WORKER_INIT_FAILED always names the process's resources.
 */
function failedForResources(err: { code?: unknown; message?: unknown } | undefined): boolean {
  if (err === undefined) return false;
  if (typeof err.code === 'string' && isOutOfResources(err.code)) return true;
  return err.code === 'ERR_WORKER_INIT_FAILED' || (typeof err.message === 'string' && mentionsOutOfResources(err.message));
}
