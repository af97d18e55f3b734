// The access log's writer: the workers' JSON lines (formatted from the core's records, see
// cpp/core/access_log.h) appended to the configured file, or stdout, through pino's asynchronous
// destination (sonic-boom). It runs on the main thread, off the data plane: a slow disk grows this
// thread's write buffer, never the relay's latency. The buffer is bounded (MAX_BUFFERED_BYTES);
// what would exceed it is dropped and counted, like records that did not fit in a worker's buffer.
//
// reopen() (SIGUSR1, POST /logs/reopen) opens the path again, for logrotate: lines already
// buffered go to the old file, the next ones to the file now at the path.

import { closeSync, openSync } from 'node:fs';
import pino from 'pino';
import type { AccessLogConfig } from '../config/types';
import { ACCESS_LOG_STDOUT } from '../config/schema';
import type { Logger } from '../util/logger';

/** Lines waiting for the disk beyond this are dropped (counted in access_log_dropped). */
export const MAX_BUFFERED_BYTES = 64 * 1024 * 1024;

type Destination = ReturnType<typeof pino.destination>;

export interface AccessLogCounters {
  /** Lines handed to the destination. */
  access_log_lines: number;
  /** Lines the writer dropped: its buffer was full (a stalled disk). */
  access_log_write_dropped: number;
  /** Reopens done (signal or admin). */
  access_log_reopens: number;
}

export class AccessLogWriter {
  private lines = 0;
  private writeDropped = 0;
  private reopens = 0;
  private closed = false;
  /** A reopen is under way (sonic-boom drops an end() that overtakes one: close() waits for it). */
  private reopening: Promise<void> | undefined;

  private constructor(
    private readonly dest: Destination,
    private readonly path: string,
    private readonly log: Logger,
  ) {
    dest.on('drop', (data: string) => {
      this.writeDropped += countLines(data);
    });
    // A write or reopen error (disk full, directory gone) is logged; the proxy keeps relaying.
    dest.on('error', (err: Error) => this.log.error('access log: write failed', { path, error: err.message }));
  }

  /** Opens the destination; rejects (with the path) if the file cannot be opened. */
  static open(config: AccessLogConfig, log: Logger): Promise<AccessLogWriter> {
    const toStdout = config.path === ACCESS_LOG_STDOUT;
    if (!toStdout) {
      // Tried here first: a destination that never opened stays registered for pino's flush at
      // exit, which then throws.
      try {
        closeSync(openSync(config.path, 'a'));
      } catch (err) {
        return Promise.reject(Object.assign(err as Error, { context: `access_log ${config.path}` }));
      }
    }
    const dest = pino.destination({
      dest: toStdout ? 1 : config.path,
      sync: false,
      append: true,
      mkdir: false,
      maxLength: MAX_BUFFERED_BYTES,
    });
    const writer = new AccessLogWriter(dest, config.path, log);
    if (toStdout) return Promise.resolve(writer);
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(Object.assign(err, { context: `access_log ${config.path}` }));
      dest.once('error', onError);
      dest.once('ready', () => {
        dest.removeListener('error', onError);
        resolve(writer);
      });
    });
  }

  /** `count` complete JSON lines (one string) from one worker's drain. */
  write(lines: string, count: number): void {
    if (this.closed || lines.length === 0) return;
    this.lines += count;
    this.dest.write(lines);
  }

  /** Opens the file at the path again (after logrotate moved it); a no-op on stdout. */
  reopen(): void {
    if (this.closed || this.path === ACCESS_LOG_STDOUT) return;
    this.reopens += 1;
    if (!this.reopening) {
      this.reopening = new Promise<void>((resolve) => {
        const done = (): void => {
          this.dest.removeListener('ready', done);
          this.dest.removeListener('error', done);
          this.reopening = undefined;
          resolve();
        };
        this.dest.once('ready', done);
        this.dest.once('error', done);
      });
    }
    this.dest.reopen();
    this.log.info('access log reopened', { path: this.path });
  }

  counters(): AccessLogCounters {
    return { access_log_lines: this.lines, access_log_write_dropped: this.writeDropped, access_log_reopens: this.reopens };
  }

  /** Writes out what is buffered and closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.reopening;
    return new Promise((resolve) => {
      this.dest.once('close', () => resolve());
      this.dest.once('error', () => resolve());
      this.dest.end();
    });
  }
}

function countLines(data: string): number {
  let n = 0;
  for (let i = data.indexOf('\n'); i !== -1; i = data.indexOf('\n', i + 1)) n += 1;
  return n;
}
