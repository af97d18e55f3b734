// Per-listener counters on the control side: the addon appends listenerStatNames per attached
// listener to every stats block, the names are listener.<name>.<stat>, sums across generations
// never go backwards (gauges excepted), and Prometheus shows one family per stat with a listener
// label. The counting itself is checked in cpp/test/core_tests.cc and test/integration/listener-stats.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadBinding } from '../src/native/binding';
import { CounterAggregator, isGauge } from '../src/stats/counters';
import { listenerCounterNames, parseListenerCounter } from '../src/stats/listeners';
import { prometheusText } from '../src/stats/prometheus';

const STATS = ['downstream_cx_total', 'downstream_cx_active', 'downstream_cx_overflow', 'no_original_dst', 'loop_rejected', 'policy_denied'];

test('names: listener.<name>.<stat> per listener in attach order; a dotted listener name parses back', () => {
  assert.deepEqual(listenerCounterNames(['a', 'b.c'], ['downstream_cx_total', 'downstream_cx_active']), [
    'listener.a.downstream_cx_total',
    'listener.a.downstream_cx_active',
    'listener.b.c.downstream_cx_total',
    'listener.b.c.downstream_cx_active',
  ]);
  assert.deepEqual(parseListenerCounter('listener.b.c.downstream_cx_total'), { listener: 'b.c', stat: 'downstream_cx_total' });
  assert.equal(parseListenerCounter('listeners_active'), undefined);
  assert.equal(parseListenerCounter('listener.x'), undefined);
  assert.equal(isGauge('listener.b.c.downstream_cx_active'), true);
  assert.equal(isGauge('listener.b.c.downstream_cx_total'), false);
});

test('the addon: listenerStatNames, and a worker block ends with them for each attached listener', () => {
  const binding = loadBinding();
  assert.deepEqual([...binding.listenerStatNames], STATS);
  const worker = new binding.NativeWorker({ connectTimeoutMs: 1000, idleTimeoutMs: 1000, upstreamMark: 0 });
  const options = (name: string) => ({ name, host: '127.0.0.1', port: 0, transparent: false, backlog: 8, policy: 0 });
  const sockets = [new binding.ListenSocket(options('one')), new binding.ListenSocket(options('two'))];
  try {
    assert.equal(worker.stats().length, binding.statNames.length, 'no listener, no listener slots');
    worker.attachListener(options('one'), sockets[0]?.fd ?? -1);
    worker.attachListener(options('two'), sockets[1]?.fd ?? -1);
    const values = worker.stats();
    assert.equal(values.length, binding.statNames.length + 2 * STATS.length);
    assert.deepEqual([...values.subarray(binding.statNames.length)], new Array<number>(2 * STATS.length).fill(0));
  } finally {
    worker.close();
    for (const s of sockets) s.close();
  }
});

test('summed across generations: a listener kept by a reload keeps counting up; its gauge is not retired', () => {
  const base = ['downstream_cx_total', 'downstream_cx_active'];
  const agg = new CounterAggregator(base);
  const gen1 = [...base, ...listenerCounterNames(['egress', 'gone'], ['downstream_cx_total', 'downstream_cx_active'])];
  const gen2 = [...base, ...listenerCounterNames(['egress'], ['downstream_cx_total', 'downstream_cx_active'])];
  const old = { names: gen1, values: Float64Array.from([9, 1, 7, 1, 2, 0]) };
  const fresh = { names: gen2, values: Float64Array.from([3, 2, 3, 2]) };
  const both = agg.sumBlocks([old, fresh]);
  assert.equal(both['listener.egress.downstream_cx_total'], 10);
  assert.equal(both['listener.egress.downstream_cx_active'], 3);
  agg.retire(old.values, old.names);
  const after = agg.sumBlocks([fresh]);
  assert.equal(after['listener.egress.downstream_cx_total'], 10, 'the retired generation total stays');
  assert.equal(after['listener.egress.downstream_cx_active'], 2, 'only live connections are active');
  assert.equal(after['listener.gone.downstream_cx_total'], 2, 'a listener the reload removed keeps its total');
  assert.equal(after['listener.gone.downstream_cx_active'], undefined);
});

test('Prometheus: one family per listener stat with a listener label; gauges typed as gauges', () => {
  const text = prometheusText({
    downstream_cx_total: 5,
    'listener.egress.downstream_cx_total': 3,
    'listener.http.in.downstream_cx_total': 2,
    'listener.egress.downstream_cx_active': 1,
    'listener.http.in.downstream_cx_active': 0,
  });
  assert.match(text, /^# TYPE splicegate_listener_downstream_cx_total counter$/m);
  assert.match(text, /^splicegate_listener_downstream_cx_total\{listener="egress"\} 3$/m);
  assert.match(text, /^splicegate_listener_downstream_cx_total\{listener="http\.in"\} 2$/m);
  assert.match(text, /^# TYPE splicegate_listener_downstream_cx_active gauge$/m);
  assert.match(text, /^splicegate_listener_downstream_cx_active\{listener="egress"\} 1$/m);
  assert.equal(text.match(/^# TYPE splicegate_listener_downstream_cx_total /gm)?.length, 1, 'one TYPE line for the family');
  assert.match(text, /^splicegate_downstream_cx_total 5$/m);
  assert.doesNotMatch(text, /listener\.egress/, 'no raw dotted names');
});
