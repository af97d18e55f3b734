// The typed message contract between the supervisor (main thread) and each proxy worker thread.
// Every message on a worker's MessagePort is one of these.

import type { SplicegateConfig } from '../config/types';
import type { WorkerLatencyExport } from '../latency/source';
import type { NativeListenerOptions, NativeWorkerEvent, NativeWorkerOptions } from '../native/binding';

/**
 * One listening socket of the process, by fd number: workers are threads of the same process, so
 * the number is valid in them while the main thread keeps the socket open (it does until drain).
 */
export interface ListenerHandoff {
  options: NativeListenerOptions;
  fd: number;
}

/**
 * What the supervisor submits only to make piscina start a thread for a launch that waits in its
 * queue (piscina adds threads on submit). It is withdrawn while still queued; should a thread ever
 * get one, the worker ends it at once.
 */
export interface ThreadStartProbe {
  kind: 'thread-start-probe';
}

/** Every task the supervisor's pool runs. */
export type PoolTask = WorkerTask | ThreadStartProbe;

/** What a worker task receives from piscina. The port is transferred to the worker. */
export interface WorkerTask {
  workerId: number;
  generation: number;
  config: SplicegateConfig;
  nativeOptions: NativeWorkerOptions;
  /** The process's listening sockets, one per configured listener, in config order. */
  listeners: ListenerHandoff[];
  port: import('node:worker_threads').MessagePort;
}

/** Node's system-error fields, kept across the thread boundary (structured clone drops them). */
export interface SerializedError {
  message: string;
  code?: string;
  errno?: number;
  syscall?: string;
  context?: string;
}

export type SupervisorToWorker =
  | { type: 'stats'; requestId: number }
  | { type: 'hosts'; requestId: number }
  | { type: 'latency'; requestId: number }
  /** Answered with 'stopped-accepting' once the worker holds no share of any listening socket. */
  | { type: 'stop-accepting'; requestId: number }
  | { type: 'close-all' }
  | { type: 'exit' }
  /** Test hook (admin with SPLICEGATE_TEST_HOOKS=1): make this worker thread die abruptly. */
  | { type: 'crash' };

export type WorkerToSupervisor =
  | { type: 'listening'; addresses: string[] }
  | { type: 'failed'; error: SerializedError }
  | { type: 'stopped-accepting'; requestId: number }
  | { type: 'stats'; requestId: number; values: Float64Array }
  | { type: 'hosts'; requestId: number; addresses: string[]; values: Float64Array }
  | { type: 'latency'; requestId: number; export: WorkerLatencyExport }
  /** Unsolicited, about once a second while there is something to report (deny log). */
  | { type: 'events'; events: NativeWorkerEvent[]; dropped: number }
  /** Unsolicited, every ACCESS_LOG_DRAIN_MS while records arrive: `count` JSON lines in one string. */
  | { type: 'access-log'; lines: string; count: number; dropped: number }
  /**
   * The worker's last message, after its last access-log lines. The task's end reaches the main
   * thread on piscina's own channel, which may overtake this port's messages: the supervisor waits
   * for this before it closes the port, so those lines are not lost.
   */
  | { type: 'exited' };

export function serializeError(err: unknown): SerializedError {
  if (err instanceof Error) {
    const e = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown; context?: unknown };
    const out: SerializedError = { message: e.message };
    if (typeof e.code === 'string') out.code = e.code;
    if (typeof e.errno === 'number') out.errno = e.errno;
    if (typeof e.syscall === 'string') out.syscall = e.syscall;
    if (typeof e.context === 'string') out.context = e.context;
    return out;
  }
  return { message: String(err) };
}

/** Rebuilds an Error with the system-error fields, for the CLI's error reporting. */
export function deserializeError(s: SerializedError): Error {
  const err = new Error(s.message) as Error & Partial<SerializedError>;
  if (s.code !== undefined) err.code = s.code;
  if (s.errno !== undefined) err.errno = s.errno;
  if (s.syscall !== undefined) err.syscall = s.syscall;
  if (s.context !== undefined) err.context = s.context;
  return err;
}
