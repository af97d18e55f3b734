// The prototype relays in the benchmark (bench/cpp/proto_relay_*.cc): opt-in contenders whose
// per-core figures get their own ratio column against the best HAProxy variant, without ever
// becoming that reference themselves.
//   npx tsc -p tsconfig.json && node --test dist/bench/test/
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ALL_CONTENDERS, DEFAULT_CONTENDERS, PROTO_CONTENDERS } from '../lib/contenders';
import { type BenchResults, buildReport, type RunRecord } from '../lib/report';

function run(contender: RunRecord['contender'], rps: number): RunRecord {
  return {
    rep: 0,
    position: 0,
    workload: 'core-wrk-ka',
    contender,
    ok: true,
    metrics: { rps },
    bytes: 0,
    errors: 0,
    cpu: null,
    throttle: { nrPeriods: 20, nrThrottled: 10, throttledUs: 10000, quotaCores: 0.5, periodUs: 100000 },
  };
}

function results(ids: RunRecord['contender'][], runs: RunRecord[]): BenchResults {
  return {
    schema: 1,
    startedAt: '2026-11-28T00:00:00.000Z',
    wallSeconds: 1,
    machine: { cpus: 2 },
    settings: {
      quick: false,
      reps: 1,
      durations: { iperf: 2, wrk: 2, sweep: 2, idleConns: 10, pacedGbit: 2 },
      sweep: [],
      threads: 1,
      nice: 0,
      proxyCpus: '1',
      loadCpus: '0',
      pinning: {},
      sgTuning: {},
      serverAddr: '10.10.2.2',
      noiseShare: 0.1,
      retries: 0,
      perCore: { quotaCores: 0.5, periodUs: 100000, workloads: ['core-wrk-ka'] },
    },
    contenders: ids.map((id) => ({ id, label: id, notes: '', config: '' })),
    servers: { nginx: '' },
    workloads: [{ id: 'core-wrk-ka', title: 'wrk keep-alive (per core)', group: 'percore', metric: 'rps', unit: 'req/s', higherIsBetter: true }],
    verifications: [],
    runs,
    proxyStats: {},
    warnings: [],
  };
}

test('the prototype relays run only when named: not in the default set', () => {
  assert.deepEqual([...PROTO_CONTENDERS], ['proto-epoll', 'proto-uring']);
  for (const id of PROTO_CONTENDERS) {
    assert.ok(ALL_CONTENDERS.includes(id));
    assert.ok(!DEFAULT_CONTENDERS.includes(id));
  }
  assert.deepEqual([...DEFAULT_CONTENDERS], ['direct', 'splicegate', 'haproxy', 'haproxy-splice-auto', 'haproxy-splice', 'node-pipe']);
});

test('per core: each prototype relay gets a ratio to the best HAProxy variant and is never the reference', () => {
  const ids: RunRecord['contender'][] = ['splicegate', 'haproxy', 'proto-epoll', 'proto-uring'];
  const r = buildReport(results(ids, [run('splicegate', 12000), run('haproxy', 10000), run('proto-epoll', 13000), run('proto-uring', 15000)]));
  const t = r.targets.find((x) => x.id === 'core-wrk-ka');
  assert.equal(t?.referenceContender, 'haproxy', 'the faster proto-uring is not the HAProxy reference');
  assert.equal(t?.ratio, 1.2);
  assert.match(r.markdown, /\| splicegate \/ best HAProxy \| proto-epoll \/ best HAProxy \| proto-uring \/ best HAProxy \|/);
  assert.match(r.markdown, /\| 1\.20x \(haproxy\) \| 1\.30x \| 1\.50x \|/);

  // Without them the table keeps its old shape.
  const plain = buildReport(results(['splicegate', 'haproxy'], [run('splicegate', 12000), run('haproxy', 10000)]));
  assert.doesNotMatch(plain.markdown, /proto-/);
  assert.match(plain.markdown, /\| splicegate \/ best HAProxy \|\n/);
});
