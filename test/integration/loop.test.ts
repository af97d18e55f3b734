// Connections that must not be relayed: no original destination, and loops back to splicegate.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { connectMany, probe } from '../lab/clients';
import { delta, withDiagnostics } from '../lab/harness';

describe('no original destination / loops', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let srv: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'loop' });
    srv = await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'S']);
    // Only the server's port is redirected, so a direct dial of the listener is not.
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, { listeners: [{ name: 'egress', address: '0.0.0.0:15001' }] });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('a direct (not redirected) connection to the listener is closed and counted in no_original_dst', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: `${ADDR.gwCli4}:15001`, send: 'hello\\n', waitMs: 5000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', `not reset within 5 s: ${JSON.stringify(p)}`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 1000, `closed after ${p.closedAfterMs} ms`);
      assert.equal(p.bytes, 0, 'nothing relayed back');
      const s1 = await sg.waitStats((s) => delta(s, s0, 'no_original_dst') >= 1, 3000, 'no_original_dst += 1');
      assert.equal(delta(s1, s0, 'no_original_dst'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0, 'no upstream connection');
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
    }),
  );

  it('a redirected connection whose original destination is the listener itself is rejected as a loop', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      // The gateway's other address on the listener port: REDIRECT sends it to the listener,
      // and the original destination (10.10.2.1:15001) is splicegate's own listener.
      await lab.redirect({ daddr: ADDR.gwSrv4, dport: 15001, toPort: 15001, family: 4 });
      const s0 = await sg.stats();
      const p = await probe(lab, { target: `${ADDR.gwSrv4}:15001`, send: 'hello\\n', waitMs: 5000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', `not reset within 5 s: ${JSON.stringify(p)}`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 1000, `closed after ${p.closedAfterMs} ms`);
      assert.equal(p.bytes, 0, 'nothing relayed back');
      const s1 = await sg.waitStats((s) => delta(s, s0, 'loop_rejected') >= 1, 3000, 'loop_rejected += 1');
      assert.equal(delta(s1, s0, 'loop_rejected'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0, 'no upstream connection');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 1, 'only the probe was accepted (no self-connection)');
    }),
  );

  it('neither was relayed to the server, while a normal redirected connection is', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      assert.equal(srv.proc.eventsNamed('conn').length, 0, 'server saw no connection from the rejected probes');
      const r = await connectMany(lab, { target: '10.10.2.2:8080', n: 1, expectId: 'S', expectLocal: '10.10.2.2:8080' });
      assert.equal(r.ok, 1, JSON.stringify(r));
      assert.deepEqual(r.remotes, { [ADDR.gwSrv4]: 1 });
      await srv.proc.waitForEvents((e) => e['event'] === 'conn', 1, 3000, 'server conn');
      assert.equal(srv.proc.eventsNamed('conn').length, 1);
    }),
  );
});
