// cluster.preconnect: warm upstream sockets are handed out to the next client of a used host, and
// a warm socket the server has closed is never handed out.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, ServerHandle } from '../lab/lab';
import { Splicegate, Stats } from '../lab/splicegate';
import { withDiagnostics } from '../lab/harness';

interface StampResult {
  connectStartedAt: number;
  reply: { acceptedAt: number; n: number } | null;
  error?: string;
}

async function stamp(lab: Lab, target: string): Promise<StampResult> {
  const { result } = await lab.runClient('stamp-client', ['--target', target], { timeoutMs: 15000 });
  return result as unknown as StampResult;
}

/** A counter that is not among STAT_NAMES, from the raw /stats body. */
function raw(s: Stats, name: string): number {
  const v = (s.raw as Record<string, unknown>)[name];
  if (typeof v !== 'number') throw new Error(`stats lack ${name}: ${JSON.stringify(s.raw)}`);
  return v;
}

/** Connections the stamp server has accepted so far (its "conn" events). */
function accepted(server: ServerHandle): number {
  return server.proc.eventsNamed('conn').length;
}

describe('preconnect (warm upstream sockets)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let steady: ServerHandle;
  let idleClosing: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'preconnect' });
    steady = await lab.startServer('stamp', ['--listen', '10.10.2.2:7000']);
    idleClosing = await lab.startServer('stamp', ['--listen', '10.10.2.2:7001', '--idle-close-ms', '300']);
    await lab.redirect({ dport: [7000, 7001], toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, {
      workers: 1, // one worker: its warm pool serves every client
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { cleanup_interval: '30s', preconnect: { ports: [7000, 7001], per_host: 2, ttl: '60s' } },
      // ttl: longer than the whole file, so no warm socket expires and every drop counted is a server close.
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('the next client of a used host gets a connection the server accepted before it connected', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const first = await stamp(lab, '10.10.2.2:7000');
      assert.ok(first.reply, `first client failed: ${first.error}`);
      // The first client's own connection and the two warm ones, accepted by the server: their
      // handshakes are complete, so the pool holds two connected sockets.
      await steady.proc.waitForEvents((e) => e['event'] === 'conn', 3, 10000, 'the server accepting both warm sockets');
      const s1 = await sg.waitStats((s) => raw(s, 'upstream_cx_preconnect') - raw(s0, 'upstream_cx_preconnect') === 2, 5000, 'two warm sockets');
      const acceptedBefore = accepted(steady);
      assert.equal(acceptedBefore, 3);
      const second = await stamp(lab, '10.10.2.2:7000');
      assert.ok(second.reply, `second client failed: ${second.error}`);
      // Answered on a connection the server accepted before this client existed: a warm one.
      assert.notEqual(second.reply.n, first.reply.n);
      assert.ok(second.reply.n <= acceptedBefore, `server connection #${second.reply.n} was accepted after the client started: not a warm socket`);
      assert.ok(second.reply.acceptedAt <= second.connectStartedAt, `accepted at ${second.reply.acceptedAt}, client started at ${second.connectStartedAt}`);
      const s2 = await sg.stats();
      assert.equal(raw(s2, 'upstream_cx_preconnect_used') - raw(s1, 'upstream_cx_preconnect_used'), 1, JSON.stringify(s2.raw));
      // The pool tops up again for the next client.
      assert.equal(raw(s2, 'upstream_cx_preconnect') - raw(s0, 'upstream_cx_preconnect'), 3, JSON.stringify(s2.raw));
    }),
  );

  it('a warm socket the server closed is dropped, and the next client still works', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const first = await stamp(lab, '10.10.2.2:7001');
      assert.ok(first.reply, `first client failed: ${first.error}`);
      // The server closes idle connections after 300 ms: both warm ones die, and the pool sees it.
      const s1 = await sg.waitStats(
        (s) => raw(s, 'upstream_cx_preconnect_dropped') - raw(s0, 'upstream_cx_preconnect_dropped') === 2,
        10000,
        'both warm sockets dropped after the server closed them',
      );
      assert.equal(raw(s1, 'upstream_cx_preconnect') - raw(s0, 'upstream_cx_preconnect'), 2, JSON.stringify(s1.raw));
      const acceptedBefore = accepted(idleClosing);
      const second = await stamp(lab, '10.10.2.2:7001');
      assert.ok(second.reply, `client after the warm sockets died failed: ${second.error}`);
      assert.ok(second.reply.n > acceptedBefore, `answered on server connection #${second.reply.n}, one of the ${acceptedBefore} accepted before: a dead warm one`);
      const s2 = await sg.stats();
      assert.equal(raw(s2, 'upstream_cx_preconnect_used'), raw(s0, 'upstream_cx_preconnect_used'), 'no warm socket handed out');
    }),
  );
});
