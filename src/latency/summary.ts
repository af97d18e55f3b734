// Percentile summaries of merged histograms: the `GET /latency?format=json` contract. Field names
// are a stable contract: add fields, never rename.

import { HOST_LATENCY_METRICS, LATENCY_METRICS, type LatencyMetricName } from './metrics';
import type { MergedHistogram, MergedLatency, MergedSet } from './merge';

export interface PercentileSummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  /** Exact largest value. */
  max: number;
  /** Exact mean (sum / count); 0 when empty. */
  mean: number;
}

export type HostSummary = Record<(typeof HOST_LATENCY_METRICS)[number], PercentileSummary>;

export interface LatencySummary {
  unit: 'us';
  /** How many worker exports were merged. */
  workers: number;
  global: Record<LatencyMetricName, PercentileSummary>;
  /** Per destination "ip:port", busiest first. */
  hosts: Record<string, HostSummary>;
  /** Every host without a histogram of its own (see docs/LATENCY.md, memory per host). */
  other_hosts: HostSummary;
}

const EMPTY: PercentileSummary = { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };

/**
 * HdrHistogram reports a percentile as the highest value equivalent to its bucket; capped at the
 * exact max so p99.9 never exceeds the largest value actually seen.
 */
export function summarize(merged: MergedHistogram | undefined): PercentileSummary {
  if (merged === undefined || merged.histogram.totalCount === 0) return { ...EMPTY };
  const { histogram, max } = merged;
  const at = (p: number): number => Math.min(histogram.getValueAtPercentile(p), max);
  const count = histogram.totalCount;
  return { count, p50: at(50), p90: at(90), p99: at(99), p999: at(99.9), max, mean: round3(merged.sum / count) };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function hostSummary(set: MergedSet): HostSummary {
  return { connect: summarize(set.connect), ttfb: summarize(set.ttfb), duration: summarize(set.duration) };
}

export function summarizeLatency(merged: MergedLatency): LatencySummary {
  const global = Object.fromEntries(LATENCY_METRICS.map((m) => [m, summarize(merged.global[m])])) as Record<
    LatencyMetricName,
    PercentileSummary
  >;
  const hosts: Record<string, HostSummary> = {};
  for (const { address, set } of merged.hosts) hosts[address] = hostSummary(set);
  return { unit: 'us', workers: merged.workers, global, hosts, other_hosts: hostSummary(merged.otherHosts) };
}
