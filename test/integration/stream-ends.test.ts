// How relayed streams end as the client sees them: every abnormal end (upstream reset, idle
// timeout, refused or unanswered upstream connect) arrives as a TCP reset, never as a clean EOF
// that a client could take for a complete (or complete but empty) answer.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, ServerHandle } from '../lab/lab';
import { Splicegate, Stats } from '../lab/splicegate';
import { probe } from '../lab/clients';
import { delta, withDiagnostics } from '../lab/harness';
import { parseJsonObject } from '../lab/util';

const CUT_BEFORE = 1 << 20;

/** A counter that is not among STAT_NAMES, from the raw /stats body. */
function raw(s: Stats, name: string): number {
  const v = (s.raw as Record<string, unknown>)[name];
  if (typeof v !== 'number') throw new Error(`stats lack ${name}: ${JSON.stringify(s.raw)}`);
  return v;
}

describe('abnormal ends reach the client as a reset', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let cut: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'streamend' });
    cut = await lab.startServer('cut', ['--listen', '10.10.2.2:8090', '--before', String(CUT_BEFORE)]);
    await lab.startServer('sink-source', ['--listen', '10.10.2.2:8091']);
    await lab.startServer('identity', ['--listen', '10.10.2.2:8092', '--id', 'I']);
    // 7777: nothing listens (the server's kernel answers RST). 7778: SYNs are dropped.
    await lab.iptables('srv', 4, ['-A', 'INPUT', '-p', 'tcp', '--dport', '7778', '-j', 'DROP']);
    await lab.redirect({ dport: [7777, 7778, 8090, 8091, 8092], toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, {
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { connect_timeout: '1s', idle_timeout: '1s' },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('upstream reset mid-stream: the client gets at most the bytes sent before the cut, then a reset', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: '10.10.2.2:8090', waitMs: 8000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', `the cut must not look like an end: ${JSON.stringify(p)}`);
      assert.ok(p.bytes <= CUT_BEFORE, `${p.bytes} bytes presented, only ${CUT_BEFORE} were sent before the cut`);
      await cut.proc.waitForEvents((e) => e['event'] === 'cut', 1, 3000, 'server cut');
      const s1 = await sg.waitStats((s) => s.downstream_cx_active === 0, 3000, 'connection closed');
      assert.ok(raw(s1, 'upstream_cx_destroy_remote') - raw(s0, 'upstream_cx_destroy_remote') === 1);
    }),
  );

  it('idle timeout mid-stream: a client that had not read everything gets a reset, not a clean EOF', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const recv = 64 << 20;
      const client = lab.startClient('stall', ['--target', '10.10.2.2:8091', '--recv', String(recv), '--pause-after', String(1 << 20)]);
      await client.waitForLine((l) => parseJsonObject(l)?.['event'] === 'paused', 15000, 'client paused');
      // Nothing moves now: the proxy gives up after idle_timeout (1 s, swept once a second).
      await sg.waitStats((s) => raw(s, 'cx_idle_timeout') - raw(s0, 'cx_idle_timeout') >= 1, 10000, 'cx_idle_timeout += 1');
      client.write('resume\n');
      const exit = await client.waitExit(30000);
      assert.ok(exit, 'stall client finished');
      const r = client.eventsNamed('result').pop();
      assert.ok(r, client.diagnostics());
      assert.equal(r['closeKind'], 'reset', `truncated stream presented as ${String(r['closeKind'])}: ${JSON.stringify(r)}`);
      assert.ok(typeof r['recvBytes'] === 'number' && r['recvBytes'] < recv, JSON.stringify(r));
    }),
  );

  it('client reset with bytes in flight: counted once, and the host\'s rx/tx bytes in /clusters move exactly as upstream_cx_rx/tx_bytes_total', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const proxy = sg;
      const HOST = '10.10.2.2:8091';
      const hostBytes = async (): Promise<{ rx: number; tx: number }> => {
        const body = parseJsonObject((await proxy.adminGet('/clusters?format=json')).body);
        const hosts = Array.isArray(body?.['hosts']) ? body['hosts'] : [];
        const host = hosts.find((h) => h !== null && typeof h === 'object' && !Array.isArray(h) && h['address'] === HOST);
        const stats = host !== undefined && host !== null && typeof host === 'object' && !Array.isArray(host) ? host['stats'] : undefined;
        if (stats === undefined || stats === null || typeof stats !== 'object' || Array.isArray(stats)) return { rx: 0, tx: 0 };  // not cached (yet, or any more)
        return { rx: Number(stats['rx_bytes']), tx: Number(stats['tx_bytes']) };
      };
      const s0 = await proxy.stats();
      const h0 = await hostBytes();
      // The client stops reading: the path backs up, and the proxy holds bytes it read from the
      // server but cannot deliver. Then it dies with unread data: its kernel resets.
      const client = lab.startClient('stall', ['--target', HOST, '--recv', String(64 << 20), '--pause-after', String(1 << 20)]);
      await client.waitForLine((l) => parseJsonObject(l)?.['event'] === 'paused', 15000, 'client paused');
      await proxy.waitStats(
        (s) => raw(s, 'upstream_cx_rx_bytes_total') - raw(s0, 'upstream_cx_rx_bytes_total') > delta(s, s0, 'bytes_sent'),
        5000,
        'bytes held in the proxy',
      );
      await client.stop('SIGKILL', 3000);
      const s1 = await proxy.waitStats((s) => s.downstream_cx_active === 0 && s.downstream_cx_total > s0.downstream_cx_total, 5000, 'connection closed');
      const h1 = await hostBytes();
      assert.equal(raw(s1, 'cx_close_downstream_error') - raw(s0, 'cx_close_downstream_error'), 1);
      assert.equal(raw(s1, 'downstream_cx_destroy_remote') - raw(s0, 'downstream_cx_destroy_remote'), 1);
      const rx = raw(s1, 'upstream_cx_rx_bytes_total') - raw(s0, 'upstream_cx_rx_bytes_total');
      const tx = raw(s1, 'upstream_cx_tx_bytes_total') - raw(s0, 'upstream_cx_tx_bytes_total');
      assert.ok(rx > delta(s1, s0, 'bytes_sent'), `some bytes read from the server never reached the client (read ${rx}, sent ${delta(s1, s0, 'bytes_sent')})`);
      assert.deepEqual({ rx: h1.rx - h0.rx, tx: h1.tx - h0.tx }, { rx, tx }, 'the host counts what the proxy-wide counters count');
    }),
  );

  it('idle timeout: a connection with no traffic is reset once idle_timeout has passed', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: '10.10.2.2:8092', waitMs: 8000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(parseJsonObject(p.firstLine ?? '')?.['id'], 'I', `relayed before going idle: ${JSON.stringify(p)}`);
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      // README: closed after idle_timeout with no bytes moved (swept once a second).
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs >= 900, `closed before idle_timeout: ${p.closedAfterMs} ms`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 5000, `not closed within 5 s: ${p.closedAfterMs} ms`);
      const s1 = await sg.waitStats((s) => raw(s, 'cx_idle_timeout') - raw(s0, 'cx_idle_timeout') >= 1, 3000, 'cx_idle_timeout += 1');
      assert.equal(raw(s1, 'cx_idle_timeout') - raw(s0, 'cx_idle_timeout'), 1);
    }),
  );

  it('refused upstream connect: the client gets a reset, not an empty clean response', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      // Sends nothing (a server-speaks-first protocol): bytes unread by the proxy would make its
      // kernel reset on close anyway and hide a FIN.
      const p = await probe(lab, { target: '10.10.2.2:7777', waitMs: 5000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      assert.equal(p.bytes, 0);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 2000, `closed after ${p.closedAfterMs} ms`);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_connect_fail') >= 1, 3000, 'upstream_cx_connect_fail += 1');
      assert.equal(delta(s1, s0, 'upstream_cx_connect_fail'), 1);
    }),
  );

  it('upstream connect timeout: the client gets a reset after connect_timeout', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: '10.10.2.2:7778', waitMs: 8000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      assert.equal(p.bytes, 0);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs >= 900, `closed before connect_timeout: ${p.closedAfterMs} ms`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 4000, `not closed within 4 s: ${p.closedAfterMs} ms`);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_connect_timeout') >= 1, 3000, 'upstream_cx_connect_timeout += 1');
      assert.equal(delta(s1, s0, 'upstream_cx_connect_timeout'), 1);
    }),
  );
});
