// Prometheus histogram exposition: cumulative buckets, +Inf equal to _count, _sum in seconds, and a
// text a Prometheus parser accepts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatPrometheusHistograms, prometheusHistograms, PROMETHEUS_LE_SECONDS } from '../../src/latency/prometheus';
import { latencies, workerExport } from './helpers';
// parse-prometheus-text-format ships no types: it returns metric families.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const parsePrometheus = require('parse-prometheus-text-format') as (text: string) => Array<{
  name: string;
  type: string;
  metrics: Array<{ buckets?: Record<string, string>; count?: string; sum?: string }>;
}>;

test('buckets are cumulative and consistent with _count and _sum', () => {
  const a = latencies(5000, 2_000, 1);
  const b = [...latencies(3000, 40_000, 2), 7_200_000_000]; // one above 1 h: clamped, still counted
  const histograms = prometheusHistograms([workerExport({ connect: a, duration: b }), workerExport({ connect: [50, 100, 101] })]);
  const connect = histograms.find((h) => h.name === 'splicegate_connect_duration_seconds');
  assert.ok(connect);
  assert.equal(connect.count, a.length + 3);
  for (let i = 1; i < connect.buckets.length; i++) assert.ok((connect.buckets[i] ?? 0) >= (connect.buckets[i - 1] ?? 0));
  // le="0.00005" holds the 50 us sample; le="0.0001" adds 100 (101 is in a later bucket).
  assert.equal(connect.buckets[0], a.filter((v) => v <= 50).length + 1);
  assert.equal(connect.buckets[1], a.filter((v) => v <= 100).length + 2);
  // Each bucket within HDR precision of the exact count of values <= le.
  const all = [...a, 50, 100, 101];
  PROMETHEUS_LE_SECONDS.forEach((le, i) => {
    const exact = all.filter((v) => v <= le * 1e6).length;
    const got = connect.buckets[i] ?? 0;
    const tolerance = all.filter((v) => v > le * 1e6 && v <= le * 1e6 * 1.001).length;
    assert.ok(got >= exact && got <= exact + tolerance, `le=${le}: ${got} vs exact ${exact}`);
  });
  const sum = all.reduce((s, v) => s + v, 0) / 1e6;
  assert.ok(Math.abs(connect.sumSeconds - sum) < 1e-9);
  const duration = histograms.find((h) => h.name === 'splicegate_connection_duration_seconds');
  assert.equal(duration?.count, b.length);
  assert.equal(duration?.buckets[duration.buckets.length - 1], b.length); // le=3600 holds the clamped one
});

test('the exposition text parses, with +Inf equal to _count for every metric', () => {
  const text = formatPrometheusHistograms(prometheusHistograms([workerExport({ connect: latencies(1000, 800, 5), ttfb: [10, 20] })]));
  const families = parsePrometheus(text);
  assert.deepEqual(families.map((f) => f.name).sort(), [
    'splicegate_connect_duration_seconds',
    'splicegate_connection_duration_seconds',
    'splicegate_proxy_overhead_seconds',
    'splicegate_ttfb_seconds',
  ]);
  for (const family of families) {
    assert.equal(family.type, 'HISTOGRAM');
    const [metric] = family.metrics;
    assert.ok(metric?.buckets);
    assert.equal(Object.keys(metric.buckets).length, PROMETHEUS_LE_SECONDS.length + 1);
    assert.equal(metric.buckets['+Inf'], metric.count);
  }
  assert.match(text, /^splicegate_ttfb_seconds_bucket\{le="0.00005"\} 2$/m);
  assert.match(text, /^splicegate_ttfb_seconds_sum 0.00003$/m);
  assert.match(text, /^splicegate_proxy_overhead_seconds_count 0$/m);
});
