// The latency of workers that are gone (a worker that died, a config generation retired by a
// reload), folded into one export. Every total keeps their samples however many workers come and
// go: dropping the oldest ones instead made /latency counts and the Prometheus histograms go
// backwards after a few reloads (Prometheus takes that for a reset). Memory stays bounded: one
// set of global histograms, at most maxHosts hosts of their own, the rest folded into "other
// hosts" (a sample is never lost, only its attribution, as in the core's host table).

import { hostConnections } from './merge';
import { decodeLatencySets, encodeLatencySets, forEachPair, type HistogramBlock, type HistogramSet } from './native-format';
import type { WorkerLatencyExport } from './source';

/** Hosts the folded export keeps by address (the busiest); four times a worker's tracked hosts. */
export const MAX_RETIRED_HOSTS = 256;

export class RetiredLatency {
  private readonly global: HistogramSet = {};
  private readonly otherHosts: HistogramSet = {};
  private readonly hosts = new Map<string, HistogramSet>();
  private folded = false;
  private cached: WorkerLatencyExport | undefined;

  constructor(private readonly maxHosts = MAX_RETIRED_HOSTS) {}

  /** Adds gone workers' last exports into the fold. */
  add(exports: readonly WorkerLatencyExport[]): void {
    for (const e of exports) {
      for (const set of decodeLatencySets(e.global)) addSetInto(this.global, set);
      for (const set of decodeLatencySets(e.otherHosts)) addSetInto(this.otherHosts, set);
      decodeLatencySets(e.hosts).forEach((set, i) => {
        const address = e.hostAddresses[i];
        if (address === undefined) return addSetInto(this.otherHosts, set);
        let target = this.hosts.get(address);
        if (target === undefined) this.hosts.set(address, (target = {}));
        addSetInto(target, set);
      });
      this.folded = true;
      this.cached = undefined;
    }
    this.bound();
  }

  /** Nothing before any worker is gone; then one export holding all of them. */
  exports(): WorkerLatencyExport[] {
    if (!this.folded) return [];
    this.cached ??= {
      global: encodeLatencySets([this.global]),
      hostAddresses: [...this.hosts.keys()],
      hosts: encodeLatencySets([...this.hosts.values()]),
      otherHosts: encodeLatencySets([this.otherHosts]),
    };
    return [this.cached];
  }

  private bound(): void {
    if (this.hosts.size <= this.maxHosts) return;
    const quietest = [...this.hosts.entries()].sort((a, b) => connections(b[1]) - connections(a[1])).slice(this.maxHosts);
    for (const [address, set] of quietest) {
      for (const block of Object.values(set)) if (block !== undefined) addBlockInto(this.otherHosts, block);
      this.hosts.delete(address);
    }
  }
}

function connections(set: HistogramSet): number {
  return hostConnections(set.connect?.totalCount ?? 0, set.duration?.totalCount ?? 0);
}

function addSetInto(target: HistogramSet, set: HistogramSet): void {
  for (const block of Object.values(set)) if (block !== undefined) addBlockInto(target, block);
}

/**
 * Sums a block into target's block of the same metric: bucket counts by bucket value (the blocks of
 * one metric share the core's layout, so equal values are the same bucket), totals added, max kept.
 */
function addBlockInto(target: HistogramSet, block: HistogramBlock): void {
  const had = target[block.metric];
  if (had === undefined) {
    target[block.metric] = { ...block, pairs: Float64Array.from(block.pairs) };
    return;
  }
  const counts = new Map<number, number>();
  const add = (value: number, count: number): void => void counts.set(value, (counts.get(value) ?? 0) + count);
  forEachPair(had, add);
  forEachPair(block, add);
  const values = [...counts.keys()].sort((a, b) => a - b);
  const pairs = new Float64Array(values.length * 2);
  values.forEach((value, i) => {
    pairs[2 * i] = value;
    pairs[2 * i + 1] = counts.get(value) ?? 0;
  });
  target[block.metric] = {
    ...had,
    totalCount: had.totalCount + block.totalCount,
    sum: had.sum + block.sum,
    max: Math.max(had.max, block.max),
    clampedCount: had.clampedCount + block.clampedCount,
    pairs,
  };
}
