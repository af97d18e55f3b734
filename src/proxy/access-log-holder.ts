// The access log across reloads: holds the writer of the running config's `access_log` and swaps
// it when a reload changes the destination. The new file is opened before the new generation
// starts, so an unwritable path refuses the reload (the running log goes on); it replaces the old
// writer only once the new generation is active. Lines are not tagged by generation: whatever a
// draining old generation still logs after the swap goes to the new destination. The writer's
// counters are carried over, so access_log_lines and the others never go backwards.

import type { AccessLogConfig } from '../config/types';
import type { CounterValues } from '../stats/counters';
import type { Logger } from '../util/logger';
import { AccessLogWriter, type AccessLogCounters } from './access-log';

/** A prepared change: commit once the new generation is active, abort if it never starts. */
export interface AccessLogChange {
  commit(): void;
  abort(): Promise<void>;
}

export class AccessLogHolder {
  private writer: AccessLogWriter | undefined;
  private path: string | undefined;
  /** Some config of this process had an access log: its counters are reported from then on. */
  private everEnabled = false;
  /** Counters of the writers closed by reloads. */
  private readonly retired: AccessLogCounters = { access_log_lines: 0, access_log_write_dropped: 0, access_log_reopens: 0 };
  /** Closing writers (their buffered lines still going out): close() waits for them. */
  private readonly closing = new Set<Promise<void>>();

  private constructor(private readonly log: Logger) {}

  /** Opens the configured destination (rejects, with the path, if it cannot be opened). */
  static async open(config: AccessLogConfig | null, log: Logger): Promise<AccessLogHolder> {
    const holder = new AccessLogHolder(log);
    if (config) {
      holder.writer = await AccessLogWriter.open(config, log);
      holder.path = config.path;
      holder.everEnabled = true;
    }
    return holder;
  }

  get enabled(): boolean {
    return this.writer !== undefined;
  }

  write(lines: string, count: number): void {
    this.writer?.write(lines, count);
  }

  /** Reopens the file (logrotate); false when no access log is configured. */
  reopen(): boolean {
    this.writer?.reopen();
    return this.writer !== undefined;
  }

  /**
   * Gets `next` ready without touching the running log: the same path keeps its writer (sample
   * changes reach the new generation's workers); a new path is opened now, so it fails here.
   */
  async prepare(next: AccessLogConfig | null): Promise<AccessLogChange> {
    const nextPath = next?.path;
    if (nextPath === this.path) return { commit: () => undefined, abort: async () => undefined };
    const opened = next ? await AccessLogWriter.open(next, this.log) : undefined;
    return {
      commit: () => this.swap(opened, nextPath),
      abort: async () => {
        await opened?.close();
      },
    };
  }

  private swap(next: AccessLogWriter | undefined, nextPath: string | undefined): void {
    const old = this.writer;
    const oldPath = this.path;
    this.writer = next;
    this.path = nextPath;
    if (next) this.everEnabled = true;
    if (old) {
      const c = old.counters();
      this.retired.access_log_lines += c.access_log_lines;
      this.retired.access_log_write_dropped += c.access_log_write_dropped;
      this.retired.access_log_reopens += c.access_log_reopens;
      const closed = old.close().catch((err: unknown) =>
        this.log.error('access log: closing the previous file failed', { path: oldPath, error: err instanceof Error ? err.message : String(err) }),
      );
      this.closing.add(closed);
      void closed.finally(() => this.closing.delete(closed));
    }
    this.log.info('access log changed by reload', { from: oldPath ?? 'off', to: nextPath ?? 'off' });
  }

  counters(): AccessLogCounters {
    const now = this.writer?.counters() ?? { access_log_lines: 0, access_log_write_dropped: 0, access_log_reopens: 0 };
    return {
      access_log_lines: this.retired.access_log_lines + now.access_log_lines,
      access_log_write_dropped: this.retired.access_log_write_dropped + now.access_log_write_dropped,
      access_log_reopens: this.retired.access_log_reopens + now.access_log_reopens,
    };
  }

  /**
   * The data plane's counters plus the writers': access_log_dropped then counts every record lost,
   * in a worker's buffer or in a writer's. Unchanged when the log was never on.
   */
  withCounters(values: CounterValues): CounterValues {
    if (!this.everEnabled) return values;
    const own = this.counters();
    return {
      ...values,
      access_log_dropped: (values['access_log_dropped'] ?? 0) + own.access_log_write_dropped,
      access_log_lines: own.access_log_lines,
      access_log_reopens: own.access_log_reopens,
    };
  }

  /** Writes out what is buffered and closes every file. */
  async close(): Promise<void> {
    await this.writer?.close();
    await Promise.all(this.closing);
  }
}
