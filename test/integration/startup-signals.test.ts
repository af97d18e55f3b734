// Signals while `splicegate run` starts: SIGHUP's default action ends a process and SIGUSR1's opens
// the inspector, so until the first config generation served, `systemctl reload` right after
// `systemctl start` (Type=exec: started as soon as exec'd) killed splicegate. Both are handled from
// the start; a SIGHUP then is applied once the first generation serves. "The start" is as soon as
// the program's first module runs, before the rest of it loads: only Node's own bootstrap is left.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { withDiagnostics } from '../lab/harness';
import { logIndex, waitForLog } from '../lab/listen-sockets';

/** The SIGHUP was held (its line logged) and applied after: both lines present, in that order. */
function assertHeldThenApplied(sg: Splicegate): void {
  const heldAt = logIndex(sg, /SIGHUP during start-up: the config is re-read once ready/);
  const appliedAt = logIndex(sg, /config reloaded trigger=SIGHUP/);
  assert.ok(heldAt >= 0, `no "SIGHUP during start-up" line: the SIGHUP was not held\n${sg.stderr}`);
  assert.ok(appliedAt > heldAt, `the reload (line ${appliedAt}) must follow the held SIGHUP (line ${heldAt})`);
}

describe('signals during start-up', () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.create({ name: 'startsig' });
  });

  after(async () => {
    await lab?.destroy();
  });

  it('SIGHUP and SIGUSR1 before ready neither stop the process nor get lost: the SIGHUP reloads once ready', { timeout: 60000 }, async () => {
    const sg = await Splicegate.start(lab, {
      // Many workers: their start (a thread and the addon each) leaves a wide window after "starting".
      workers: 32,
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      beforeReady: async (s) => {
        await waitForLog(s, / info starting /, 20000);
        s.proc.signal('SIGUSR1');
        s.proc.signal('SIGHUP');
      },
    });
    try {
      await withDiagnostics(lab, sg, async () => {
        await waitForLog(sg, /SIGHUP during start-up: the config is re-read once ready/, 20000);
        await waitForLog(sg, /config reloaded trigger=SIGHUP config_generation=2 previous_generation=1 /, 30000);
        // Held, not applied early: the reload follows the first generation's start.
        assertHeldThenApplied(sg);
        assert.ok(logIndex(sg, /SIGUSR1 during start-up|SIGUSR1: no access log to reopen/) >= 0, 'SIGUSR1 handled');
        assert.ok(sg.proc.running, 'still running');
        await sg.waitReady(10000);
      });
    } finally {
      await sg.dispose();
    }
  });

  it('while the program loads, before runProxy: SIGHUP is held, SIGUSR1 opens no inspector', { timeout: 60000 }, async () => {
    const sg = await Splicegate.start(lab, {
      workers: 2,
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      // The hook holds the start between the config load and loading the proxy (a slow host).
      env: { SPLICEGATE_TEST_HOOKS: '1', SPLICEGATE_TEST_SLOW_START_MS: '1500' },
      readyTimeoutMs: 20000,
      beforeReady: async (s) => {
        await waitForLog(s, /test hook: start held/, 20000);
        s.proc.signal('SIGUSR1');
        s.proc.signal('SIGHUP');
      },
    });
    try {
      await withDiagnostics(lab, sg, async () => {
        await waitForLog(sg, /config reloaded trigger=SIGHUP config_generation=2 previous_generation=1 /, 30000);
        assertHeldThenApplied(sg);
        assert.ok(logIndex(sg, /SIGUSR1 during start-up|SIGUSR1: no access log to reopen/) >= 0, 'SIGUSR1 handled');
        assert.equal(logIndex(sg, /Debugger listening/), -1, 'no inspector opened');
        assert.ok(sg.proc.running, 'still running');
      });
    } finally {
      await sg.dispose();
    }
  });
});
