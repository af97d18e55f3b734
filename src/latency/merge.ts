// Merges the workers' exports into hdr-histogram-js histograms: one per metric for the proxy as a
// whole, one per metric and host (a host seen by several workers is merged by address), one per
// metric for "other hosts". Recording each exported bucket's lowest value with its count rebuilds
// the core's buckets exactly, so merging N workers equals recording every value into one.
//
// CPU-bound for many hosts: the admin endpoint runs it on the merge pool (merge-pool.ts).

import { build, type Histogram } from 'hdr-histogram-js';
import type { LatencyMetricName } from './metrics';
import { decodeLatencySets, forEachPair, type HistogramBlock, type HistogramSet } from './native-format';
import type { WorkerLatencyExport } from './source';

/** A merged histogram and the exact figures the buckets alone would only approximate. */
export interface MergedHistogram {
  histogram: Histogram;
  /** Sum of recorded values (µs). */
  sum: number;
  /** Largest recorded value (µs); histogram.maxValue is only its bucket's lowest value. */
  max: number;
  clampedCount: number;
}

/** One histogram per metric, some metrics possibly absent. */
export type LatencySet<H> = Partial<Record<LatencyMetricName, H>>;

/** Every worker's latency merged into one view: the shape behind /latency and its hdr export. */
export interface LatencySets<H> {
  workers: number;
  global: LatencySet<H>;
  /** Busiest first (by connection count: the connect histogram's total). */
  hosts: Array<{ address: string; set: LatencySet<H> }>;
  otherHosts: LatencySet<H>;
}

export type MergedSet = LatencySet<MergedHistogram>;
export type MergedLatency = LatencySets<MergedHistogram>;

/** An hdr-histogram-js histogram with the core's layout (lowestDiscernibleValue 1). */
export function histogramLike(block: Pick<HistogramBlock, 'significantDigits' | 'highestTrackableValue'>): Histogram {
  return build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: block.highestTrackableValue,
    numberOfSignificantValueDigits: block.significantDigits as 1 | 2 | 3 | 4 | 5,
    bitBucketSize: 64,
    autoResize: false,
  });
}

/** Adds one exported block into target (created with the block's layout if absent). */
export function addBlock(target: MergedHistogram | undefined, block: HistogramBlock): MergedHistogram {
  const merged = target ?? { histogram: histogramLike(block), sum: 0, max: 0, clampedCount: 0 };
  const limit = merged.histogram.highestTrackableValue;
  forEachPair(block, (value, count) => merged.histogram.recordValueWithCount(Math.min(value, limit), count));
  merged.sum += block.sum;
  merged.max = Math.max(merged.max, block.max);
  merged.clampedCount += block.clampedCount;
  return merged;
}

export function addSet(target: MergedSet, set: HistogramSet): void {
  for (const block of Object.values(set)) {
    if (block !== undefined) target[block.metric] = addBlock(target[block.metric], block);
  }
}

export function mergeExports(workerExports: readonly WorkerLatencyExport[]): MergedLatency {
  const global: MergedSet = {};
  const otherHosts: MergedSet = {};
  const hosts = new Map<string, MergedSet>();
  for (const worker of workerExports) {
    for (const set of decodeLatencySets(worker.global)) addSet(global, set);
    for (const set of decodeLatencySets(worker.otherHosts)) addSet(otherHosts, set);
    const hostSets = decodeLatencySets(worker.hosts);
    hostSets.forEach((set, i) => {
      const address = worker.hostAddresses[i];
      if (address === undefined) return;
      let target = hosts.get(address);
      if (target === undefined) hosts.set(address, (target = {}));
      addSet(target, set);
    });
  }
  const ranked = [...hosts.entries()]
    .map(([address, set]) => ({ address, set }))
    .sort((a, b) => connections(b.set) - connections(a.set) || a.address.localeCompare(b.address));
  return { workers: workerExports.length, global, hosts: ranked, otherHosts };
}

/**
 * Connections to a host: its connects; for a host whose connects all failed (no connect sample, but
 * a duration for each), its closed connections. A host's sets always hold a connect block, so
 * the fallback has to test for 0, not for a missing block.
 */
export function hostConnections(connects: number, durations: number): number {
  return connects > 0 ? connects : durations;
}

function connections(set: MergedSet): number {
  return hostConnections(set.connect?.histogram.totalCount ?? 0, set.duration?.histogram.totalCount ?? 0);
}
