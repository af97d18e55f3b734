// Graceful shutdown: SIGTERM stops accepting, in-flight transfers finish, then exit 0.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { finishTransfer, HoldClient, probe, startTransfer } from '../lab/clients';
import { withDiagnostics } from '../lab/harness';
import { parseJsonObject, waitFor } from '../lab/util';

const MiB = 1024 * 1024;

describe('drain', () => {
  const labs: Lab[] = [];
  const sgs: Splicegate[] = [];

  after(async () => {
    for (const s of sgs) await s.dispose();
    for (const l of labs) await l.destroy();
  });

  it('SIGTERM during a large transfer: /ready answers 503 draining, it completes byte-identical, new connections are not relayed, exit 0', { timeout: 90000 }, async () => {
    const lab = await Lab.create({ name: 'drain' });
    labs.push(lab);
    const bulk = await lab.startServer('sink-source', ['--listen', '10.10.2.2:8080']);
    const ident = await lab.startServer('identity', ['--listen', '10.10.2.2:8081', '--id', 'late']);
    await lab.redirect({ dport: [8080, 8081], toPort: 15001, family: 4 });
    const sg = await Splicegate.start(lab, { listeners: [{ name: 'egress', address: '0.0.0.0:15001' }], drain_timeout: '30s' });
    sgs.push(sg);
    await withDiagnostics(lab, sg, async () => {
      const N = 64 * MiB;
      // Paced at 8 MiB/s, so the upload takes ~8 s: surely in flight at SIGTERM, and still in flight
      // while the checks below (each an admin request from a new process, slow on a loaded machine) run.
      const xfer = startTransfer(lab, { target: '10.10.2.2:8080', send: N, recv: N, rateBytesPerSec: 8 * MiB, timeoutMs: 60000 });
      await xfer.waitForLine((l) => {
        const o = parseJsonObject(l);
        return o?.['event'] === 'progress' && typeof o['sent'] === 'number' && o['sent'] >= 8 * MiB;
      }, 20000, 'transfer in flight (>= 8 MiB sent)');

      const tTerm = Date.now();
      sg.proc.signal('SIGTERM');
      // Synchronise on the drain having begun (not a sleep): /ready turns 503 "draining", which is
      // what takes the proxy out of a load balancer while the transfer finishes.
      const draining = await waitFor(
        async () => {
          const r = await sg.adminGet('/ready');
          return r.status === 503 ? r : undefined;
        },
        { timeoutMs: 10000, intervalMs: 50, what: '/ready 503 after SIGTERM' },
      );
      assert.equal(draining.body, 'draining\n');
      // ...and on every worker having closed its listeners, before the late connection below.
      await sg.waitStats((st) => st.raw['listeners_active'] === 0, 10000, 'listeners_active == 0');
      assert.equal(sg.proc.running, true, 'splicegate must not exit while a transfer is active');

      // A new connection after SIGTERM must not be relayed (refused, or accepted-and-dropped).
      const late = await probe(lab, { target: '10.10.2.2:8081', send: 'hi\\n', waitMs: 1500 });
      assert.equal(late.bytes, 0, `late connection was relayed: ${JSON.stringify(late)}`);
      assert.equal(ident.proc.eventsNamed('conn').length, 0, 'server saw no connection after SIGTERM');

      const r = await finishTransfer(xfer, 60000);
      const tDone = Date.now();
      assert.equal(r.ok, true, `transfer: ${JSON.stringify(r)}`);
      const [done] = await bulk.proc.waitForEvents((e) => e['event'] === 'done' || e['event'] === 'error', 1, 5000, 'server report');
      assert.ok(done);
      assert.equal(done['event'], 'done', JSON.stringify(done));
      assert.equal(done['remote'] !== undefined && String(done['remote']).startsWith(`${ADDR.gwSrv4}:`), true);
      assert.equal(done['recvSha256'], r.sentSha256);
      assert.equal(done['sentSha256'], r.recvSha256);
      assert.equal(r.recvBytes, N);

      const exit = await sg.proc.waitExit(40000);
      assert.ok(exit, 'splicegate exited after draining');
      assert.deepEqual(exit, { code: 0, signal: null });
      const tExit = Date.now();
      assert.ok(tExit - tTerm >= 1000, 'exit came after the transfer, not right at SIGTERM');
      // drain_timeout is 30 s: with nothing left to drain it should not wait for all of it.
      assert.ok(tExit - tDone < 10000, `exited ${tExit - tDone} ms after the last connection finished (drain_timeout 30 s)`);
    });
  });

  it('an idle connection still open at drain_timeout is closed and the process exits 0', { timeout: 60000 }, async () => {
    const lab = await Lab.create({ name: 'draintmo' });
    labs.push(lab);
    await lab.startServer('hold', ['--listen', '10.10.2.2:8080']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    const sg = await Splicegate.start(lab, { listeners: [{ name: 'egress', address: '0.0.0.0:15001' }], drain_timeout: '2s' });
    sgs.push(sg);
    await withDiagnostics(lab, sg, async () => {
      const client = new HoldClient(lab, { target: '10.10.2.2:8080', n: 3 });
      const held = await client.waitHeld(15000);
      assert.equal(held.stillOpen, 3);
      const t0 = Date.now();
      sg.proc.signal('SIGTERM');
      const exit = await sg.proc.waitExit(15000);
      const ms = Date.now() - t0;
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(ms >= 1500, `exited after ${ms} ms, before drain_timeout (2 s) with connections open`);
      assert.ok(ms < 8000, `exited after ${ms} ms`);
      const rel = await client.release(10000);
      assert.equal(rel.droppedWhileHeld, 3, 'the held connections were closed by the drain timeout');
      // Cut off, not finished: a reset, so the client cannot take the cut for the stream's end.
      assert.equal(rel.droppedByReset, 3, JSON.stringify(rel));
    });
  });
});
