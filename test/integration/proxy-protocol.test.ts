// PROXY protocol in (listeners[].proxy_protocol) and out (cluster.send_proxy_protocol), and
// original source (cluster.original_source), in the namespace lab with real servers.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, IFACE, Lab, ServerHandle } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { probe } from '../lab/clients';
import { delta, ipOf, withDiagnostics } from '../lab/harness';
import { JsonObject, parseJsonObject } from '../lab/util';

/** A PROXY v2 header (PROXY command, TCP over IPv4) as hex, for probe's --send-hex. */
function v2Header(src: string, srcPort: number, dst: string, dstPort: number): string {
  const ip = (a: string): Buffer => Buffer.from(a.split('.').map(Number));
  const port = (p: number): Buffer => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(p);
    return b;
  };
  return Buffer.concat([
    Buffer.from('0d0a0d0a000d0a515549540a', 'hex'),
    Buffer.from([0x21, 0x11, 0x00, 0x0c]),
    ip(src),
    ip(dst),
    port(srcPort),
    port(dstPort),
  ]).toString('hex');
}

function firstJson(line: string | null): JsonObject {
  const o = parseJsonObject(line ?? '');
  if (!o) throw new Error(`expected a JSON first line from the server, got ${JSON.stringify(line)}`);
  return o;
}

describe('PROXY protocol in', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let a: ServerHandle;
  const trusted = `${ADDR.gwCli4}:15010`; // trusts the client's address
  const untrusted = `${ADDR.gwCli4}:15011`; // trusts only a range the client is not in
  const trusted6 = `[${ADDR.gwCli6}]:15012`;

  before(async () => {
    lab = await Lab.create({ name: 'ppin' });
    a = await lab.startServer('identity', ['--listen', `${ADDR.server4}:8080`, '--id', 'A']);
    await lab.startServer('identity', ['--listen', `[${ADDR.server6}]:8080`, '--id', 'A6']);
    sg = await Splicegate.start(lab, {
      listeners: [
        { name: 'pp6', address: trusted6, proxy_protocol: { trusted_sources: [`${ADDR.client6}/128`] } },
        { name: 'pp', address: trusted, proxy_protocol: { trusted_sources: [`${ADDR.client4}/32`], timeout: '1s' } },
        { name: 'pp-untrusted', address: untrusted, proxy_protocol: { trusted_sources: ['192.0.2.0/24'] } },
      ],
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('v1 from a trusted source routes to the header destination', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      // The client dials the gateway itself: only the header says where to go.
      const p = await probe(lab, { target: trusted, send: `PROXY TCP4 198.51.100.7 ${ADDR.server4} 40000 8080\\r\\nping\\n`, waitMs: 3000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      const hello = firstJson(p.firstLine);
      assert.equal(hello['id'], 'A');
      assert.equal(hello['local'], `${ADDR.server4}:8080`);
      assert.equal(ipOf(String(hello['remote'])), ADDR.gwSrv4);
      // identity echoes what followed the header: the header itself never reached the server.
      assert.equal(p.bytes, Buffer.byteLength(`${p.firstLine}\n`) + 'ping\n'.length, JSON.stringify(p));
      const s1 = await sg.waitStats((s) => delta(s, s0, 'proxy_protocol_accepted') >= 1, 5000, 'header accepted');
      assert.equal(delta(s1, s0, 'proxy_protocol_accepted'), 1);
      assert.equal(delta(s1, s0, 'no_original_dst'), 0);
    }),
  );

  it('v2 from a trusted source routes to the header destination', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: trusted, sendHex: v2Header('198.51.100.7', 40000, ADDR.server4, 8080), send: 'ping\\n', waitMs: 3000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      const hello = firstJson(p.firstLine);
      assert.equal(hello['id'], 'A');
      assert.equal(hello['local'], `${ADDR.server4}:8080`);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'proxy_protocol_accepted') >= 1, 5000, 'header accepted');
      assert.equal(delta(s1, s0, 'proxy_protocol_accepted'), 1);
    }),
  );

  it('v1 TCP6 over an IPv6 listener routes to the IPv6 header destination', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const p = await probe(lab, { target: trusted6, send: `PROXY TCP6 2001:db8::7 ${ADDR.server6} 40000 8080\r\nping\n`, waitMs: 3000 });
      const hello = firstJson(p.firstLine);
      assert.equal(hello['id'], 'A6');
      assert.equal(hello['local'], `[${ADDR.server6}]:8080`);
      assert.equal(ipOf(String(hello['remote'])), `[${ADDR.gwSrv6}]`);
    }),
  );

  it("the destination policy judges the header's destination (metadata address refused)", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: trusted, send: 'PROXY TCP4 198.51.100.7 169.254.169.254 40000 80\\r\\nGET /\\n', waitMs: 5000 });
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      const s1 = await sg.waitStats((s) => Number(s.raw['policy_denied']) > Number(s0.raw['policy_denied']), 5000, 'policy_denied');
      assert.equal(Number(s1.raw['policy_denied']) - Number(s0.raw['policy_denied']), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0);
    }),
  );

  it('a header from an untrusted source is reset and counted', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const conns0 = a.proc.eventsNamed('conn').length;
      const p = await probe(lab, { target: untrusted, send: `PROXY TCP4 198.51.100.7 ${ADDR.server4} 40000 8080\\r\\nping\\n`, waitMs: 5000 });
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      assert.equal(p.bytes, 0);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'proxy_protocol_untrusted') >= 1, 5000, 'untrusted counted');
      assert.equal(delta(s1, s0, 'proxy_protocol_untrusted'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0);
      assert.equal(a.proc.eventsNamed('conn').length, conns0);
    }),
  );

  it('a malformed header is reset and counted', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: trusted, send: 'PROXY TCP4 not-an-address\\r\\n', waitMs: 5000 });
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      const s1 = await sg.waitStats((s) => delta(s, s0, 'proxy_protocol_error') >= 1, 5000, 'error counted');
      assert.equal(delta(s1, s0, 'proxy_protocol_error'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0);
      const closed = Number(s1.raw['cx_close_protocol_error']) - Number(s0.raw['cx_close_protocol_error']);
      assert.equal(closed, 1, 'counted under its close reason');
      const prom = await sg.adminGet('/stats/prometheus');
      const line = prom.body.split('\n').find((l) => l.startsWith('splicegate_cx_close_protocol_error_total '));
      assert.ok(line && Number(line.split(' ')[1]) >= 1, `Prometheus exports the close reason: ${line ?? '(missing)'}`);
    }),
  );

  it('a header not complete within its timeout is reset and counted', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: trusted, send: 'PROXY TCP4 ', waitMs: 8000 });
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      // timeout: 1s; the bound above it is generous (housekeeping tick, a loaded machine).
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs >= 900, `reset after ${p.closedAfterMs} ms, before the timeout`);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'proxy_protocol_timeout') >= 1, 5000, 'timeout counted');
      assert.equal(delta(s1, s0, 'proxy_protocol_timeout'), 1);
    }),
  );
});

describe('PROXY protocol out (send_proxy_protocol: v2)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let srv: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'ppout' });
    srv = await lab.startServer('proxy-header', ['--listen', `${ADDR.server4}:9000`, '--id', 'P']);
    await lab.redirect({ dport: 9000, toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, {
      workers: 1, // one worker: its warm pool serves every client
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { send_proxy_protocol: 'v2', cleanup_interval: '30s', preconnect: { ports: [9000], per_host: 1, ttl: '10s' } },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('the upstream server reads a v2 header naming the real client and its destination', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: `${ADDR.server4}:9000`, send: 'ping\\n', waitMs: 3000 });
      const seen = firstJson(p.firstLine);
      assert.equal(seen['version'], 2);
      assert.equal(seen['command'], 'proxy');
      assert.equal(ipOf(String(seen['source'])), ADDR.client4);
      assert.equal(seen['destination'], `${ADDR.server4}:9000`);
      // The TCP peer is still the gateway: only the header carries the client.
      assert.equal(ipOf(String(seen['remote'])), ADDR.gwSrv4);
      assert.ok((p.bytes ?? 0) > Buffer.byteLength(`${p.firstLine}\n`), `the data after the header came back: ${JSON.stringify(p)}`);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'proxy_protocol_sent') >= 1, 5000, 'header sent');
      assert.equal(delta(s1, s0, 'proxy_protocol_sent'), 1);
      assert.equal(srv.proc.eventsNamed('bad-header').length, 0);
    }),
  );

  it('a warm (preconnected) socket carries the header of the client it is handed to', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      // The previous test used the host: a warm socket to it is opened and connected.
      const s0 = await sg.waitStats((s) => Number(s.raw['upstream_cx_preconnect']) >= 1, 5000, 'a warm socket');
      const p = await probe(lab, { target: `${ADDR.server4}:9000`, send: 'ping\n', waitMs: 3000 });
      const seen = firstJson(p.firstLine);
      assert.equal(seen['version'], 2);
      assert.equal(ipOf(String(seen['source'])), ADDR.client4);
      assert.equal(seen['destination'], `${ADDR.server4}:9000`);
      const s1 = await sg.waitStats((s) => delta(s, s0, 'proxy_protocol_sent') >= 1, 5000, 'header sent');
      assert.equal(Number(s1.raw['upstream_cx_preconnect_used']) - Number(s0.raw['upstream_cx_preconnect_used']), 1, 'the client got the warm socket');
      assert.equal(srv.proc.eventsNamed('bad-header').length, 0);
    }),
  );
});

describe('original source (cluster.original_source)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let a: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'origsrc' });
    a = await lab.startServer('identity', ['--listen', `${ADDR.server4}:8080`, '--id', 'A']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    // Replies to the client's address come back through the gateway (the server's default route);
    // deliver those that belong to a local transparent socket locally instead of forwarding them.
    await lab.iptables('gw', 4, ['-t', 'mangle', '-A', 'PREROUTING', '-i', IFACE.gwSrv, '-p', 'tcp', '-m', 'socket', '--transparent', '-j', 'MARK', '--set-mark', '1']);
    await lab.ipBatch('gw', ['rule add fwmark 1 lookup 100', 'route replace local 0.0.0.0/0 dev lo table 100'], 4);
    sg = await Splicegate.start(lab, {
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { original_source: true },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it("the server sees the client's address, not the gateway's", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: `${ADDR.server4}:8080`, send: 'ping\\n', waitMs: 3000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      const hello = firstJson(p.firstLine);
      assert.equal(hello['id'], 'A');
      assert.equal(ipOf(String(hello['remote'])), ADDR.client4);
      const conns = await a.proc.waitForEvents((e) => e['event'] === 'conn', 1, 5000, 'server connection');
      assert.equal(ipOf(String(conns[0]?.['remote'])), ADDR.client4);
      assert.equal(p.bytes, Buffer.byteLength(`${p.firstLine}\n`) + 'ping\n'.length, JSON.stringify(p));
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_total') >= 1, 5000, 'upstream connect');
      assert.equal(delta(s1, s0, 'original_source_failed'), 0);
      assert.equal(delta(s1, s0, 'upstream_cx_connect_fail'), 0);
    }),
  );
});
