// IPv6 original destination via ip6tables REDIRECT to a [::] listener.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { connEvents, delta, ipOf, withDiagnostics } from '../lab/harness';

describe('IPv6 (ip6tables REDIRECT)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let a: ServerHandle;
  let b: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'ipv6' });
    await lab.addServerAddress('fd00:2::3');
    a = await lab.startServer('identity', ['--listen', '[fd00:2::2]:8080', '--id', 'A6']);
    b = await lab.startServer('identity', ['--listen', '[fd00:2::3]:9090', '--id', 'B6']);
    await lab.redirect({ dport: [8080, 9090], toPort: 15006, family: 6 });
    sg = await Splicegate.start(lab, { listeners: [{ name: 'egress6', address: '[::]:15006' }] });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('relays to the IPv6 address and port the client dialled', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const N = 20;
      const [ra, rb] = await Promise.all([
        connectMany(lab, { target: '[fd00:2::2]:8080', n: N, expectId: 'A6', expectLocal: '[fd00:2::2]:8080' }),
        connectMany(lab, { target: '[fd00:2::3]:9090', n: N, expectId: 'B6', expectLocal: '[fd00:2::3]:9090' }),
      ]);
      assert.equal(ra.ok, N, JSON.stringify(ra));
      assert.equal(rb.ok, N, JSON.stringify(rb));
      const gw6 = `[${ADDR.gwSrv6}]`;
      assert.deepEqual(ra.remotes, { [gw6]: N }, 'relayed via the gateway');
      assert.deepEqual(rb.remotes, { [gw6]: N }, 'relayed via the gateway');
      await a.proc.waitForEvents((e) => e['event'] === 'conn', N, 5000, 'A6 connections');
      await b.proc.waitForEvents((e) => e['event'] === 'conn', N, 5000, 'B6 connections');
      for (const e of connEvents(a.proc)) {
        assert.equal(e.local, '[fd00:2::2]:8080');
        assert.equal(ipOf(e.remote), gw6);
      }
      const s1 = await sg.waitStats((s) => s.downstream_cx_active === 0, 5000, 'connections closed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 2 * N);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 2 * N);
    }),
  );
});
