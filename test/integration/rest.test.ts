// At rest: an idle splicegate's loop threads (named splicegate-loop) wake about once a second while
// they hold idle relayed connections, not on the 50 ms tick that deadlines need (the tick's rest
// period, docs/ARCHITECTURE.md "Thread model"), nor on the access log's 100 ms drain while it has
// nothing to take; the held connections are relayed as before and their access-log lines arrive.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { HoldClient } from '../lab/clients';
import { disposeLab, started, withDiagnostics } from '../lab/harness';
import { waitFor } from '../lab/util';

const WORKERS = 2;
const HELD = 8;
const WINDOW_MS = 4000;
// The rest tick wakes a loop thread about once a second; the busy 50 ms tick alone would wake it 80
// times in the window, and a drain that did not ask first 40 times (the access log's, every 100 ms).
const MAX_WAKEUPS_PER_SECOND = 6;

/** The process's relay threads: tid -> context switches so far (voluntary + involuntary). */
function loopThreadSwitches(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const base = `/proc/${pid}/task/${tid}`;
    if (fs.readFileSync(`${base}/comm`, 'utf8').trim() !== 'splicegate-loop') continue;
    const status = fs.readFileSync(`${base}/status`, 'utf8');
    const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
    out.set(tid, field('voluntary_ctxt_switches') + field('nonvoluntary_ctxt_switches'));
  }
  return out;
}

describe('at rest', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let accessLog: string;

  before(async () => {
    lab = await Lab.create({ name: 'rest' });
    await lab.startServer('hold', ['--listen', '10.10.2.2:8081']);
    await lab.redirect({ dport: 8081, toPort: 15001, family: 4 });
    accessLog = path.join(fs.mkdtempSync(path.join(lab.tmpDir(), 'access-')), 'access.log');
    sg = await Splicegate.start(lab, {
      workers: WORKERS,
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      extra: { access_log: { path: accessLog, format: 'json', sample: 1 } },
    });
  });

  after(() => disposeLab(sg, lab));

  it(`with ${HELD} idle relayed connections each loop thread wakes at most ${MAX_WAKEUPS_PER_SECOND} times a second, and the connections still end cleanly`, { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const pid = started(sg).proc.pid;
      const hold = new HoldClient(lab, { target: '10.10.2.2:8081', n: HELD });
      const held = await hold.waitHeld(15000);
      assert.equal(held.ok, HELD, JSON.stringify(held));
      const before = loopThreadSwitches(pid);
      assert.equal(before.size, WORKERS, `one thread named splicegate-loop per worker, found ${before.size}`);
      const started_ = Date.now();
      await new Promise((resolve) => setTimeout(resolve, WINDOW_MS));
      const seconds = (Date.now() - started_) / 1000;
      const afterwards = loopThreadSwitches(pid);
      for (const [tid, count] of before) {
        const perSecond = ((afterwards.get(tid) ?? NaN) - count) / seconds;
        assert.ok(perSecond <= MAX_WAKEUPS_PER_SECOND, `loop thread ${tid} woke ${perSecond.toFixed(1)} times a second at rest`);
      }
      const released = await hold.release(10000);
      assert.equal(released.droppedWhileHeld, 0, JSON.stringify(released));
      assert.equal(released.closed, HELD, JSON.stringify(released));
      const lines = await waitFor(
        () => {
          const text = fs.existsSync(accessLog) ? fs.readFileSync(accessLog, 'utf8') : '';
          const n = text.split('\n').filter((l) => l.length > 0);
          return n.length >= HELD ? n : undefined;
        },
        { timeoutMs: 10000, what: `${HELD} access-log lines` },
      );
      assert.equal(lines.length, HELD, 'one line per held connection, after they closed');
    }),
  );
});
