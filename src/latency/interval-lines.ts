// One interval of the HdrHistogram log: what was recorded since the previous interval, as tagged
// interval lines in the standard log format (hdr-histogram-js' HistogramLogWriter). Pure and
// stateless: the caller keeps the returned cumulative state and hands it back next time.
//
// Tags: the four proxy-wide metrics by name (connect, proxy_overhead, ttfb, duration), and for the
// busiest hosts of the interval `<metric>@<ip:port>` (e.g. ttfb@10.0.0.7:443). Values are in µs;
// the Interval_Max column is in milliseconds (HdrHistogram's usual scaling).

import { HistogramLogWriter } from 'hdr-histogram-js';
import { histogramLike } from './merge';
import { HOST_LATENCY_METRICS, LATENCY_METRICS } from './metrics';
import { decodeLatencySets, forEachPair, type HistogramBlock, type HistogramSet } from './native-format';
import type { WorkerLatencyExport } from './source';

export const MAX_VALUE_UNIT_RATIO = 1000;

/** A tag's cumulative bucket counts (lowest bucket value -> count) and its layout. */
export interface CumulativeHistogram {
  significantDigits: number;
  highestTrackableValue: number;
  counts: Map<number, number>;
}

export type IntervalState = Map<string, CumulativeHistogram>;

export interface IntervalInput {
  workerExports: readonly WorkerLatencyExport[];
  /** State returned by the previous interval; null for the first (counts since the proxy began). */
  previous: IntervalState | null;
  /** Seconds since the log's base time. */
  startSec: number;
  endSec: number;
  /** Hosts (busiest in this interval by connections, then by samples) whose histograms are logged too. */
  topHosts: number;
}

export interface IntervalOutput {
  /** Lines to append to the log. */
  text: string;
  state: IntervalState;
}

export function hostTag(metric: string, address: string): string {
  return `${metric}@${address}`;
}

/** Splits a tag into metric and host ("other" tags have no host). */
export function parseTag(tag: string): { metric: string; host?: string } {
  const at = tag.indexOf('@');
  return at < 0 ? { metric: tag } : { metric: tag.slice(0, at), host: tag.slice(at + 1) };
}

function addToCumulative(state: IntervalState, tag: string, block: HistogramBlock): void {
  let entry = state.get(tag);
  if (entry === undefined) {
    entry = { significantDigits: block.significantDigits, highestTrackableValue: block.highestTrackableValue, counts: new Map() };
    state.set(tag, entry);
  }
  const { counts } = entry;
  forEachPair(block, (value, count) => counts.set(value, (counts.get(value) ?? 0) + count));
}

function addSet(state: IntervalState, set: HistogramSet, tagOf: (metric: string) => string): void {
  for (const block of Object.values(set)) if (block !== undefined) addToCumulative(state, tagOf(block.metric), block);
}

export function cumulativeState(workerExports: readonly WorkerLatencyExport[]): IntervalState {
  const state: IntervalState = new Map();
  for (const worker of workerExports) {
    for (const set of decodeLatencySets(worker.global)) addSet(state, set, (m) => m);
    decodeLatencySets(worker.hosts).forEach((set, i) => {
      const address = worker.hostAddresses[i];
      if (address !== undefined) addSet(state, set, (m) => hostTag(m, address));
    });
  }
  return state;
}

/**
 * now - before, bucket by bucket. A bucket can shrink when a worker died without its totals being
 * retired or a host lost its slot to a busier one (its samples moved to "other hosts"): such a
 * bucket counts 0 in this interval rather than going negative.
 */
function delta(now: CumulativeHistogram, before: CumulativeHistogram | undefined): Map<number, number> {
  const out = new Map<number, number>();
  for (const [value, count] of now.counts) {
    const d = count - (before?.counts.get(value) ?? 0);
    if (d > 0) out.set(value, d);
  }
  return out;
}

function total(counts: Map<number, number>): number {
  let n = 0;
  for (const c of counts.values()) n += c;
  return n;
}

export function intervalLines(input: IntervalInput): IntervalOutput {
  const state = cumulativeState(input.workerExports);
  const deltas = new Map<string, Map<number, number>>();
  for (const [tag, now] of state) deltas.set(tag, delta(now, input.previous?.get(tag)));

  const tags: string[] = LATENCY_METRICS.filter((m) => state.has(m));
  const hosts = new Set<string>();
  for (const tag of state.keys()) {
    const { host } = parseTag(tag);
    if (host !== undefined) hosts.add(host);
  }
  // A host is logged in every interval with any sample of its own, not only in those with new
  // connects: a long connection's ttfb and duration land intervals after its connect (and a failed
  // connect records only a duration), and would otherwise never reach the log.
  const inInterval = (host: string, metric: string): number => total(deltas.get(hostTag(metric, host)) ?? new Map());
  const busiest = [...hosts]
    .map((host) => ({
      host,
      connections: inInterval(host, 'connect'),
      samples: HOST_LATENCY_METRICS.reduce((n, metric) => n + inInterval(host, metric), 0),
    }))
    .filter((h) => h.samples > 0)
    .sort((a, b) => b.connections - a.connections || b.samples - a.samples || a.host.localeCompare(b.host))
    .slice(0, input.topHosts);
  for (const { host } of busiest) {
    for (const metric of HOST_LATENCY_METRICS) if (state.has(hostTag(metric, host))) tags.push(hostTag(metric, host));
  }

  let text = '';
  const writer = new HistogramLogWriter((chunk) => (text += chunk));
  for (const tag of tags) {
    const layout = state.get(tag);
    if (layout === undefined) continue;
    const histogram = histogramLike(layout);
    for (const [value, count] of deltas.get(tag) ?? []) histogram.recordValueWithCount(value, count);
    histogram.tag = tag;
    writer.outputIntervalHistogram(histogram, input.startSec, input.endSec, MAX_VALUE_UNIT_RATIO);
  }
  return { text, state };
}
