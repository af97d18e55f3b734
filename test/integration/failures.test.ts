// Upstream connect failures: refused and timed out.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { probe } from '../lab/clients';
import { delta, withDiagnostics } from '../lab/harness';

describe('upstream failures', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'failures' });
    // 7777: nothing listens (RST). 7778: the server drops SYNs.
    await lab.iptables('srv', 4, ['-A', 'INPUT', '-p', 'tcp', '--dport', '7778', '-j', 'DROP']);
    await lab.redirect({ dport: [7777, 7778], toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, {
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { connect_timeout: '1s' },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('refused upstream: the client is reset promptly and upstream_cx_connect_fail counts it', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: '10.10.2.2:7777', send: 'hello\\n', waitMs: 5000 });
      assert.equal(p.connected, true, `the listener accepts the redirected connection: ${JSON.stringify(p)}`);
      assert.equal(p.closeKind, 'reset', `client was not reset within 5 s: ${JSON.stringify(p)}`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 2000, `closed after ${p.closedAfterMs} ms`);
      assert.equal(p.bytes, 0);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_connect_fail') >= 1, 3000, 'upstream_cx_connect_fail += 1');
      assert.equal(delta(s1, s0, 'upstream_cx_connect_fail'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_connect_timeout'), 0);
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 1);
    }),
  );

  it('SYNs dropped: the client is reset after connect_timeout (1 s) and it is counted', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: '10.10.2.2:7778', send: 'hello\\n', waitMs: 8000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', `client was not reset within 8 s: ${JSON.stringify(p)}`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs >= 900, `closed too early: ${p.closedAfterMs} ms`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 4000, `closed too late: ${p.closedAfterMs} ms`);
      assert.equal(p.bytes, 0);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_connect_timeout') >= 1, 3000, 'upstream_cx_connect_timeout += 1');
      assert.equal(delta(s1, s0, 'upstream_cx_connect_timeout'), 1);
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 1);
      assert.equal(s1.downstream_cx_active, 0);
    }),
  );
});
