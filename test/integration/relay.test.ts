// One original_dst listener relays each redirected client to the server it dialled.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { connEvents, delta, ipOf, withDiagnostics } from '../lab/harness';

describe('relay (REDIRECT, IPv4)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let a: ServerHandle;
  let b: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'relay' });
    await lab.addServerAddress('10.10.2.3');
    a = await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'A']);
    b = await lab.startServer('identity', ['--listen', '10.10.2.3:9090', '--id', 'B']);
    await lab.redirect({ dport: [8080, 9090], toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, { listeners: [{ name: 'egress', address: '0.0.0.0:15001' }] });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('relays clients to two servers on different IPs and ports', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const N = 50;
      const [ra, rb] = await Promise.all([
        connectMany(lab, { target: '10.10.2.2:8080', n: N, concurrency: 25, expectId: 'A', expectLocal: '10.10.2.2:8080' }),
        connectMany(lab, { target: '10.10.2.3:9090', n: N, concurrency: 25, expectId: 'B', expectLocal: '10.10.2.3:9090' }),
      ]);
      assert.equal(ra.ok, N, `clients of A: ${JSON.stringify(ra)}`);
      assert.equal(rb.ok, N, `clients of B: ${JSON.stringify(rb)}`);
      // Relayed, not forwarded: each server saw the gateway as its peer.
      assert.deepEqual(ra.remotes, { [ADDR.gwSrv4]: N });
      assert.deepEqual(rb.remotes, { [ADDR.gwSrv4]: N });

      const ea = await a.proc.waitForEvents((e) => e['event'] === 'conn', N, 5000, 'A connections');
      const eb = await b.proc.waitForEvents((e) => e['event'] === 'conn', N, 5000, 'B connections');
      assert.equal(ea.length, N);
      assert.equal(eb.length, N);
      for (const e of connEvents(a.proc)) {
        assert.equal(e.local, '10.10.2.2:8080');
        assert.equal(ipOf(e.remote), ADDR.gwSrv4);
      }
      for (const e of connEvents(b.proc)) {
        assert.equal(e.local, '10.10.2.3:9090');
        assert.equal(ipOf(e.remote), ADDR.gwSrv4);
      }

      const s1 = await sg.waitStats((s) => s.downstream_cx_active === 0 && s.upstream_cx_active === 0, 5000, 'all connections closed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 2 * N);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 2 * N);
      assert.equal(delta(s1, s0, 'upstream_cx_connect_fail'), 0);
      assert.equal(delta(s1, s0, 'no_original_dst'), 0);
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
      // Exact byte counts: each server read what clients sent (and echoed it) and wrote its identity
      // line before the echo, so bytes from clients = echoed, bytes to clients = echoed + lines.
      const closes = [
        ...(await a.proc.waitForEvents((e) => e['event'] === 'close', N, 5000, 'A closes')),
        ...(await b.proc.waitForEvents((e) => e['event'] === 'close', N, 5000, 'B closes')),
      ];
      const echoed = closes.reduce((sum, e) => sum + Number(e['echoed']), 0);
      const lines = [...connEvents(a.proc), ...connEvents(b.proc)].reduce(
        (sum, e) => sum + Buffer.byteLength(JSON.stringify({ id: e.id, local: e.local, remote: e.remote })) + 1,
        0,
      );
      assert.ok(echoed > 0);
      assert.equal(delta(s1, s0, 'bytes_received'), echoed, 'bytes_received = what the servers read');
      assert.equal(delta(s1, s0, 'bytes_sent'), echoed + lines, 'bytes_sent = identity lines + echo');
    }),
  );
});
