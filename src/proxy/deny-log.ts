// The deny log: one line per connection the destination policy refused, with source, destination,
// listener and deciding rule. Workers report denies in bounded batches (NativeWorker.drainEvents);
// this logs at most `maxLinesPerSecond` of them per second and sums up the rest in one line, so a
// client hammering a denied address cannot flood the log. The counters (policy_denied,
// policy.<rule>.denied) stay exact whatever is left out here.

import type { NativeWorkerEvent } from '../native/binding';
import type { Logger } from '../util/logger';

export const DEFAULT_DENY_LOG_LINES_PER_SECOND = 20;
const WINDOW_MS = 1000;

export interface DenyLogOptions {
  log: Logger;
  maxLinesPerSecond?: number;
  /** Injectable for tests. */
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => { unref?: () => unknown };
  clearTimer?: (timer: { unref?: () => unknown }) => void;
}

export class DenyLog {
  private readonly log: Logger;
  private readonly max: number;
  private readonly now: () => number;
  private readonly setTimer: NonNullable<DenyLogOptions['setTimer']>;
  private readonly clearTimer: NonNullable<DenyLogOptions['clearTimer']>;
  private windowStart = -Infinity;
  private lines = 0;
  private suppressed = 0;
  private dropped = 0;
  private timer: { unref?: () => unknown } | undefined;

  constructor(options: DenyLogOptions) {
    this.log = options.log;
    this.max = options.maxLinesPerSecond ?? DEFAULT_DENY_LOG_LINES_PER_SECOND;
    this.now = options.now ?? Date.now;
    this.setTimer = options.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = options.clearTimer ?? ((t) => clearTimeout(t as NodeJS.Timeout));
  }

  /** One worker's batch: `dropped` events did not even fit in the worker's buffer. */
  add(worker: number, events: readonly NativeWorkerEvent[], dropped: number): void {
    const now = this.now();
    if (now - this.windowStart >= WINDOW_MS) {
      this.summarize();
      this.windowStart = now;
      this.lines = 0;
    }
    for (const event of events) {
      if (event.kind !== 'policy_denied') continue;
      if (this.lines < this.max) {
        this.lines += 1;
        this.log.warn('policy denied', {
          source: event.source,
          destination: event.destination,
          listener: event.listener,
          rule: event.rule,
          worker,
          at: new Date(event.timeMs).toISOString(),
        });
      } else {
        this.suppressed += 1;
      }
    }
    this.dropped += dropped;
    // The summary comes at the end of the window even if no further batch arrives.
    if ((this.suppressed > 0 || this.dropped > 0) && !this.timer) {
      const timer = this.setTimer(() => {
        this.timer = undefined;
        this.summarize();
      }, Math.max(0, this.windowStart + WINDOW_MS - now));
      timer.unref?.();
      this.timer = timer;
    }
  }

  /** Logs what is still unsummarized and stops the timer (at shutdown). */
  close(): void {
    this.summarize();
  }

  private summarize(): void {
    if (this.timer) {
      this.clearTimer(this.timer);
      this.timer = undefined;
    }
    if (this.suppressed === 0 && this.dropped === 0) return;
    this.log.warn('policy denied: more connections than logged', {
      suppressed: this.suppressed + this.dropped,
      rate_limited: this.suppressed,
      dropped_by_workers: this.dropped,
      max_lines_per_second: this.max,
    });
    this.suppressed = 0;
    this.dropped = 0;
  }
}
