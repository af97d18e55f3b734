// The destination policy on the accept path, in the namespace lab with real servers: built-in
// denies (cloud metadata, the gateway's own services), a deny rule for one CIDR and port, an
// explicit allow for a built-in range on a listener whose own policy replaces the top-level one,
// NAT64 destinations judged as IPv4, an address and an AnyIP range the gateway gains after start,
// and the rate-limited deny log.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { Splicegate, Stats } from '../lab/splicegate';
import { connectMany, probe } from '../lab/clients';
import { connEvents, disposeLab, started, withDiagnostics } from '../lab/harness';
import { stat } from '../lab/resources';
import { waitFor } from '../lab/util';

const METADATA = '169.254.169.254';
const OTHER = '10.10.2.3';
const ADMIN = `${ADDR.gwSrv4}:9901`;
const NAT64_SERVER = '64:ff9b::a0a:202'; // 10.10.2.2 inside the NAT64 prefix
const NEW_GW_ADDRESS = '10.10.2.77'; // added to the gateway while splicegate runs
// Routed as local on the gateway while splicegate runs ("AnyIP": no interface has these addresses).
const ANYIP_RANGE = '10.10.2.128/28';
const ANYIP_SERVER = '10.10.2.130'; // also a server address, so it relays while the route is absent

describe('destination policy', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  // One identity server per port, on every server address (its `local` tells which one was dialled).
  const servers: Record<number, ServerHandle> = {};

  before(async () => {
    lab = await Lab.create({ name: 'policy' });
    await lab.addServerAddress(OTHER);
    // The metadata address lives on the server (as it would on a cloud host's link), routed to by the gateway.
    await lab.addServerAddress(METADATA);
    for (const port of [8080, 8081, 9080, 9081]) {
      servers[port] = await lab.startServer('identity', ['--listen', `0.0.0.0:${port}`, '--id', `p${port}`]);
    }
    await lab.redirect({ dport: [8080, 8081], toPort: 15001, family: 4 });
    // The gateway's own admin server, dialled as if it were a destination behind the gateway.
    await lab.redirect({ daddr: ADDR.gwSrv4, dport: 9901, toPort: 15001, family: 4 });
    await lab.redirect({ dport: [9080, 9081], toPort: 15002, family: 4 });
    await lab.redirect({ dport: [8082, 8083], toPort: 15006, family: 6 });
    sg = await Splicegate.start(lab, {
      admin: ADMIN,
      listeners: [
        { name: 'egress', address: '0.0.0.0:15001' },
        { name: 'egress6', address: '[::]:15006' },
        {
          name: 'meta',
          address: '0.0.0.0:15002',
          // Replaces the top-level policy: its no-db rule (which names port 9081) does not apply here.
          policy: { rules: [{ name: 'metadata', action: 'allow', cidrs: [`${METADATA}/32`], ports: ['9080'] }] },
        },
      ],
      extra: {
        policy: {
          default: 'allow',
          rules: [
            { name: 'no-db', action: 'deny', cidrs: [`${OTHER}/32`], ports: ['8081', '9081'] },
            { name: 'nat64-v4', action: 'deny', cidrs: ['10.10.2.2/32'], ports: ['8082'] },
          ],
        },
      },
    });
  });

  after(() => disposeLab(sg, lab));

  const proxy = (): Splicegate => started(sg);

  /** Connects, sends nothing, and expects a reset with no byte received (a FIN would read as "end"). */
  async function assertRefused(target: string): Promise<void> {
    const p = await probe(lab, { target, waitMs: 3000 });
    assert.equal(p.connected, true, `${target}: ${JSON.stringify(p)}`);
    assert.equal(p.closeKind, 'reset', `${target} is reset at once: ${JSON.stringify(p)}`);
    assert.equal(p.bytes, 0, `${target}: nothing relayed back`);
  }

  async function assertRelayed(target: string, port: number): Promise<void> {
    const r = await connectMany(lab, { target, n: 1, expectId: `p${port}`, expectLocal: target });
    assert.equal(r.ok, 1, `${target} relays: ${JSON.stringify(r)}`);
  }

  /** Waits until the named counters moved by exactly these amounts (relative to `before`). */
  async function waitCounters(before: Stats, moves: Record<string, number>, what: string): Promise<Stats> {
    return proxy().waitStats(
      (s) => Object.entries(moves).every(([name, d]) => stat(s, name) - stat(before, name) === d),
      5000,
      `${what}: ${JSON.stringify(moves)}`,
    );
  }

  const serverSaw = (port: number, local: string): number => connEvents(servers[port]!.proc).filter((e) => e.local === local).length;

  it('the cloud metadata address is refused by default: reset, counted as special, never connected', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const s0 = await proxy().stats();
      await assertRefused(`${METADATA}:8080`);
      const s1 = await waitCounters(s0, { 'policy.special.denied': 1, policy_denied: 1 }, 'metadata deny counted');
      assert.equal(s1.upstream_cx_total - s0.upstream_cx_total, 0, 'no upstream connect was attempted');
      assert.equal(serverSaw(8080, `${METADATA}:8080`), 0, 'the metadata server saw nothing');
    }),
  );

  it("the gateway's own admin port is refused by default, though the admin answers there", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const ready = await proxy().adminGet('/ready');
      assert.equal(ready.status, 200, `the admin server listens on ${ADMIN}`);
      const s0 = await proxy().stats();
      await assertRefused(ADMIN);
      const s1 = await waitCounters(s0, { 'policy.special.denied': 1, policy_denied: 1 }, 'admin deny counted');
      assert.equal(s1.upstream_cx_total - s0.upstream_cx_total, 0, 'no upstream connect was attempted');
    }),
  );

  it('a deny rule for one CIDR and port refuses only that; other ports and addresses still relay', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const s0 = await proxy().stats();
      await assertRefused(`${OTHER}:8081`);
      await waitCounters(s0, { 'policy.no-db.denied': 1, policy_denied: 1, 'policy.special.denied': 0 }, 'rule deny counted');
      await assertRelayed(`${OTHER}:8080`, 8080);
      await assertRelayed(`${ADDR.server4}:8081`, 8081);
      const s1 = await waitCounters(s0, { 'policy.no-db.denied': 1, policy_denied: 1, upstream_cx_total: 2 }, 'two relayed');
      assert.equal(serverSaw(8081, `${OTHER}:8081`), 0, 'the denied destination saw nothing');
      assert.equal(stat(s1, 'policy.nat64-v4.denied'), 0);

      const text = await proxy().adminGet('/stats');
      assert.match(text.body, /^policy\.no-db\.denied: 1$/m, '/stats text has the per-rule counter');
      const prom = await proxy().adminGet('/stats/prometheus');
      assert.match(prom.body, /^splicegate_policy_rule_denied_total\{rule="no-db"\} 1$/m);
      assert.match(prom.body, /^splicegate_policy_rule_denied_total\{rule="special"\} 2$/m);
      assert.match(prom.body, /^splicegate_policy_denied_total 3$/m);
      assert.match(prom.body, /^# TYPE splicegate_policy_rule_denied_total counter$/m);
    }),
  );

  it('each deny is logged with source, destination, listener and rule', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const line = await waitFor(
        () =>
          proxy()
            .stderr.split('\n')
            .find((l) => / policy denied /.test(l) && l.includes(`destination=${OTHER}:8081`)),
        { timeoutMs: 5000, what: 'the deny log line for the no-db deny' },
      );
      assert.match(line, new RegExp(` source=${ADDR.client4.replace(/\./g, '\\.')}:\\d+ `));
      assert.match(line, / listener=egress /);
      assert.match(line, / rule=no-db /);
      const special = proxy().stderr.split('\n').filter((l) => / policy denied /.test(l) && / rule=special /.test(l));
      assert.ok(special.some((l) => l.includes(`destination=${METADATA}:8080`)), special.join('\n'));
      assert.ok(special.some((l) => l.includes(`destination=${ADMIN}`)), special.join('\n'));
    }),
  );

  it("a listener's own policy replaces the top-level one; its explicit allow opens the metadata address on that port only", { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const s0 = await proxy().stats();
      await assertRelayed(`${METADATA}:9080`, 9080);
      // The top-level no-db rule names 10.10.2.3 port 9081, but this listener's policy replaced it.
      await assertRelayed(`${OTHER}:9081`, 9081);
      await assertRefused(`${METADATA}:9081`);
      const s1 = await waitCounters(s0, { 'policy.special.denied': 1, policy_denied: 1, upstream_cx_total: 2 }, 'one special deny, two relayed');
      assert.equal(stat(s1, 'policy.metadata.denied'), 0);
      assert.equal(stat(s1, 'policy.no-db.denied') - stat(s0, 'policy.no-db.denied'), 0);
      assert.equal(serverSaw(9081, `${METADATA}:9081`), 0);
    }),
  );

  it('a NAT64 destination (64:ff9b::/96) is judged as its IPv4 address: an IPv4 rule denies it', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const s0 = await proxy().stats();
      await assertRefused(`[${NAT64_SERVER}]:8082`);
      const s1 = await waitCounters(s0, { 'policy.nat64-v4.denied': 1, policy_denied: 1 }, 'NAT64 deny counted by the IPv4 rule');
      assert.equal(s1.upstream_cx_total - s0.upstream_cx_total, 0, 'no upstream connect was attempted');
      // Another port is allowed: the gateway tries to connect (and fails: it has no NAT64 route).
      await assertRefused(`[${NAT64_SERVER}]:8083`);
      await waitCounters(s0, { 'policy.nat64-v4.denied': 1, policy_denied: 1, upstream_cx_total: 1, upstream_cx_connect_fail: 1 }, 'allowed port tried upstream');
    }),
  );

  it("an address added to the gateway after start is its own from the first connection (no 5 s refresh window)", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const s0 = await proxy().stats();
      // A new address of the gateway (as DHCP, a VIP or a container bridge would add it), dialled
      // at once: the policy must see it as "this host" before that connection is judged.
      await lab.execOk('gw', 'ip', ['addr', 'add', `${NEW_GW_ADDRESS}/32`, 'dev', 'lo']);
      await assertRefused(`${NEW_GW_ADDRESS}:8080`);
      const s1 = await waitCounters(s0, { 'policy.special.denied': 1, policy_denied: 1 }, 'the new own address denied as special');
      assert.equal(s1.upstream_cx_total - s0.upstream_cx_total, 0, 'no upstream connect to the gateway itself was attempted');
    }),
  );

  it('a range routed as local on the gateway (AnyIP) is its own while the route exists, from the first connection on', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      await lab.addServerAddress(ANYIP_SERVER);
      await assertRelayed(`${ANYIP_SERVER}:8080`, 8080); // before the route: an ordinary destination
      const s0 = await proxy().stats();
      // No address is added: the kernel answers the whole range itself, and only the local
      // routing table says so.
      await lab.execOk('gw', 'ip', ['route', 'add', 'local', ANYIP_RANGE, 'dev', 'lo']);
      try {
        await assertRefused(`${ANYIP_SERVER}:8080`);
        await assertRefused('10.10.2.141:8081'); // another address of the range, another port
        const s1 = await waitCounters(s0, { 'policy.special.denied': 2, policy_denied: 2 }, 'both AnyIP addresses denied as special');
        assert.equal(s1.upstream_cx_total - s0.upstream_cx_total, 0, 'no upstream connect to the gateway itself was attempted');
        await assertRelayed('10.10.2.3:8080', 8080); // the neighbours outside the range still relay
      } finally {
        await lab.execOk('gw', 'ip', ['route', 'del', 'local', ANYIP_RANGE, 'dev', 'lo']);
      }
      // The route's removal is noticed as promptly: the same address relays again at once.
      await assertRelayed(`${ANYIP_SERVER}:8080`, 8080);
    }),
  );

  it('a flood of denied connections is counted exactly; the log keeps to its rate and accounts for the rest', { timeout: 90000 }, (t) =>
    withDiagnostics(lab, sg, async () => {
      const N = 300;
      const s0 = await proxy().stats();
      const logFrom = proxy().stderr.length;
      // Deny lines are written when the workers' events are drained (once a second), so an earlier
      // test's deny to the same destination can still be logged after logFrom: lines count only by
      // the time of the deny they report (at=), which for the flood's is after this.
      const floodStartMs = Date.now();
      const r = await connectMany(lab, { target: `${OTHER}:8081`, n: N, concurrency: 50, timeoutMs: 10000 });
      assert.equal(r.ok, 0, `every connection is refused: ${JSON.stringify(r.errors)}`);
      await waitCounters(s0, { 'policy.no-db.denied': N, policy_denied: N, upstream_cx_total: 0 }, 'every deny counted');
      // Every deny is either a log line or part of a summary's count.
      const account = (): { lines: string[]; summarized: number } => {
        const log = proxy().stderr.slice(logFrom).split('\n');
        const lines = log.filter((l) => {
          const at = / at=(\S+)/.exec(l)?.[1];
          return / policy denied source=/.test(l) && l.includes(`destination=${OTHER}:8081`) && at !== undefined && Date.parse(at) >= floodStartMs;
        });
        const summarized = log
          .filter((l) => / policy denied: more connections than logged /.test(l))
          .reduce((n, l) => n + Number(/ suppressed=(\d+)/.exec(l)?.[1] ?? 0), 0);
        return { lines, summarized };
      };
      const seen = await waitFor(
        () => {
          const a = account();
          return a.lines.length + a.summarized >= N ? a : undefined;
        },
        { timeoutMs: 10000, what: `${N} denies logged or summarized`, diagnostics: () => JSON.stringify({ lines: account().lines.length, summarized: account().summarized }) },
      );
      assert.equal(seen.lines.length + seen.summarized, N, 'nothing counted twice');
      assert.ok(seen.summarized > 0, 'the flood was rate-limited');
      // At most 20 lines per second of the main thread's windows.
      const seconds = new Set(seen.lines.map((l) => l.slice(0, 19)));
      t.diagnostic(`${N} denies in ${r.ms} ms: ${seen.lines.length} log lines over ${seconds.size} s, ${seen.summarized} summarized`);
      assert.ok(seen.lines.length <= 20 * (seconds.size + 1), `${seen.lines.length} lines over ${seconds.size} distinct seconds`);
    }),
  );
});
