// TPROXY with a transparent listener: the original destination is the accepted socket's local
// address.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { connEvents, delta, ipOf, withDiagnostics } from '../lab/harness';

describe('TPROXY (transparent listener)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let a: ServerHandle;
  let b: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'tproxy' });
    await lab.addServerAddress('10.10.2.3');
    a = await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'A']);
    b = await lab.startServer('identity', ['--listen', '10.10.2.3:9090', '--id', 'B']);
    await lab.tproxy({ dport: [8080, 9090], onPort: 15002, mark: 1, family: 4 });
    // Nothing from the client may be plainly forwarded: only the proxy can reach the servers.
    await lab.iptables('gw', 4, ['-A', 'FORWARD', '-i', 'cli0', '-p', 'tcp', '-j', 'DROP']);
    sg = await Splicegate.start(lab, { listeners: [{ name: 'tproxy', address: '0.0.0.0:15002', transparent: true }] });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('relays to the address the client dialled', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const N = 20;
      const [ra, rb] = await Promise.all([
        connectMany(lab, { target: '10.10.2.2:8080', n: N, expectId: 'A', expectLocal: '10.10.2.2:8080' }),
        connectMany(lab, { target: '10.10.2.3:9090', n: N, expectId: 'B', expectLocal: '10.10.2.3:9090' }),
      ]);
      assert.equal(ra.ok, N, JSON.stringify(ra));
      assert.equal(rb.ok, N, JSON.stringify(rb));
      assert.deepEqual(ra.remotes, { [ADDR.gwSrv4]: N });
      assert.deepEqual(rb.remotes, { [ADDR.gwSrv4]: N });
      await a.proc.waitForEvents((e) => e['event'] === 'conn', N, 5000, 'A connections');
      await b.proc.waitForEvents((e) => e['event'] === 'conn', N, 5000, 'B connections');
      for (const e of connEvents(a.proc)) assert.equal(e.local, '10.10.2.2:8080');
      for (const e of connEvents(b.proc)) {
        assert.equal(e.local, '10.10.2.3:9090');
        assert.equal(ipOf(e.remote), ADDR.gwSrv4);
      }
      const s1 = await sg.waitStats((s) => s.downstream_cx_active === 0, 5000, 'connections closed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 2 * N);
      assert.equal(delta(s1, s0, 'no_original_dst'), 0);
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
    }),
  );
});

describe('TPROXY over IPv6 (transparent [::] listener)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let a: ServerHandle;
  let b: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'tproxy6' });
    await lab.addServerAddress('fd00:2::3');
    a = await lab.startServer('identity', ['--listen', '[fd00:2::2]:8080', '--id', 'A6']);
    b = await lab.startServer('identity', ['--listen', '[fd00:2::3]:9090', '--id', 'B6']);
    await lab.tproxy({ dport: [8080, 9090], onPort: 15003, mark: 1, family: 6 });
    await lab.iptables('gw', 6, ['-A', 'FORWARD', '-i', 'cli0', '-p', 'tcp', '-j', 'DROP']);
    sg = await Splicegate.start(lab, { listeners: [{ name: 'tproxy6', address: '[::]:15003', transparent: true }] });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('relays to the IPv6 address and port the client dialled', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const N = 10;
      const [ra, rb] = await Promise.all([
        connectMany(lab, { target: '[fd00:2::2]:8080', n: N, expectId: 'A6', expectLocal: '[fd00:2::2]:8080' }),
        connectMany(lab, { target: '[fd00:2::3]:9090', n: N, expectId: 'B6', expectLocal: '[fd00:2::3]:9090' }),
      ]);
      assert.equal(ra.ok, N, JSON.stringify(ra));
      assert.equal(rb.ok, N, JSON.stringify(rb));
      const gw6 = `[${ADDR.gwSrv6}]`;
      // The servers see the gateway (the proxy's upstream socket), so the plain forward path is shut.
      assert.deepEqual(ra.remotes, { [gw6]: N });
      assert.deepEqual(rb.remotes, { [gw6]: N });
      await a.proc.waitForEvents((e) => e['event'] === 'conn', N, 5000, 'A6 connections');
      await b.proc.waitForEvents((e) => e['event'] === 'conn', N, 5000, 'B6 connections');
      for (const e of connEvents(a.proc)) assert.equal(e.local, '[fd00:2::2]:8080');
      for (const e of connEvents(b.proc)) {
        assert.equal(e.local, '[fd00:2::3]:9090');
        assert.equal(ipOf(e.remote), gw6);
      }
      const s1 = await sg.waitStats((s) => s.downstream_cx_active === 0, 5000, 'connections closed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 2 * N);
      assert.equal(delta(s1, s0, 'no_original_dst'), 0);
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
    }),
  );
});
