// Decoder (and a JavaScript encoder, for tests and synthetic sources) of the core's latency export
// format, version 1. The C++ side is cpp/core/latency_export.h; docs/LATENCY.md describes both.
//
//   array := version (= 1), setCount, set x setCount
//   set   := blockCount, block x blockCount
//   block := metricId, significantDigits, highestTrackableValue,
//            totalCount, sum, max, clampedCount,
//            pairCount, (valueAtIndex, count) x pairCount

import { metricFromId, metricId, type LatencyMetricName } from './metrics';

export const NATIVE_LATENCY_FORMAT_VERSION = 1;

/** One histogram as the core exported it: its layout, totals and non-empty buckets. */
export interface HistogramBlock {
  metric: LatencyMetricName;
  significantDigits: number;
  highestTrackableValue: number;
  totalCount: number;
  /** Sum of recorded values (µs), exact. */
  sum: number;
  /** Largest recorded value (µs), exact. */
  max: number;
  /** Values above highestTrackableValue, recorded as highestTrackableValue. */
  clampedCount: number;
  /** value, count, value, count, ...: the lowest value of each non-empty bucket, ascending. */
  pairs: Float64Array;
}

/** The histograms of one scope (a worker's global view, one host, or "other hosts"). */
export type HistogramSet = Partial<Record<LatencyMetricName, HistogramBlock>>;

export class LatencyFormatError extends Error {}

/**
 * Decodes one exported array into its sets. Blocks with a metric id this build does not know (a
 * newer core) are skipped; a wrong version or a truncated array throws LatencyFormatError.
 */
export function decodeLatencySets(data: ArrayLike<number>): HistogramSet[] {
  const reader = new Reader(data);
  const version = reader.next('version');
  if (version !== NATIVE_LATENCY_FORMAT_VERSION) {
    throw new LatencyFormatError(`latency export version ${version}, this build reads ${NATIVE_LATENCY_FORMAT_VERSION}`);
  }
  const sets: HistogramSet[] = [];
  const setCount = reader.count('setCount');
  for (let s = 0; s < setCount; s++) {
    const set: HistogramSet = {};
    const blockCount = reader.count('blockCount');
    for (let b = 0; b < blockCount; b++) {
      const id = reader.next('metricId');
      const block = readBlock(reader);
      const metric = metricFromId(id);
      if (metric !== undefined) set[metric] = { metric, ...block };
    }
    sets.push(set);
  }
  if (!reader.atEnd()) throw new LatencyFormatError(`latency export has ${data.length - reader.position} trailing values`);
  return sets;
}

function readBlock(reader: Reader): Omit<HistogramBlock, 'metric'> {
  const significantDigits = reader.next('significantDigits');
  const highestTrackableValue = reader.next('highestTrackableValue');
  const totalCount = reader.next('totalCount');
  const sum = reader.next('sum');
  const max = reader.next('max');
  const clampedCount = reader.next('clampedCount');
  const pairCount = reader.count('pairCount');
  const pairs = reader.slice(pairCount * 2, 'pairs');
  return { significantDigits, highestTrackableValue, totalCount, sum, max, clampedCount, pairs };
}

class Reader {
  position = 0;
  constructor(private readonly data: ArrayLike<number>) {}

  next(what: string): number {
    if (this.position >= this.data.length) throw new LatencyFormatError(`latency export truncated at ${what} (offset ${this.position})`);
    return this.data[this.position++] as number;
  }

  count(what: string): number {
    const n = this.next(what);
    if (!Number.isInteger(n) || n < 0) throw new LatencyFormatError(`latency export: bad ${what} ${n} at offset ${this.position - 1}`);
    return n;
  }

  slice(length: number, what: string): Float64Array {
    if (this.position + length > this.data.length) throw new LatencyFormatError(`latency export truncated in ${what} (offset ${this.position})`);
    const out = Float64Array.from({ length }, (_, i) => this.data[this.position + i] as number);
    this.position += length;
    return out;
  }

  atEnd(): boolean {
    return this.position === this.data.length;
  }
}

/** The inverse of decodeLatencySets, block order as given (the core writes metric id order). */
export function encodeLatencySets(sets: readonly HistogramSet[]): Float64Array {
  const out: number[] = [NATIVE_LATENCY_FORMAT_VERSION, sets.length];
  for (const set of sets) {
    const blocks = Object.values(set).filter((b): b is HistogramBlock => b !== undefined);
    out.push(blocks.length);
    for (const b of blocks) {
      out.push(metricId(b.metric), b.significantDigits, b.highestTrackableValue, b.totalCount, b.sum, b.max, b.clampedCount);
      out.push(b.pairs.length / 2, ...b.pairs);
    }
  }
  return Float64Array.from(out);
}

/** Calls fn(value, count) for each bucket of a block. */
export function forEachPair(block: HistogramBlock, fn: (value: number, count: number) => void): void {
  const { pairs } = block;
  for (let i = 0; i + 1 < pairs.length; i += 2) fn(pairs[i] as number, pairs[i + 1] as number);
}
