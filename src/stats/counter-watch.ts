// Watches summed counters on a timer and fires a rule the first time its counter rises: for
// conditions an operator must hear about once (with the fix), not once per connection.

import type { CounterValues } from './counters';

export interface CounterRule {
  counter: string;
  /** Called once, the first time the counter is seen above 0 (every counter starts at 0). */
  onFirstRise(value: number): void;
}

export interface CounterWatch {
  /** One reading now (the timer calls this; tests call it directly instead of waiting). */
  check(): Promise<void>;
  stop(): void;
}

export function watchCounters(
  read: () => Promise<CounterValues>,
  rules: readonly CounterRule[],
  intervalMs: number,
  onError: (err: unknown) => void = () => undefined,
): CounterWatch {
  const fired = new Set<CounterRule>();
  let busy = false;
  const check = async (): Promise<void> => {
    // A slow read (workers busy) must not stack up readings behind it.
    if (busy || fired.size === rules.length) return;
    busy = true;
    try {
      const values = await read();
      for (const rule of rules) {
        const value = values[rule.counter] ?? 0;
        if (!fired.has(rule) && value > 0) {
          fired.add(rule);
          rule.onFirstRise(value);
        }
      }
    } catch (err) {
      onError(err);
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void check(), intervalMs);
  // The watch is advisory: it never keeps the process alive.
  timer.unref();
  return { check, stop: () => clearInterval(timer) };
}
