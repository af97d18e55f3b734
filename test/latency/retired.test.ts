// Gone workers' latency folded into one export (src/latency/retired.ts): merging the fold gives
// exactly what merging every gone worker's export gave, and the hosts it keeps are bounded with
// no sample lost.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeIntoCompressedBase64 } from 'hdr-histogram-js';
import { mergeExports, type MergedSet } from '../../src/latency/merge';
import { RetiredLatency } from '../../src/latency/retired';
import { latencies, workerExport } from './helpers';

function encoded(set: MergedSet): Record<string, string> {
  return Object.fromEntries(Object.entries(set).map(([m, h]) => [m, `${encodeIntoCompressedBase64(h.histogram)} sum=${h.sum} max=${h.max} clamped=${h.clampedCount}`]));
}

test('nothing folded: no export; folded workers merge exactly as the workers themselves', () => {
  const retired = new RetiredLatency();
  assert.deepEqual(retired.exports(), []);
  const workers = Array.from({ length: 20 }, (_, i) =>
    workerExport(
      { connect: latencies(500, 300 + i * 50, i + 1), ttfb: latencies(200, 5_000, i + 40), duration: [4_000_000_000] },
      { '10.0.0.7:443': { connect: latencies(100, 700, i + 80) }, [`10.0.1.${i}:80`]: { ttfb: [i + 1] } },
      { connect: [i + 3] },
    ),
  );
  // In batches, as reloads and worker deaths hand them over.
  retired.add(workers.slice(0, 1));
  retired.add(workers.slice(1, 12));
  retired.add(workers.slice(12));
  assert.equal(retired.exports().length, 1);
  const fold = mergeExports(retired.exports());
  const all = mergeExports(workers);
  assert.deepEqual(encoded(fold.global), encoded(all.global));
  assert.deepEqual(encoded(fold.otherHosts), encoded(all.otherHosts));
  assert.deepEqual(fold.hosts.map((h) => h.address), all.hosts.map((h) => h.address));
  fold.hosts.forEach((h, i) => assert.deepEqual(encoded(h.set), encoded(all.hosts[i]?.set ?? {}), h.address));
  assert.equal(fold.global.duration?.clampedCount, 20);
});

test('over maxHosts: the quietest hosts go to other hosts, and every sample stays', () => {
  const retired = new RetiredLatency(2);
  retired.add([
    workerExport({}, { 'a:1': { connect: [1, 2, 3] }, 'b:1': { connect: [4] } }, { connect: [5] }),
    workerExport({}, { 'c:1': { connect: [6, 7] }, 'a:1': { connect: [8] } }),
  ]);
  const fold = mergeExports(retired.exports());
  assert.deepEqual(fold.hosts.map((h) => [h.address, h.set.connect?.histogram.totalCount]), [['a:1', 4], ['c:1', 2]]);
  assert.equal(fold.otherHosts.connect?.histogram.totalCount, 2, 'b:1 and the other hosts');
  assert.equal(fold.otherHosts.connect?.sum, 9);
});
