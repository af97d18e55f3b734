// Supervision: a worker thread that dies is restarted, and the other workers keep serving.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { withDiagnostics } from '../lab/harness';

describe('worker supervision', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'workers' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'A']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, {
      workers: 2,
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      env: { SPLICEGATE_TEST_HOOKS: '1' },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('a crashed worker is restarted while the other keeps serving', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const crash = await sg.adminPost('/debug/crash-worker?id=0');
      assert.equal(crash.status, 202, `${crash.status} ${crash.body}`);
      // While worker 0 is down the other one still accepts: every connection is served.
      const during = await connectMany(lab, { target: '10.10.2.2:8080', n: 50, expectId: 'A' });
      assert.equal(during.ok, 50, JSON.stringify(during.errors));
      await sg.waitReady(10000);
      assert.match(sg.proc.stderr, /worker died; restarting.*worker=0/);
      assert.match(sg.proc.stderr, /worker listening worker=0 generation=1/);
      const afterRestart = await connectMany(lab, { target: '10.10.2.2:8080', n: 50, expectId: 'A' });
      assert.equal(afterRestart.ok, 50, JSON.stringify(afterRestart.errors));
    }),
  );
});
