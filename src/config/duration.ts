// Durations in the config are strings with a mandatory unit ("250ms", "5s", "1m", "1h").
// A bare number is refused: "connect_timeout: 5" could mean 5 ms or 5 s, and guessing wrong by a
// factor of 1000 in a proxy timeout is the kind of mistake that only shows up in production.

import { Parsed, showValue } from './parsed';

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/**
 * Node timers store delays as a signed 32-bit millisecond count; a larger value makes setTimeout
 * fire after 1 ms instead (with only a warning). Refuse it here rather than have "idle_timeout:
 * 1000h" silently mean "close everything immediately".
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const EXAMPLES = '"250ms", "5s", "1m" or "1h"';

/** Parse a duration string into whole milliseconds (> 0, <= MAX_DURATION_MS). */
export function parseDuration(text: string): Parsed<number> {
  const trimmed = text.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return { ok: false, message: bareNumberMessage(trimmed) };
  const match = DURATION_RE.exec(trimmed);
  if (match === null) {
    return { ok: false, message: `expected a duration with a unit, like ${EXAMPLES}, got ${showValue(text)}` };
  }
  const unit = match[2] as keyof typeof UNIT_MS;
  // Multiply before rounding checks: "1.5s" is a whole 1500 ms, "0.5ms" is not.
  const ms = Number(match[1]) * UNIT_MS[unit];
  if (!Number.isInteger(ms)) {
    return { ok: false, message: `must be a whole number of milliseconds, got ${showValue(text)}` };
  }
  if (ms <= 0) return { ok: false, message: `must be greater than 0, got ${showValue(text)}` };
  if (ms > MAX_DURATION_MS) {
    return {
      ok: false,
      message: `must be at most ${MAX_DURATION_MS}ms (about 24.8 days, the longest Node.js timer), got ${showValue(text)}`,
    };
  }
  return { ok: true, value: ms };
}

/** Message for a duration written without a unit, whether YAML read it as a number or a string. */
export function bareNumberMessage(value: number | string): string {
  return `expected a duration with a unit, like ${EXAMPLES}, got the bare number ${String(value)} (a unit is required: is it ${String(value)}ms or ${String(value)}s?)`;
}
