// The ORIGINAL_DST cluster's host cache, limits and admin views, on a real lab.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
// parse-prometheus-text-format ships no types: it returns metric families.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const parsePrometheus = require('parse-prometheus-text-format') as (text: string) => Array<{
  name: string;
  type: string;
  metrics: Array<{ value?: string; labels?: Record<string, string> }>;
}>;
import { Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { HoldClient, connectMany, probe } from '../lab/clients';
import { withDiagnostics } from '../lab/harness';

interface ClustersJson {
  cluster: string;
  hosts: Array<{ address: string; state: string; stats: Record<string, number> }>;
}

async function clusters(sg: Splicegate): Promise<ClustersJson> {
  const r = await sg.adminGet('/clusters?format=json');
  assert.equal(r.status, 200, `GET /clusters -> ${r.status} ${r.error ?? ''}`);
  return JSON.parse(r.body) as ClustersJson;
}

async function waitFor<T>(what: string, timeoutMs: number, poll: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await poll();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('original-destination host cache', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'cluster' });
    await lab.addServerAddress('10.10.2.3');
    await lab.addServerAddress('10.10.2.4');
    for (const [ip, id] of [['10.10.2.2', 'A'], ['10.10.2.3', 'B'], ['10.10.2.4', 'C']] as const) {
      await lab.startServer('identity', ['--listen', `${ip}:8080`, '--id', id]);
    }
    // Echo servers for the clients that hold connections open (they verify with an echo).
    await lab.startServer('hold', ['--listen', '10.10.2.2:8081']);
    await lab.startServer('hold', ['--listen', '10.10.2.3:8081']);
    await lab.redirect({ dport: [8080, 8081], toPort: 15001, family: 4 });
    // One worker: limits are per worker, so one makes them exact for the assertions.
    sg = await Splicegate.start(lab, {
      workers: 1,
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      // 5 s: long enough that a host used by one step is still cached when the step's next admin request
      // looks, even on a loaded machine (1 s was not).
      cluster: { cleanup_interval: '5s', max_hosts: 2, max_connections: 2 },
      env: { SPLICEGATE_TEST_HOOKS: '1' },  // /debug/crash-worker
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('a host appears in /clusters and is removed after cleanup_interval once idle', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const r = await connectMany(lab, { target: '10.10.2.2:8080', n: 3, concurrency: 1, expectId: 'A' });
      assert.equal(r.ok, 3, JSON.stringify(r.errors));
      const seen = (await clusters(sg)).hosts.find((h) => h.address === '10.10.2.2:8080');
      assert.ok(seen, 'host listed right after use');
      assert.equal(seen.stats.cx_total, 3);
      assert.ok(seen.stats.tx_bytes > 0 && seen.stats.rx_bytes > 0, JSON.stringify(seen.stats));
      const text = await sg.adminGet('/clusters');
      assert.match(text.body, /^original_dst::10\.10\.2\.2:8080::cx_total::3$/m);
      await waitFor('host removal', 20000, async () =>
        (await clusters(sg!)).hosts.some((h) => h.address === '10.10.2.2:8080') ? undefined : true,
      );
      const stats = (await sg.stats()).raw as Record<string, number>;
      assert.ok(stats['host_removed_idle']! >= 1, JSON.stringify(stats));
    }),
  );

  it('max_hosts: an idle host is evicted for a new one; with none idle the new one is refused', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = (await sg.stats()).raw as Record<string, number>;
      for (const [ip, id] of [['10.10.2.2', 'A'], ['10.10.2.3', 'B'], ['10.10.2.4', 'C']] as const) {
        const r = await connectMany(lab, { target: `${ip}:8080`, n: 1, expectId: id });
        assert.equal(r.ok, 1, JSON.stringify(r.errors));
      }
      const s1 = (await sg.stats()).raw as Record<string, number>;
      assert.ok(s1['host_evictions']! - s0['host_evictions']! >= 1, `evictions ${JSON.stringify(s1)}`);
      assert.ok((await clusters(sg)).hosts.length <= 2);

      // Hold one connection to each of two hosts: both active, so the cache has nothing to evict.
      const holdA = new HoldClient(lab, { target: '10.10.2.2:8081', n: 1 });
      const holdB = new HoldClient(lab, { target: '10.10.2.3:8081', n: 1 });
      assert.equal((await holdA.waitHeld(15000)).ok, 1);
      assert.equal((await holdB.waitHeld(15000)).ok, 1);
      const p = await probe(lab, { target: '10.10.2.4:8080', waitMs: 3000 });
      assert.equal(p.closeKind, 'reset', `third host not refused with a reset: ${JSON.stringify(p)}`);
      assert.equal(p.bytes, 0, 'no identity line: never relayed');
      const s2 = (await sg.stats()).raw as Record<string, number>;
      assert.equal(s2['host_overflow']! - s1['host_overflow']!, 1);
      await holdA.release(10000);
      await holdB.release(10000);
    }),
  );

  it('per-host max_connections: the third concurrent connection to one host is refused at once', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = (await sg.stats()).raw as Record<string, number>;
      const hold = new HoldClient(lab, { target: '10.10.2.2:8081', n: 2 });
      assert.equal((await hold.waitHeld(15000)).ok, 2);
      const p = await probe(lab, { target: '10.10.2.2:8081', send: 'x', waitMs: 3000 });
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 1000, `closed after ${p.closedAfterMs} ms`);
      assert.equal(p.bytes, 0);
      const s1 = (await sg.stats()).raw as Record<string, number>;
      assert.equal(s1['upstream_cx_overflow']! - s0['upstream_cx_overflow']!, 1);
      const host = (await clusters(sg)).hosts.find((h) => h.address === '10.10.2.2:8081');
      assert.ok(host && host.stats.cx_overflow >= 1 && host.stats.cx_active === 2, JSON.stringify(host));
      await hold.release(10000);
    }),
  );

  it('per-host max_connections holds across a reload and a worker death: connections the old generation or an orphaned loop still relays take their places', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const refused = async (what: string): Promise<void> => {
        const p = await probe(lab, { target: '10.10.2.2:8081', send: 'x', waitMs: 3000 });
        const seen = JSON.stringify({ closeKind: p.closeKind, bytes: p.bytes, closedAfterMs: p.closedAfterMs });
        assert.equal(p.closeKind, 'reset', `${what}: a third connection to the host was not refused: ${seen}`);
        assert.equal(p.bytes, 0, what);
      };
      // Reload: the new generation's workers start with empty host caches, the old one relays the two.
      const first = new HoldClient(lab, { target: '10.10.2.2:8081', n: 2 });
      assert.equal((await first.waitHeld(15000)).ok, 2);
      const r = await sg.adminPost('/reload');
      assert.equal(r.status, 200, r.body);
      await refused('after a reload');
      await first.release(10000);
      // Worker death: its loop relays the two on as an orphan while a replacement with an empty cache accepts.
      const second = new HoldClient(lab, { target: '10.10.2.2:8081', n: 2 });
      assert.equal((await second.waitHeld(15000)).ok, 2);
      const crash = await sg.adminPost('/debug/crash-worker?id=0');
      assert.equal(crash.status, 202, crash.body);
      await sg.waitStats((s) => s.raw['workers_orphaned'] === 1 && s.raw['workers_orphaned_total'] === 1, 10000, 'the orphan');
      await sg.waitReady(10000);
      await refused('after a worker death');
      await second.release(10000);
      // Nothing leaked: once they closed, the host takes connections again.
      const ok = await probe(lab, { target: '10.10.2.2:8081', send: 'x\n', waitMs: 5000, untilLine: true });
      assert.ok(ok.bytes > 0, `the host refuses after all closed: ${JSON.stringify({ closeKind: ok.closeKind, bytes: ok.bytes })}`);
    }),
  );

  it('/stats/prometheus is valid exposition format and agrees with /stats', { timeout: 20000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const r = await sg.adminGet('/stats/prometheus');
      assert.equal(r.status, 200);
      const families = parsePrometheus(r.body);
      const byName = new Map(families.map((f) => [f.name, f]));
      const total = byName.get('splicegate_downstream_cx_total');
      assert.ok(total, `no splicegate_downstream_cx_total in ${r.body.slice(0, 300)}`);
      assert.equal(total.type, 'COUNTER');
      assert.equal(byName.get('splicegate_downstream_cx_active')?.type, 'GAUGE');
      // No traffic runs now, so the data-plane counters hold still between the three reads: a
      // counter equal in /stats before and after must be exactly that in Prometheus. (The admin_rq
      // counters move with these very requests, so they are the ones allowed to differ.)
      const json1 = (await sg.stats()).raw as Record<string, number>;
      const r2 = await sg.adminGet('/stats/prometheus');
      const json2 = (await sg.stats()).raw as Record<string, number>;
      const prom = new Map(parsePrometheus(r2.body).map((f) => [f.name, Number(f.metrics[0]?.value)]));
      const stable = Object.keys(json1).filter((name) => json1[name] === json2[name]);
      assert.ok(stable.includes('downstream_cx_total') && stable.includes('bytes_sent'), `moving: ${JSON.stringify({ json1, json2 })}`);
      assert.ok(json1['downstream_cx_total']! > 0);
      // Per-rule policy counters (policy.<rule>.denied) are one labelled family (docs/POLICY.md).
      const ruleFamily = parsePrometheus(r2.body).find((f) => f.name === 'splicegate_policy_rule_denied_total');
      assert.equal(ruleFamily?.type, 'COUNTER');
      const byRule = new Map((ruleFamily?.metrics ?? []).map((m) => [m.labels?.['rule'], Number(m.value)]));
      assert.ok(stable.includes('policy.special.denied') && stable.includes('policy_denied'), JSON.stringify(json1));
      // Per-listener counters (listener.<name>.<stat>): a family per stat, labelled by listener.
      const families2 = parsePrometheus(r2.body);
      const listenerMetric = (listener: string, stat: string): number | undefined => {
        const family = families2.find((f) => f.name === `splicegate_listener_${stat}` || f.name === `splicegate_listener_${stat}_total`);
        const m = family?.metrics.find((x) => x.labels?.['listener'] === listener);
        return m === undefined ? undefined : Number(m.value);
      };
      assert.ok(stable.includes('listener.egress.downstream_cx_total'), JSON.stringify(json1));
      for (const name of stable) {
        const rule = /^policy\.(.+)\.denied$/.exec(name)?.[1];
        const listener = /^listener\.(.+)\.([a-z_]+)$/.exec(name);
        const metric =
          rule !== undefined
            ? byRule.get(rule)
            : listener
              ? listenerMetric(listener[1] ?? '', listener[2] ?? '')
              : (prom.get(`splicegate_${name}`) ?? prom.get(`splicegate_${name}_total`));
        assert.equal(metric, json1[name], `splicegate_${name}[_total] vs /stats ${name}`);
      }
    }),
  );
});

describe('upstream_port_override', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'portovr' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'original-port']);
    await lab.startServer('identity', ['--listen', '10.10.2.2:9443', '--id', 'override-port']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, {
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { upstream_port_override: 9443 },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('connects to the original address on the override port', { timeout: 20000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const r = await connectMany(lab, { target: '10.10.2.2:8080', n: 2, expectId: 'override-port' });
      assert.equal(r.ok, 2, JSON.stringify(r.errors));
      const hosts = (await clusters(sg)).hosts.map((h) => h.address);
      assert.deepEqual(hosts, ['10.10.2.2:9443']);
    }),
  );
});

describe('max_downstream_connections', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'maxdown' });
    await lab.startServer('hold', ['--listen', '10.10.2.2:8081']);
    await lab.redirect({ dport: 8081, toPort: 15001, family: 4 });
    // 3 over 2 workers: parts 2 and 1 (ceil gave each 2, so 4 could be relayed).
    sg = await Splicegate.start(lab, {
      workers: 2,
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      cluster: { max_downstream_connections: 3 },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('is exact when it does not divide by the worker count: 3 over 2 workers relays 3, the 4th waits in the backlog', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const hold = new HoldClient(lab, { target: '10.10.2.2:8081', n: 4, timeoutMs: 3000 });
      const held = await hold.waitHeld(15000);
      assert.equal(held.ok, 3, JSON.stringify(held));
      const s = await sg.stats();
      assert.equal(s.raw['downstream_cx_active'], 3);
      assert.ok(Number(s.raw['downstream_cx_overflow'] ?? 0) >= 1, 'a full worker stepped out of the rotation');
      await hold.release(10000);
      await sg.waitStats((x) => x.raw['downstream_cx_active'] === 0, 10000, 'every connection closed');
    }),
  );
});
