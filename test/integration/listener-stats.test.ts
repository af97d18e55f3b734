// Per-listener counters in the namespace lab: three listeners get different traffic (relayed
// connections, policy denies by a listener's own policy, HTTP requests with a 403) and each one's
// listener.<name>.* counters in /stats and /stats/prometheus are exactly its own, summing to the
// process's totals. Across a reload that keeps the listeners, the totals keep counting up.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { ADDR } from '../lab/lab';
import { Lab } from '../lab/lab';
import { counter, Splicegate, type SplicegateOptions, type Stats } from '../lab/splicegate';
import { connectMany, probe } from '../lab/clients';
import { disposeLab, started, withDiagnostics } from '../lab/harness';
import { curl } from '../lab/http';

const HEADER = 'x-envoy-original-dst-host';
const WEB = `${ADDR.gwCli4}:9001`;
const STATS = ['downstream_cx_total', 'downstream_cx_active', 'downstream_cx_overflow', 'no_original_dst', 'loop_rejected', 'policy_denied'] as const;
type ListenerCounts = Record<(typeof STATS)[number], number>;

/** Every per-listener counter of `listener`; throws (via counter) when one is missing. */
function listenerCounts(s: Stats, listener: string): ListenerCounts {
  return Object.fromEntries(STATS.map((stat) => [stat, counter(s, `listener.${listener}.${stat}`)])) as ListenerCounts;
}

function counts(partial: Partial<ListenerCounts>): ListenerCounts {
  return { downstream_cx_total: 0, downstream_cx_active: 0, downstream_cx_overflow: 0, no_original_dst: 0, loop_rejected: 0, policy_denied: 0, ...partial };
}

function config(extraRule: boolean): SplicegateOptions {
  return {
    workers: 2,
    listeners: [
      { name: 'plain', address: '0.0.0.0:15001' },
      // Its own policy: 8099 denied here (the top-level one allows it).
      { name: 'strict', address: '0.0.0.0:15002', policy: { default: 'allow', rules: [{ name: 'strict-no-8099', action: 'deny', cidrs: [`${ADDR.server4}/32`], ports: ['8099'] }] } },
      { name: 'web', address: WEB, mode: 'http', http: { trusted_sources: [`${ADDR.client4}/32`] } },
    ],
    extra: {
      policy: {
        default: 'allow',
        rules: [
          { name: 'no-8098', action: 'deny', cidrs: [`${ADDR.server4}/32`], ports: ['8098'] },
          ...(extraRule ? [{ name: 'no-8097', action: 'deny', cidrs: [`${ADDR.server4}/32`], ports: ['8097'] }] : []),
        ],
      },
    },
  };
}

describe('per-listener counters', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'lstats' });
    await lab.startServer('identity', ['--listen', `${ADDR.server4}:8080`, '--id', 'P', '--quiet']);
    await lab.startServer('identity', ['--listen', `${ADDR.server4}:8081`, '--id', 'S', '--quiet']);
    await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:8082`, '--id', 'W']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    await lab.redirect({ dport: [8081, 8099], toPort: 15002, family: 4 });
    sg = await Splicegate.start(lab, config(false));
  });

  after(() => disposeLab(sg, lab));

  const proxy = (): Splicegate => started(sg);

  it('three listeners, different traffic: each listener.<name>.* counter is exactly its own, in /stats and Prometheus', { timeout: 90000 }, () =>
    withDiagnostics(lab, sg, async () => {
      // plain: 4 relayed. strict: 2 relayed, 3 denied by its own policy. web: 3 HTTP requests
      // relayed, 1 answered 403 by the top-level policy (one connection each: curl without reuse).
      const plain = await connectMany(lab, { target: `${ADDR.server4}:8080`, n: 4, expectId: 'P' });
      assert.equal(plain.ok, 4, JSON.stringify(plain.errors));
      const strict = await connectMany(lab, { target: `${ADDR.server4}:8081`, n: 2, expectId: 'S' });
      assert.equal(strict.ok, 2, JSON.stringify(strict.errors));
      for (let i = 0; i < 3; ++i) {
        const denied = await probe(lab, { target: `${ADDR.server4}:8099`, waitMs: 3000 });
        assert.equal(denied.closeKind, 'reset', JSON.stringify(denied));
      }
      for (let i = 0; i < 3; ++i) {
        const r = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:8082`, `http://${WEB}/r${i}`]);
        assert.equal(r.status, 200, JSON.stringify(r));
      }
      const forbidden = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:8098`, `http://${WEB}/no`]);
      assert.equal(forbidden.status, 403, JSON.stringify(forbidden));

      const s = await proxy().waitStats((x) => x.downstream_cx_total === 13 && x.downstream_cx_active === 0, 20000, 'all 13 connections counted and closed');
      assert.deepEqual(listenerCounts(s, 'plain'), counts({ downstream_cx_total: 4 }));
      assert.deepEqual(listenerCounts(s, 'strict'), counts({ downstream_cx_total: 5, policy_denied: 3 }));
      assert.deepEqual(listenerCounts(s, 'web'), counts({ downstream_cx_total: 4, policy_denied: 1 }));
      // The per-listener counters add up to the process's own.
      for (const stat of STATS) {
        const sum = ['plain', 'strict', 'web'].reduce((acc, l) => acc + counter(s, `listener.${l}.${stat}`), 0);
        assert.equal(sum, counter(s, stat), stat);
      }

      const prom = await proxy().adminGet('/stats/prometheus');
      assert.equal(prom.status, 200);
      assert.match(prom.body, /^# TYPE splicegate_listener_downstream_cx_total counter$/m);
      assert.match(prom.body, /^splicegate_listener_downstream_cx_total\{listener="plain"\} 4$/m);
      assert.match(prom.body, /^splicegate_listener_downstream_cx_total\{listener="strict"\} 5$/m);
      assert.match(prom.body, /^splicegate_listener_downstream_cx_total\{listener="web"\} 4$/m);
      assert.match(prom.body, /^splicegate_listener_policy_denied_total\{listener="strict"\} 3$/m);
      assert.match(prom.body, /^# TYPE splicegate_listener_downstream_cx_active gauge$/m);
      assert.match(prom.body, /^splicegate_listener_downstream_cx_active\{listener="web"\} 0$/m);
    }),
  );

  it('a reload that keeps the listeners: their totals keep counting up, never reset', { timeout: 90000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const before = await proxy().stats();
      const was = { plain: counter(before, 'listener.plain.downstream_cx_total'), strict: counter(before, 'listener.strict.downstream_cx_total') };
      fs.writeFileSync(proxy().configPath, Splicegate.buildConfig(config(true)));
      const r = await proxy().adminPost('/reload');
      assert.equal(r.status, 200, r.body);
      // The first generation retires once its (no) connections are done: its totals join the retired ones.
      const retired = await proxy().waitStats((x) => counter(x, 'config_generations_live') === 1 && counter(x, 'config_generation') === 2, 30000, 'generation 1 retired');
      assert.equal(counter(retired, 'listener.plain.downstream_cx_total'), was.plain);
      assert.equal(counter(retired, 'listener.strict.downstream_cx_total'), was.strict);

      const more = await connectMany(lab, { target: `${ADDR.server4}:8080`, n: 3, expectId: 'P' });
      assert.equal(more.ok, 3, JSON.stringify(more.errors));
      const s = await proxy().waitStats((x) => counter(x, 'listener.plain.downstream_cx_total') === was.plain + 3 && x.downstream_cx_active === 0, 20000, '3 more on plain');
      assert.deepEqual(listenerCounts(s, 'plain'), counts({ downstream_cx_total: was.plain + 3 }));
      assert.equal(counter(s, 'listener.strict.downstream_cx_total'), was.strict, 'no new traffic on strict');
    }),
  );
});
