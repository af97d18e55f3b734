// The supervisor's restart rule: one streak for every way a worker dies, growing delays, a give-up,
// and a fresh start only after a healthy period.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RestartPolicy } from '../src/supervisor/restart-policy';

const policy = (): RestartPolicy => new RestartPolicy({ maxFailures: 4, healthyAfterMs: 10_000, backoffMs: [100, 250, 500] });

test('a worker dying right after it starts, again and again, backs off and is then left down', () => {
  const p = policy();
  assert.deepEqual(p.onExit(0, 50), { restart: true, delayMs: 100, streak: 1 });
  assert.deepEqual(p.onExit(0, 2_000), { restart: true, delayMs: 250, streak: 2 });
  assert.deepEqual(p.onExit(0, 9_999), { restart: true, delayMs: 500, streak: 3 });
  assert.deepEqual(p.onExit(0, 1), { restart: false, streak: 4 });
});

test('the last delay repeats when the streak outgrows the list', () => {
  const p = new RestartPolicy({ maxFailures: 10, healthyAfterMs: 10_000, backoffMs: [100, 250] });
  const delays = Array.from({ length: 5 }, () => p.onExit(0, 0)).map((d) => (d.restart ? d.delayMs : -1));
  assert.deepEqual(delays, [100, 250, 250, 250, 250]);
});

test('only a healthy period starts a new streak; workers have streaks of their own', () => {
  const p = policy();
  p.onExit(0, 10);
  p.onExit(0, 10);
  assert.deepEqual(p.onExit(1, 10), { restart: true, delayMs: 100, streak: 1 });
  assert.deepEqual(p.onExit(0, 10_000), { restart: true, delayMs: 100, streak: 1 });
  assert.deepEqual(p.onExit(0, 10), { restart: true, delayMs: 250, streak: 2 });
});

test('options are checked', () => {
  assert.throws(() => new RestartPolicy({ maxFailures: 0, healthyAfterMs: 1, backoffMs: [1] }), RangeError);
  assert.throws(() => new RestartPolicy({ maxFailures: 1, healthyAfterMs: 1, backoffMs: [] }), RangeError);
});

test('a worker that could not start for want of fds (or memory) is retried at the longest delay for as long as that lasts, and never left down for it', () => {
  const p = policy();
  assert.deepEqual(p.onExit(0, 50), { restart: true, delayMs: 100, streak: 1 });
  for (let i = 0; i < 20; i++) assert.deepEqual(p.onExit(0, 5, { outOfResources: true }), { restart: true, delayMs: 500, streak: 1 });
  // Its own crashes still count as before: the streak goes on from where it was.
  assert.deepEqual(p.onExit(0, 50), { restart: true, delayMs: 250, streak: 2 });
});
