// When to restart a worker that ended, and when to stop trying. One rule for every way a worker
// ends (at bootstrap or after it listened): consecutive deaths form a streak, each one waits longer
// before the restart, and at maxFailures the worker is left down. Only a worker that stayed up for
// healthyAfterMs starts a new streak, so a worker that dies right after listening cannot be
// restarted in a tight loop forever. A start that failed for want of fds or memory is the
// exception: retried at the longest delay until it works, never given up on.

export interface RestartPolicyOptions {
  /** Consecutive deaths of one worker after which it is not restarted. */
  maxFailures: number;
  /** A worker that ran at least this long before it died starts a fresh streak. */
  healthyAfterMs: number;
  /** Delay before the restart after the 1st, 2nd, ... death of a streak (the last one repeats). */
  backoffMs: readonly number[];
}

export type RestartDecision =
  | { restart: true; delayMs: number; streak: number }
  | { restart: false; streak: number };

export const DEFAULT_RESTART_POLICY: RestartPolicyOptions = {
  maxFailures: 5,
  healthyAfterMs: 10_000,
  backoffMs: [100, 250, 500, 1000],
};

export class RestartPolicy {
  private readonly streaks = new Map<number, number>();

  constructor(private readonly options: RestartPolicyOptions = DEFAULT_RESTART_POLICY) {
    if (options.maxFailures < 1) throw new RangeError('maxFailures must be at least 1');
    if (options.backoffMs.length === 0) throw new RangeError('backoffMs must not be empty');
  }

  /**
   * Records that worker `id` ended after running uptimeMs, and says what to do about it. A worker
   * that could not start because the process is out of fds or memory (`outOfResources`) is not
   * failing on its own: it is tried again at the longest delay, for as long as that lasts, and the
   * death neither lengthens its streak nor leaves it down (it would stay down once the pressure went).
   */
  onExit(id: number, uptimeMs: number, cause: { outOfResources?: boolean } = {}): RestartDecision {
    if (cause.outOfResources === true) {
      const { backoffMs } = this.options;
      return { restart: true, delayMs: backoffMs[backoffMs.length - 1] ?? 0, streak: this.streaks.get(id) ?? 0 };
    }
    const previous = uptimeMs >= this.options.healthyAfterMs ? 0 : (this.streaks.get(id) ?? 0);
    const streak = previous + 1;
    this.streaks.set(id, streak);
    if (streak >= this.options.maxFailures) return { restart: false, streak };
    const { backoffMs } = this.options;
    return { restart: true, delayMs: backoffMs[Math.min(streak - 1, backoffMs.length - 1)] ?? 0, streak };
  }
}
