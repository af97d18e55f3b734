// splicegate beside the applications on one host (the sidecar topology): the nat OUTPUT chain
// redirects local connects to it. Without an exclusion its own upstream connects are redirected
// back to it with the same original destination; that loop must be refused at once, bounded and
// counted. With the seed article's setup (one user's traffic redirected, the proxy's marked
// upstream traffic excluded) that user's connects go through splicegate and nobody else's do.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { delta, withDiagnostics } from '../lab/harness';
import { excludeMarkFromOutput, fdCount, probeFromGateway, redirectOutput } from '../lab/same-host';
import { parseJsonObject, waitFor } from '../lab/util';

/** At most this many looped connections per client connection: "a handful", never a storm. */
const MAX_LOOPED = 4;
const NOBODY = 65534;

describe('sidecar loop: OUTPUT REDIRECT with no exclusion', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let looped: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'sideloop' });
    looped = await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'L']);
    await lab.startServer('identity', ['--listen', '10.10.2.2:8081', '--id', 'O']);
    sg = await Splicegate.start(lab, { workers: 2, listeners: [{ name: 'egress', address: '0.0.0.0:15001' }] });
    // Every local connect to port 8080 goes to splicegate, its own included: the mistake.
    await redirectOutput(lab, { dport: 8080, toPort: 15001 });
    // Other traffic: clients on the client side, port 8081, redirected on the way through.
    await lab.redirect({ dport: 8081, toPort: 15001, family: 4 });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('the looped upstream connect is refused at once, counted, and the client is reset', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const fdBaseline = fdCount(sg.proc.pid);
      const s0 = await sg.stats();
      const p = await probeFromGateway(lab, { target: '10.10.2.2:8080', send: 'hello\\n', waitMs: 5000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 2000, `closed after ${p.closedAfterMs} ms`);
      assert.equal(p.bytes, 0);
      const s1 = await sg.waitStats(
        (s) => delta(s, s0, 'loop_rejected') >= 1 && s.downstream_cx_active === 0 && s.upstream_cx_active === 0,
        5000,
        'loop_rejected += 1 and everything closed',
      );
      const rejected = delta(s1, s0, 'loop_rejected');
      assert.ok(rejected <= MAX_LOOPED, `${rejected} looped connections refused`);
      // The client's connection plus the looped ones, and one upstream connect per relayed one.
      assert.ok(delta(s1, s0, 'downstream_cx_total') <= 1 + MAX_LOOPED, JSON.stringify(Splicegate.brief(s1)));
      assert.equal(delta(s1, s0, 'downstream_cx_total'), delta(s1, s0, 'upstream_cx_total') + rejected);
      assert.equal(looped.proc.eventsNamed('conn').length, 0, 'nothing reached the server');
      // Every fd the loop took is given back.
      await waitFor(() => (fdCount(sg!.proc.pid) <= fdBaseline ? true : undefined), {
        timeoutMs: 5000,
        what: `splicegate's fds back to ${fdBaseline} (now ${fdCount(sg.proc.pid)})`,
      });
    }),
  );

  it('afterwards the proxy still relays other traffic', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const r = await connectMany(lab, { target: '10.10.2.2:8081', n: 20, expectId: 'O' });
      assert.equal(r.ok, 20, JSON.stringify(r));
      assert.deepEqual(r.remotes, { [ADDR.gwSrv4]: 20 });
    }),
  );
});

describe('sidecar loop with preconnect: warm sockets are ours too', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let looped: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'sidewarm' });
    looped = await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'L']);
    sg = await Splicegate.start(lab, {
      // One worker: every looped connection meets the worker that opened its socket, so the counts
      // below are exact (with more, one may be accepted elsewhere before its socket is recorded).
      workers: 1,
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      // ttl: longer than the test, so each warm socket counted below ends by the loop refusal.
      cluster: { preconnect: { ports: [8080], per_host: 1, ttl: '60s' } },
    });
    await redirectOutput(lab, { dport: 8080, toPort: 15001 });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('the warm socket opened for the next client comes back, is refused as a loop and dropped: no chain', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probeFromGateway(lab, { target: '10.10.2.2:8080', send: 'hello\\n', waitMs: 5000 });
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      assert.equal(p.bytes, 0);
      const raw = (s: typeof s0, name: string): number => Number((s.raw as Record<string, unknown>)[name]);
      // The client's upstream connect and the warm one both loop; each is refused, and the warm
      // socket, reset by that refusal, leaves the pool. Unregistered, the warm socket's looped
      // connection would be relayed and open the next warm socket, and so on.
      const s1 = await sg.waitStats(
        (s) =>
          delta(s, s0, 'loop_rejected') >= 2 &&
          raw(s, 'upstream_cx_preconnect_dropped') - raw(s0, 'upstream_cx_preconnect_dropped') >= 1 &&
          s.downstream_cx_active === 0 &&
          s.upstream_cx_active === 0,
        5000,
        'both loops refused, the warm socket dropped, everything closed',
      );
      // Exactly: the probe's connection, and its two looped connections, both refused. A looped warm
      // connection that was relayed would show as a fourth accept with an upstream connect of its own.
      assert.equal(delta(s1, s0, 'loop_rejected'), 2, JSON.stringify(s1.raw));
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 3, JSON.stringify(s1.raw));
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 2, JSON.stringify(s1.raw)); // the probe's connect and one warm socket
      assert.equal(raw(s1, 'upstream_cx_preconnect') - raw(s0, 'upstream_cx_preconnect'), 1);
      assert.equal(raw(s1, 'upstream_cx_preconnect_dropped') - raw(s0, 'upstream_cx_preconnect_dropped'), 1);
      assert.equal(raw(s1, 'upstream_cx_preconnect_used') - raw(s0, 'upstream_cx_preconnect_used'), 0, 'a looped warm socket was handed out');
      assert.equal(looped.proc.eventsNamed('conn').length, 0, 'nothing reached the server');
    }),
  );
});

describe("sidecar: one user's connects through splicegate, its marked upstream excluded", () => {
  const MARK = 0x100;
  let lab: Lab;
  let sg: Splicegate | undefined;
  let server: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'sidecar' });
    server = await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'S']);
    sg = await Splicegate.start(lab, {
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { upstream_mark: MARK },
    });
    await excludeMarkFromOutput(lab, MARK);
    await redirectOutput(lab, { dport: 8080, toPort: 15001, uid: NOBODY });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it("that user's connect reaches the server through splicegate, with no loop", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      // The identity server keeps the connection open after its line: the probe ends it there.
      const p = await probeFromGateway(lab, { target: '10.10.2.2:8080', uid: NOBODY, untilLine: true });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'line', JSON.stringify(p));
      assert.equal(parseJsonObject(p.firstLine ?? '')?.['id'], 'S', JSON.stringify(p));
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_total') >= 1, 3000, 'relayed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 1);
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
      assert.equal(delta(s1, s0, 'no_original_dst'), 0);
      await server.proc.waitForEvents((e) => e['event'] === 'conn', 1, 3000, 'server conn');
    }),
  );

  it('other users go direct', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const before = server.proc.eventsNamed('conn').length;
      const p = await probeFromGateway(lab, { target: '10.10.2.2:8080', untilLine: true });
      assert.equal(p.closeKind, 'line', JSON.stringify(p));
      assert.equal(parseJsonObject(p.firstLine ?? '')?.['id'], 'S', JSON.stringify(p));
      await server.proc.waitForEvents((e) => e['event'] === 'conn', before + 1, 3000, 'server conn');
      const s1 = await sg.stats();
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 0, 'not through splicegate');
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0);
    }),
  );
});
