// Bulk data integrity (full duplex) and half-close through splicegate.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { halfClose, transfer } from '../lab/clients';
import { delta, ipOf, withDiagnostics } from '../lab/harness';

const MiB = 1024 * 1024;

describe('transfer', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let bulk: ServerHandle;
  let hc: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'transfer' });
    bulk = await lab.startServer('sink-source', ['--listen', '10.10.2.2:8080']);
    hc = await lab.startServer('half-close', ['--listen', '10.10.2.2:8081', '--reply-bytes', String(4 * MiB)]);
    await lab.redirect({ dport: [8080, 8081], toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, { listeners: [{ name: 'egress', address: '0.0.0.0:15001' }] });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('256 MiB each way at the same time arrives byte-identical', { timeout: 150000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const N = 256 * MiB;
      const r = await transfer(lab, { target: '10.10.2.2:8080', send: N, recv: N, timeoutMs: 120000 });
      assert.equal(r.ok, true, `client: ${JSON.stringify(r)}`);
      assert.equal(r.sentBytes, N);
      assert.equal(r.recvBytes, N);
      const [done] = await bulk.proc.waitForEvents((e) => e['event'] === 'done' || e['event'] === 'error', 1, 10000, 'server report');
      assert.ok(done);
      assert.equal(done['event'], 'done', JSON.stringify(done));
      assert.equal(ipOf(String(done['remote'])), ADDR.gwSrv4, 'relayed via the gateway');
      assert.equal(done['recvBytes'], N);
      assert.equal(done['recvSha256'], r.sentSha256, 'client->server bytes identical');
      assert.equal(done['sentBytes'], N);
      assert.equal(done['sentSha256'], r.recvSha256, 'server->client bytes identical');
      const s1 = await sg.waitStats((s) => s.downstream_cx_active === 0, 5000, 'connection closed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 1);
      // Exact: from the client its 16-byte header and N bytes; to the client N bytes.
      assert.equal(delta(s1, s0, 'bytes_received'), N + 16, 'bytes_received (from the client)');
      assert.equal(delta(s1, s0, 'bytes_sent'), N, 'bytes_sent (to the client)');
    }),
  );

  it('half-close: the server answers after EOF and the client gets the whole answer', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const SEND = 8 * MiB;
      const h = await halfClose(lab, { target: '10.10.2.2:8081', send: SEND });
      assert.equal(h.ok, true, `half-close: ${JSON.stringify(h)}`);
      assert.equal(h.server?.bytes, SEND);
      assert.equal(h.server?.sha256, h.sentSha256);
      assert.equal(h.replyBytes, 4 * MiB);
      assert.equal(h.replySha256, h.server?.replySha256);
      const [done] = await hc.proc.waitForEvents((e) => e['event'] === 'done', 1, 5000, 'half-close server report');
      assert.ok(done);
      assert.equal(ipOf(String(done['remote'])), ADDR.gwSrv4, 'relayed via the gateway');
      assert.equal(done['bytes'], SEND);
    }),
  );
});
