// cluster.preconnect: warm upstream sockets are handed out to the next client of a used host, and
// a warm socket the server has closed is never handed out.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('preconnect (warm upstream sockets)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'preconnect' });
    await lab.startServer('stamp', ['--listen', '10.10.2.2:7000']);
    await lab.startServer('stamp', ['--listen', '10.10.2.2:7001', '--idle-close-ms', '300']);
    await lab.redirect({ dport: [7000, 7001], toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, {
      workers: 1, // one worker: its warm pool serves every client
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { cleanup_interval: '30s', preconnect: { ports: [7000, 7001], per_host: 2, ttl: '10s' } },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('the next client of a used host gets a connection the server accepted before it connected', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const first = await stamp(lab, '10.10.2.2:7000');
      assert.ok(first.reply, `first client failed: ${first.error}`);
      await sleep(500); // the warm sockets connect meanwhile
      const second = await stamp(lab, '10.10.2.2:7000');
      assert.ok(second.reply, `second client failed: ${second.error}`);
      assert.ok(
        second.reply.acceptedAt < second.connectStartedAt - 200,
        `server accepted at ${second.reply.acceptedAt}, client connected at ${second.connectStartedAt}: not a warm socket`,
      );
      const stats = (await sg.stats()).raw as Record<string, number>;
      assert.ok(stats['upstream_cx_preconnect']! >= 2, JSON.stringify(stats));
      assert.ok(stats['upstream_cx_preconnect_used']! >= 1, JSON.stringify(stats));
    }),
  );

  it('a warm socket the server closed is dropped, and the next client still works', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const before = (await sg.stats()).raw as Record<string, number>;
      const first = await stamp(lab, '10.10.2.2:7001');
      assert.ok(first.reply, `first client failed: ${first.error}`);
      await sleep(1000); // the server closes idle connections after 300 ms: every warm one dies
      const after1 = (await sg.stats()).raw as Record<string, number>;
      assert.ok(after1['upstream_cx_preconnect_dropped']! - before['upstream_cx_preconnect_dropped']! >= 2, JSON.stringify(after1));
      const second = await stamp(lab, '10.10.2.2:7001');
      assert.ok(second.reply, `client after the warm sockets died failed: ${second.error}`);
      assert.ok(second.reply.acceptedAt >= second.connectStartedAt - 50, 'a fresh connection, not a dead warm one');
    }),
  );
});
