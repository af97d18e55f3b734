// The native export format: the same bytes the C++ unit test pins (cpp/test/histogram_tests.cc,
// "export: format v1 layout"), the JS encoder's round trip, and malformed input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'hdr-histogram-js';
import { decodeLatencySets, encodeLatencySets, LatencyFormatError } from '../../src/latency/native-format';
import { blockOf, latencies, lowestEquivalent } from './helpers';

// Identical to `expected` in cpp/test/histogram_tests.cc: change both or neither.
const CORE_FIXTURE = [
  1, 2,
  1, 0, 3, 3600000000, 6, 5007502, 5000000, 0, 3, 1, 2, 2500, 3, 4997120, 1,
  1, 2, 2, 3600000000, 3, 3600251500, 3600000000, 1, 3, 1496, 1, 249856, 1, 3590324224, 1,
];

test('decodes the core fixture: sets, layout, totals and pairs', () => {
  const sets = decodeLatencySets(Float64Array.from(CORE_FIXTURE));
  assert.equal(sets.length, 2);
  const connect = sets[0]?.connect;
  assert.ok(connect);
  assert.equal(connect.significantDigits, 3);
  assert.equal(connect.highestTrackableValue, 3_600_000_000);
  assert.equal(connect.totalCount, 6);
  assert.equal(connect.sum, 5_007_502);
  assert.equal(connect.max, 5_000_000);
  assert.deepEqual([...connect.pairs], [1, 2, 2500, 3, 4997120, 1]);
  const ttfb = sets[1]?.ttfb;
  assert.ok(ttfb);
  assert.equal(ttfb.significantDigits, 2);
  assert.equal(ttfb.clampedCount, 1);
  assert.deepEqual([...ttfb.pairs], [1496, 1, 249856, 1, 3590324224, 1]);
});

test('the JS re-implementation of the core produces the core fixture', () => {
  const encoded = encodeLatencySets([
    { connect: blockOf('connect', [1, 1, 2500, 2500, 2500, 5_000_000], 3) },
    { ttfb: blockOf('ttfb', [1500, 250_000, 4_000_000_000], 2) },
  ]);
  assert.deepEqual([...encoded], CORE_FIXTURE);
});

test('bucket floors agree with hdr-histogram-js for 1..3 digits', () => {
  for (const digits of [1, 2, 3] as const) {
    const h = build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: digits, bitBucketSize: 64, autoResize: false });
    const js = h as unknown as { lowestEquivalentValue(v: number): number };
    for (const v of [0, 1, 31, 32, 255, 256, 2047, 2048, 2049, 4097, 99_999, 123_456, 1_000_000, 3_599_999_999, ...latencies(500, 20_000, digits)]) {
      assert.equal(lowestEquivalent(v, digits), js.lowestEquivalentValue(v), `value ${v}, ${digits} digits`);
    }
  }
});

test('decode(encode(x)) round-trips every field', () => {
  const sets = [
    { connect: blockOf('connect', latencies(1000, 800, 1)), duration: blockOf('duration', latencies(100, 5_000_000, 2)) },
    {},
    { ttfb: blockOf('ttfb', [], 2), proxy_overhead: blockOf('proxy_overhead', [3, 4, 5], 3) },
  ];
  const decoded = decodeLatencySets(encodeLatencySets(sets));
  assert.deepEqual(decoded, sets);
});

test('unknown metric ids are skipped (a newer core), bad input is an error', () => {
  const unknownMetric = [1, 1, 2, 9, 3, 3600, 1, 5, 5, 0, 1, 5, 1, 0, 3, 3600, 1, 7, 7, 0, 1, 7, 1];
  const [set] = decodeLatencySets(unknownMetric);
  assert.deepEqual(Object.keys(set ?? {}), ['connect']);
  assert.throws(() => decodeLatencySets([2, 0]), LatencyFormatError);
  assert.throws(() => decodeLatencySets([1, 1, 1, 0, 3]), /truncated/);
  assert.throws(() => decodeLatencySets([1, 0, 7]), /trailing/);
  assert.throws(() => decodeLatencySets([1, -1]), /bad setCount/);
});
