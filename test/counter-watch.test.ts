// The counter watch and the loop warning: one log line, the first time loop_rejected rises, naming
// both fixes. Readings are driven by check(), not by waiting for the timer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../src/config/load';
import { fdWarningRule } from '../src/proxy/fd-warning';
import { loopWarningRule } from '../src/proxy/loop-warning';
import { watchCounters } from '../src/stats/counter-watch';
import { createLogger } from '../src/util/logger';

const CONFIG = 'listeners:\n  - { name: egress, address: "0.0.0.0:15001" }\n';

function capture(): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger('info', (l) => lines.push(l)) };
}

test('loop_rejected: one warning on the first rise, none before, none after', async () => {
  const { lines, log } = capture();
  const readings = [0, 0, 3, 9, 40];
  let i = 0;
  const watch = watchCounters(async () => ({ loop_rejected: readings[Math.min(i++, readings.length - 1)] ?? 0 }), [loopWarningRule(parseConfigText(CONFIG, 't'), log, 1234)], 3_600_000);
  try {
    await watch.check();
    await watch.check();
    assert.equal(lines.length, 0, 'no warning while loop_rejected is 0');
    await watch.check();
    assert.equal(lines.length, 1);
    await watch.check();
    await watch.check();
    assert.equal(lines.length, 1, 'logged once');
  } finally {
    watch.stop();
  }
  const line = lines[0] ?? '';
  assert.match(line, / warn loop: /);
  assert.match(line, /loop_rejected=3 /);
  assert.match(line, /listener_ports=15001 /);
  assert.match(line, /set cluster\.upstream_mark \(e\.g\. 0x100\) and add \\"-m mark --mark 0x100 -j RETURN\\" before the REDIRECT rule/);
  assert.match(line, /-m owner ! --uid-owner 1234/);
});

test('loop warning with upstream_mark set names that mark', async () => {
  const { lines, log } = capture();
  const config = parseConfigText(`${CONFIG}cluster: { upstream_mark: 0x2a }\n`, 't');
  const watch = watchCounters(async () => ({ loop_rejected: 1 }), [loopWarningRule(config, log, 0)], 3_600_000);
  await watch.check();
  watch.stop();
  assert.equal(lines.length, 1);
  assert.match(lines[0] ?? '', /cluster\.upstream_mark is 0x2a: add \\"-m mark --mark 0x2a -j RETURN\\"/);
});

test('a failing read is reported, not thrown, and the next reading still works', async () => {
  const { lines, log } = capture();
  const errors: unknown[] = [];
  let fail = true;
  const watch = watchCounters(
    async () => {
      if (fail) throw new Error('worker busy');
      return { loop_rejected: 2 };
    },
    [loopWarningRule(parseConfigText(CONFIG, 't'), log, 0)],
    3_600_000,
    (err) => errors.push(err),
  );
  await watch.check();
  fail = false;
  await watch.check();
  watch.stop();
  assert.equal(errors.length, 1);
  assert.equal(lines.length, 1);
});

test('downstream_cx_accept_paused: one out-of-fds warning on the first rise, naming the limit and the fix', async () => {
  const { lines, log } = capture();
  const readings = [0, 5, 5000, 90000];
  let i = 0;
  const watch = watchCounters(
    async () => ({ downstream_cx_accept_paused: readings[Math.min(i++, readings.length - 1)] ?? 0 }),
    [fdWarningRule(parseConfigText(CONFIG, 't'), 256, log)],
    3_600_000,
  );
  try {
    await watch.check();
    assert.equal(lines.length, 0, 'no warning while nothing paused');
    for (let n = 0; n < 3; n++) await watch.check();
    assert.equal(lines.length, 1, 'one line however often accepting pauses');
  } finally {
    watch.stop();
  }
  const line = lines[0] ?? '';
  assert.match(line, / warn out of file descriptors: /);
  assert.match(line, /downstream_cx_accept_paused=5 /);
  assert.match(line, /nofile=256 /);
  assert.match(line, /LimitNOFILE/);
});
