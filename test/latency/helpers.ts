// Test helpers: a JavaScript re-implementation of what the core records and exports (HdrHistogram
// bucket floors for lowestDiscernibleValue 1, blocks, worker exports), and a static LatencySource.

import { LATENCY_METRICS, type LatencyMetricName } from '../../src/latency/metrics';
import { encodeLatencySets, type HistogramBlock, type HistogramSet } from '../../src/latency/native-format';
import type { LatencySource, WorkerLatencyExport } from '../../src/latency/source';

export const HOUR_US = 3_600_000_000;

/** HdrHistogram's lowest equivalent value (lowestDiscernibleValue 1), as cpp/core/hdr_histogram.h. */
export function lowestEquivalent(value: number, digits: number): number {
  let subBucketCountMagnitude = 0;
  while (2 ** subBucketCountMagnitude < 2 * 10 ** digits) subBucketCountMagnitude++;
  const subBucketCount = 2 ** subBucketCountMagnitude;
  if (value < subBucketCount) return value;
  let bucket = 0;
  while (value >= subBucketCount * 2 ** bucket) bucket++;
  const unit = 2 ** bucket;
  return Math.floor(value / unit) * unit;
}

/** The block the core would export after recording values (clamped at highest). */
export function blockOf(metric: LatencyMetricName, values: readonly number[], digits = 3, highest = HOUR_US): HistogramBlock {
  const counts = new Map<number, number>();
  let sum = 0;
  let max = 0;
  let clampedCount = 0;
  for (const raw of values) {
    const v = Math.min(raw, highest);
    if (raw > highest) clampedCount++;
    const floor = lowestEquivalent(v, digits);
    counts.set(floor, (counts.get(floor) ?? 0) + 1);
    sum += v;
    max = Math.max(max, v);
  }
  const pairs = [...counts.entries()].sort((a, b) => a[0] - b[0]).flat();
  return {
    metric,
    significantDigits: digits,
    highestTrackableValue: highest,
    totalCount: values.length,
    sum,
    max,
    clampedCount,
    pairs: Float64Array.from(pairs),
  };
}

export type Recorded = Partial<Record<LatencyMetricName, number[]>>;

function setOf(recorded: Recorded, metrics: readonly LatencyMetricName[], digits: number): HistogramSet {
  const set: HistogramSet = {};
  for (const m of metrics) set[m] = blockOf(m, recorded[m] ?? [], digits);
  return set;
}

const HOST_METRICS: readonly LatencyMetricName[] = ['connect', 'ttfb', 'duration'];

/** A worker export as the addon would return it: global at 3 digits, hosts at 2. */
export function workerExport(global: Recorded, hosts: Record<string, Recorded> = {}, other: Recorded = {}): WorkerLatencyExport {
  const addresses = Object.keys(hosts);
  return {
    global: encodeLatencySets([setOf(global, LATENCY_METRICS, 3)]),
    hostAddresses: addresses,
    hosts: encodeLatencySets(addresses.map((a) => setOf(hosts[a] ?? {}, HOST_METRICS, 2))),
    otherHosts: encodeLatencySets([setOf(other, HOST_METRICS, 2)]),
  };
}

export class StaticSource implements LatencySource {
  constructor(public workerExports: WorkerLatencyExport[]) {}
  async collect(): Promise<WorkerLatencyExport[]> {
    return this.workerExports;
  }
}

/** Deterministic pseudo-random latencies: log-normal around medianUs (xorshift, no dependency). */
export function latencies(count: number, medianUs: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  const next = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 2 ** 32;
  };
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const z = Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());
    out.push(Math.max(1, Math.round(medianUs * Math.exp(0.8 * z))));
  }
  return out;
}
