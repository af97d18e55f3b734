// The deny log's rate limit, driven by a fake clock and timer: at most N lines per one-second
// window, the rest (and what workers dropped) summed up in one line at the window's end.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DenyLog } from '../src/proxy/deny-log';
import type { NativePolicyDeniedEvent } from '../src/native/binding';
import { createLogger } from '../src/util/logger';

function harness(max: number): {
  log: DenyLog;
  lines: string[];
  clock: { now: number };
  fire: () => void;
  pendingTimers: () => number;
} {
  const lines: string[] = [];
  const clock = { now: 1_000_000 };
  const timers: Array<{ fn: () => void; at: number; cleared: boolean }> = [];
  const log = new DenyLog({
    log: createLogger('debug', (l) => lines.push(l)),
    maxLinesPerSecond: max,
    now: () => clock.now,
    setTimer: (fn, ms) => {
      const t = { fn, at: clock.now + ms, cleared: false, unref: () => undefined };
      timers.push(t);
      return t;
    },
    clearTimer: (t) => {
      (t as { cleared: boolean }).cleared = true;
    },
  });
  const fire = (): void => {
    for (const t of timers.splice(0)) if (!t.cleared && t.at <= clock.now) t.fn();
  };
  return { log, lines, clock, fire, pendingTimers: () => timers.filter((t) => !t.cleared).length };
}

function denies(n: number, rule = 'no-db'): NativePolicyDeniedEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    kind: 'policy_denied',
    timeMs: 1_700_000_000_000 + i,
    source: `10.10.1.2:${40000 + i}`,
    destination: '10.10.2.3:8081',
    listener: 'egress',
    rule,
  }));
}

const summaries = (lines: string[]): string[] => lines.filter((l) => l.includes('more connections than logged'));
const denyLines = (lines: string[]): string[] => lines.filter((l) => / policy denied source=/.test(l));

test('a deny line carries source, destination, listener, rule, worker and the time of the deny', () => {
  const h = harness(5);
  h.log.add(3, denies(1), 0);
  assert.equal(h.lines.length, 1);
  assert.match(
    h.lines[0] ?? '',
    / warn policy denied source=10\.10\.1\.2:40000 destination=10\.10\.2\.3:8081 listener=egress rule=no-db worker=3 at=2023-11-14T22:13:20\.000Z\n$/,
  );
  assert.equal(h.pendingTimers(), 0, 'nothing suppressed: no summary scheduled');
});

test('beyond N lines in a window the rest is counted, then summed up once when the window ends', () => {
  const h = harness(5);
  h.log.add(0, denies(8), 0);
  h.clock.now += 400;
  h.log.add(1, denies(4), 7); // same window: all suppressed, plus 7 the worker dropped
  assert.equal(denyLines(h.lines).length, 5);
  assert.equal(summaries(h.lines).length, 0, 'no summary before the window ends');
  h.clock.now += 600;
  h.fire();
  const s = summaries(h.lines);
  assert.equal(s.length, 1);
  assert.match(s[0] ?? '', / suppressed=14 rate_limited=7 dropped_by_workers=7 max_lines_per_second=5/);
  // Everything is accounted for: 5 lines + 14 summarized = 12 events + 7 dropped.
  h.log.add(0, denies(2), 0); // a new window logs again
  assert.equal(denyLines(h.lines).length, 7);
  assert.equal(h.pendingTimers(), 0);
});

test('a batch arriving after the window ended summarizes the old window before logging', () => {
  const h = harness(1);
  h.log.add(0, denies(3), 0);
  h.clock.now += 1500;
  h.log.add(0, denies(1), 0);
  assert.deepEqual(
    h.lines.map((l) => (l.includes('more connections') ? 'summary' : 'deny')),
    ['deny', 'summary', 'deny'],
  );
  assert.match(summaries(h.lines)[0] ?? '', / suppressed=2 /);
  assert.equal(h.pendingTimers(), 0, 'the old window timer was cancelled');
});

test('close() flushes what is still unsummarized', () => {
  const h = harness(0);
  h.log.add(0, denies(2), 1);
  h.log.close();
  assert.match(summaries(h.lines)[0] ?? '', / suppressed=3 /);
  h.log.close();
  assert.equal(summaries(h.lines).length, 1, 'nothing twice');
});
