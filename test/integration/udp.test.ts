// UDP original destination under TPROXY (listeners[].protocol: udp): a TPROXY rule for UDP in the
// gateway, a real DNS server (dnsmasq) and iperf3 in the server namespace, dig and iperf3 -u in the
// client namespace. Plain forwarding of UDP from the client is dropped, so every answer the client
// gets went through the proxy.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Family, Lab } from '../lab/lab';
import { counter, Splicegate, Stats } from '../lab/splicegate';
import { withDiagnostics } from '../lab/harness';
import { dig, DNS_ANSWER_LINE, startDns } from '../lab/dns';
import { isJsonObject, JsonObject } from '../lab/util';

const UDP_PORT = 15053;
/** Sessions per worker in these tests (one worker serves UDP). */
const CAP = 3;

function udpDelta(after: Stats, before: Stats, name: string): number {
  return counter(after, name) - counter(before, name);
}

/** The global time-to-first-byte histogram's sample count in a /stats/prometheus body. */
function ttfbCount(body: string): number {
  const m = /^splicegate_ttfb_seconds_count (\d+)$/m.exec(body);
  assert.ok(m, 'splicegate_ttfb_seconds_count in /stats/prometheus');
  return Number(m[1]);
}

function describeUdp(family: Family): void {
  const v6 = family === 6;
  const server = v6 ? ADDR.server6 : ADDR.server4;
  const denied = v6 ? 'fd00:2::3' : '10.10.2.3';

  describe(`UDP under TPROXY (IPv${family})`, () => {
    let lab: Lab;
    let sg: Splicegate | undefined;

    before(async () => {
      lab = await Lab.create({ name: `udp${family}` });
      await lab.addServerAddress(denied);
      await startDns(lab, [server, denied]);
      await lab.tproxy({ dport: [53, 5201], onPort: UDP_PORT, mark: 1, family, protocol: 'udp' });
      // UDP from the client reaches the servers only through the proxy (iperf3's TCP control
      // connection is forwarded plainly).
      await lab.iptables('gw', family, ['-A', 'FORWARD', '-i', 'cli0', '-p', 'udp', '-j', 'DROP']);
      sg = await Splicegate.start(lab, {
        workers: 2,
        listeners: [
          {
            name: 'udp',
            address: v6 ? `[::]:${UDP_PORT}` : `0.0.0.0:${UDP_PORT}`,
            protocol: 'udp',
            transparent: true,
            policy: { default: 'allow', rules: [{ name: 'no-second', action: 'deny', cidrs: [denied] }] },
          },
          // A TCP listener on the same address (nothing is sent to it): two sockets, and its
          // per-listener counters follow a UDP listener's in the config.
          { name: 'tcp', address: v6 ? `[::]:${UDP_PORT}` : `0.0.0.0:${UDP_PORT}`, transparent: true },
        ],
        cluster: { udp_session_timeout: '2s', udp_max_sessions_per_worker: CAP },
      });
    });

    after(async () => {
      await sg?.dispose();
      await lab?.destroy();
    });

    it('answers a DNS query from the server the client asked, through a session that then expires', { timeout: 60000 }, () =>
      withDiagnostics(lab, sg, async () => {
        if (!sg) throw new Error('no splicegate');
        const s0 = await sg.stats();
        const ttfb0 = ttfbCount((await sg.adminGet('/stats/prometheus')).body);
        const r = await dig(lab, server);
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, DNS_ANSWER_LINE, r.out);
        // dig checks the reply's source: one from any other address would print this and be ignored.
        assert.doesNotMatch(r.out, /reply from unexpected source/, r.out);
        assert.match(r.out, new RegExp(`SERVER: ${server.replace(/\./g, '\\.')}#53`), r.out);
        const s1 = await sg.waitStats((s) => counter(s, 'udp_sessions_active') === 0 && counter(s, 'udp_sessions_expired') > counter(s0, 'udp_sessions_expired'), 15000, 'the session expired');
        assert.equal(udpDelta(s1, s0, 'udp_sessions_total'), 1);
        assert.equal(udpDelta(s1, s0, 'udp_datagrams_in'), 1);
        assert.equal(udpDelta(s1, s0, 'udp_datagrams_upstream'), 1);
        assert.equal(udpDelta(s1, s0, 'udp_datagrams_out'), 1);
        assert.equal(udpDelta(s1, s0, 'udp_dropped_error'), 0);
        assert.equal(udpDelta(s1, s0, 'udp_dropped_policy'), 0);
        // The first-reply time went into the ttfb histogram (docs/LATENCY.md).
        const prom = await sg.adminGet('/stats/prometheus');
        assert.equal(prom.status, 200);
        assert.equal(ttfbCount(prom.body), ttfb0 + 1, 'one first reply recorded');
        assert.match(prom.body, /^splicegate_udp_datagrams_in_total \d+/m);
        assert.match(prom.body, /^splicegate_udp_sessions_active 0$/m);
        // Per-listener counters are the TCP listener's only (UDP has the udp_* ones).
        assert.equal(counter(s1, 'listener.tcp.downstream_cx_total'), 0);
        assert.ok(!Object.keys(s1.raw).some((k) => k.startsWith('listener.udp.')), 'no per-listener block for UDP');
      }),
    );

    it('drops datagrams to a destination the policy denies', { timeout: 60000 }, () =>
      withDiagnostics(lab, sg, async () => {
        if (!sg) throw new Error('no splicegate');
        const s0 = await sg.stats();
        const r = await dig(lab, denied, ['+timeout=1']);
        assert.notEqual(r.code, 0, r.out);
        assert.match(r.out, /timed out|no servers could be reached/, r.out);
        const s1 = await sg.waitStats((s) => counter(s, 'udp_dropped_policy') > counter(s0, 'udp_dropped_policy'), 5000, 'the deny counted');
        assert.equal(udpDelta(s1, s0, 'udp_sessions_total'), 0);
        assert.equal(udpDelta(s1, s0, 'udp_datagrams_upstream'), 0);
        assert.ok(counter(s1, 'policy.no-second.denied') > counter(s0, 'policy.no-second.denied'));
      }),
    );

    it(`keeps at most ${CAP} sessions: a new flow makes room by closing the one idle longest`, { timeout: 60000 }, () =>
      withDiagnostics(lab, sg, async () => {
        if (!sg) throw new Error('no splicegate');
        const s0 = await sg.stats();
        const N = CAP + 3;
        for (let i = 0; i < N; i++) {
          // Each dig is a new flow (a new source port); each is answered before the next starts.
          const r = await dig(lab, server);
          assert.equal(r.code, 0, r.out);
          assert.match(r.out, DNS_ANSWER_LINE, r.out);
          assert.ok(counter(await sg.stats(), 'udp_sessions_active') <= CAP);
        }
        const s1 = await sg.stats();
        assert.equal(udpDelta(s1, s0, 'udp_sessions_total'), N);
        // Evicted, unless the 2 s timeout ended a session first on a slow run: either way, closed.
        assert.ok(udpDelta(s1, s0, 'udp_sessions_evicted') + udpDelta(s1, s0, 'udp_sessions_expired') >= N - CAP);
        assert.ok(udpDelta(s1, s0, 'udp_sessions_evicted') >= 1, 'the cap was reached at least once');
        await sg.waitStats((s) => counter(s, 'udp_sessions_active') === 0, 15000, 'the rest expired');
      }),
    );

    it('relays an iperf3 -u stream and its replies', { timeout: 90000 }, () =>
      withDiagnostics(lab, sg, async () => {
        if (!sg) throw new Error('no splicegate');
        const iperf = lab.start('srv', 'iperf3', ['-s', '-1', '-B', server, '--forceflush'], { stdin: 'ignore', label: 'iperf3 -s' });
        await iperf.waitForLine((l) => l.includes('Server listening'), 10000, 'iperf3 server');
        const s0 = await sg.stats();
        const r = await lab.exec('cli', 'iperf3', ['-c', server, '-u', '-b', '4M', '-l', '1200', '-t', '2', '-J'], { timeoutMs: 40000 });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        const report = JSON.parse(r.stdout) as JsonObject;
        const end = report['end'];
        assert.ok(isJsonObject(end) && isJsonObject(end['sum']), r.stdout.slice(0, 2000));
        const sum = end['sum'] as JsonObject;
        const packets = Number(sum['packets']);
        const lost = Number(sum['lost_packets']);
        const lostPercent = Number(sum['lost_percent']);
        assert.ok(packets > 100, `iperf3 sent ${packets} datagrams`);
        assert.ok(Number.isFinite(lostPercent) && lost >= 0, `loss reported: ${JSON.stringify(sum)}`);
        // A liveness bound, not a performance claim: the stream got through.
        assert.ok(lostPercent < 50, `lost ${lostPercent}% of ${packets}`);
        const s1 = await sg.stats();
        // Every stream datagram (and iperf3's UDP hello) was read; what reached the server went upstream.
        assert.ok(udpDelta(s1, s0, 'udp_datagrams_in') >= packets, `${udpDelta(s1, s0, 'udp_datagrams_in')} in, ${packets} sent`);
        assert.ok(udpDelta(s1, s0, 'udp_datagrams_upstream') >= packets - lost);
        // The server's hello reply came back to the client from the server's address, or no stream.
        assert.ok(udpDelta(s1, s0, 'udp_datagrams_out') >= 1);
        // One flow, one session: its datagrams are not spread over workers.
        assert.equal(udpDelta(s1, s0, 'udp_sessions_total'), 1);
        console.log(`iperf3 -u through the proxy (IPv${family}): ${packets} datagrams, ${lost} lost (${lostPercent.toFixed(2)}%)`);
        await iperf.waitExit(10000);
      }),
    );
  });
}

describeUdp(4);
describeUdp(6);
