// Merging across workers and hosts, the /latency JSON and text views, and the merge pool (a worker
// thread) giving the same answers without stalling the main thread.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { build, encodeIntoCompressedBase64 } from 'hdr-histogram-js';
import { formatLatencyText } from '../../src/latency/latency-text';
import { latencyResponse, renderLatencyJson } from '../../src/latency/latency-views';
import { mergeExports } from '../../src/latency/merge';
import { decodeHdrExport, hdrExport } from '../../src/latency/hdr-export';
import type { LatencyReport } from '../../src/latency/report-data';
import { renderReportText } from '../../src/latency/report-text';
import { closeLatencyPool, runOnMergePool } from '../../src/latency/merge-pool';
import { summarizeLatency } from '../../src/latency/summary';
import { latencies, StaticSource, workerExport } from './helpers';

after(() => closeLatencyPool());

function direct(values: number[], digits: 2 | 3) {
  const h = build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: digits, bitBucketSize: 64, autoResize: false });
  for (const v of values) h.recordValue(v);
  return h;
}

test('merging two workers equals recording every value into one histogram', () => {
  const a = latencies(20_000, 900, 11);
  const b = latencies(15_000, 2_500, 12);
  const merged = mergeExports([workerExport({ connect: a }), workerExport({ connect: b })]);
  const m = merged.global.connect;
  assert.ok(m);
  const all = direct([...a, ...b], 3);
  assert.equal(m.histogram.totalCount, all.totalCount);
  // Same buckets, same counts: the standard compressed encodings are identical.
  assert.equal(encodeIntoCompressedBase64(m.histogram), encodeIntoCompressedBase64(all));
  for (const p of [0, 10, 50, 90, 99, 99.9, 99.99, 100]) assert.equal(m.histogram.getValueAtPercentile(p), all.getValueAtPercentile(p), `p${p}`);
  assert.equal(m.sum, [...a, ...b].reduce((s, v) => s + v, 0));
  assert.equal(m.max, Math.max(...a, ...b));
});

test('hosts are merged by address across workers, busiest first; other hosts summed', () => {
  const w1 = workerExport({}, { '10.0.0.7:443': { connect: [100, 200], ttfb: [1000] }, '10.0.0.8:80': { connect: [50] } }, { connect: [7] });
  const w2 = workerExport({}, { '10.0.0.8:80': { connect: [60, 70, 80] } }, { connect: [9, 11] });
  const merged = mergeExports([w1, w2]);
  assert.deepEqual(merged.hosts.map((h) => h.address), ['10.0.0.8:80', '10.0.0.7:443']);
  const host8 = merged.hosts[0]?.set.connect;
  assert.equal(host8?.histogram.totalCount, 4);
  assert.equal(merged.otherHosts.connect?.histogram.totalCount, 3);
  // A 2-digit host histogram merges with 2-digit precision (< 0.8% error), exactly.
  const all = direct([50, 60, 70, 80], 2);
  assert.equal(host8 && encodeIntoCompressedBase64(host8.histogram), encodeIntoCompressedBase64(all));
});

test('JSON summary follows the contract shape', () => {
  const values = latencies(10_000, 1_000, 3);
  const summary = summarizeLatency(mergeExports([workerExport({ connect: values, ttfb: [5000] }, { '10.0.0.7:443': { connect: values } })]));
  assert.equal(summary.unit, 'us');
  assert.deepEqual(Object.keys(summary.global).sort(), ['connect', 'duration', 'proxy_overhead', 'ttfb']);
  for (const s of Object.values(summary.global)) {
    for (const key of ['count', 'p50', 'p90', 'p99', 'p999', 'max']) assert.equal(typeof (s as unknown as Record<string, unknown>)[key], 'number');
  }
  assert.deepEqual(Object.keys(summary.hosts['10.0.0.7:443'] ?? {}).sort(), ['connect', 'duration', 'ttfb']);
  const c = summary.global.connect;
  assert.equal(c.count, 10_000);
  assert.ok(c.p50 <= c.p90 && c.p90 <= c.p99 && c.p99 <= c.p999 && c.p999 <= c.max);
  const sorted = [...values].sort((x, y) => x - y);
  const exactP99 = sorted[Math.ceil(0.99 * sorted.length) - 1] ?? 0;
  assert.ok(Math.abs(c.p99 - exactP99) / exactP99 < 0.001, `p99 ${c.p99} vs exact ${exactP99}`);
  assert.equal(c.max, sorted[sorted.length - 1]);
  assert.deepEqual(summary.global.duration, { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 });
  assert.equal(summary.global.ttfb.p50, 5000);
  assert.equal(summary.global.ttfb.max, 5000);

  const text = formatLatencyText(summary);
  assert.match(text, /^latency in microseconds, merged over 1 worker\n/);
  assert.match(text, /\nconnect +10000 /);
  // An empty histogram's row has its count and no percentiles (the JSON form has zeros).
  assert.match(text, /\nduration +0 +- +- +- +- +- +-\n/);
  assert.match(text, /\n10\.0\.0\.7:443\n {2} +count/);
  assert.match(text, /\nother hosts\n/);
});

test('the merge pool answers like the inline merge, and the main thread keeps ticking', async () => {
  const hosts: Record<string, { connect: number[]; ttfb: number[]; duration: number[] }> = {};
  for (let i = 0; i < 64; i++) hosts[`10.0.${i}.1:443`] = { connect: latencies(300, 500 + i, i), ttfb: latencies(300, 2000, i + 1), duration: latencies(300, 90_000, i + 2) };
  const workerExports = Array.from({ length: 6 }, (_, w) => workerExport({ connect: latencies(5000, 700, w), duration: latencies(5000, 100_000, w) }, hosts));

  // What the main thread would be blocked for if the three merges ran on it: the pooled run must
  // keep it ticking well inside that. Relative, so a loaded machine slows both sides alike.
  const inlineStart = performance.now();
  for (let i = 0; i < 3; i++) summarizeLatency(mergeExports(workerExports));
  const inlineMs = performance.now() - inlineStart;
  assert.ok(inlineMs > 100, `the merges must take long enough inline (${inlineMs.toFixed(0)} ms) for the check to mean something`);

  let maxGapMs = 0;
  let ticks = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    ticks += 1;
  }, 5);
  const [pooled] = await Promise.all([runOnMergePool('summary', workerExports), runOnMergePool('hdr', workerExports), runOnMergePool('summary', workerExports)]);
  clearInterval(ticker);
  assert.deepEqual(pooled, summarizeLatency(mergeExports(workerExports)));
  assert.equal(Object.keys(pooled.hosts).length, 64);
  assert.ok(ticks >= 2, `main thread ticked ${ticks} times during pooled merges`);
  assert.ok(maxGapMs < Math.max(50, inlineMs / 2), `main thread stalled ${maxGapMs.toFixed(0)} ms during pooled merges (inline: ${inlineMs.toFixed(0)} ms)`);
});

test('latencyResponse serves text, json and hdr, and refuses other formats', async () => {
  const source = new StaticSource([workerExport({ connect: [100, 200, 300] }, { '10.0.0.7:443': { connect: [100] } })]);
  const json = JSON.parse(await renderLatencyJson(source));
  assert.equal(json.global.connect.count, 3);
  const text = await latencyResponse(source, null);
  assert.equal(text.status, 200);
  assert.match(text.contentType, /^text\/plain/);
  const hdr = await latencyResponse(source, 'hdr');
  const parsed = JSON.parse(hdr.body);
  assert.equal(parsed.format, 'hdrhistogram-v2-compressed-base64');
  assert.equal(typeof parsed.global.connect, 'string');
  assert.equal(typeof parsed.hosts['10.0.0.7:443'].connect, 'string');
  const bad = await latencyResponse(source, 'xml');
  assert.equal(bad.status, 400);
});

test('a host whose connects all failed counts its closed connections: ranked, and shown, by them', () => {
  const w = workerExport({}, { '10.0.0.7:443': { connect: [100], duration: [500] }, '10.0.0.9:7777': { duration: [80, 90, 95] } });
  const merged = mergeExports([w]);
  assert.deepEqual(merged.hosts.map((h) => h.address), ['10.0.0.9:7777', '10.0.0.7:443']);
  const report: LatencyReport = { source: 's', description: 'd', global: {}, hosts: decodeHdrExport(hdrExport(merged)).hosts, otherHosts: {} };
  const row = renderReportText(report).split('\n').find((l) => l.startsWith('10.0.0.9:7777'));
  assert.match(row ?? '', /^10\.0\.0\.9:7777\s+3\s/, 'connections column');
});
