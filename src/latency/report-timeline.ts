// Latency over time for `splicegate report --log FILE --html OUT`: per tag of the interval log
// (a metric, or <metric>@<host>), one point per interval with its count and p50/p99/max, so the
// page can show when a destination got slow and not only its overall distribution.

import type { Histogram } from 'hdr-histogram-js';
import { parseTag } from './interval-lines';
import { LATENCY_METRICS, type LatencyMetricName } from './metrics';

/** One interval of one tag. Latencies in µs; null when the interval recorded no sample. */
export interface TimelinePoint {
  /** ms since the epoch. */
  startMs: number;
  endMs: number;
  count: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

export type TimelineSet = Partial<Record<LatencyMetricName, TimelinePoint[]>>;

export interface LatencyTimeline {
  /** The log's span, ms since the epoch. */
  startMs: number;
  endMs: number;
  /** Every interval's start, in order (a tag missing from one, e.g. a host not busy then, has a gap). */
  intervalStarts: number[];
  global: TimelineSet;
  hosts: Map<string, TimelineSet>;
}

function isMetric(name: string): name is LatencyMetricName {
  return (LATENCY_METRICS as readonly string[]).includes(name);
}

function pointOf(h: Histogram): TimelinePoint {
  const empty = h.totalCount === 0;
  return {
    startMs: h.startTimeStampMsec,
    endMs: h.endTimeStampMsec,
    count: h.totalCount,
    p50: empty ? null : h.getValueAtPercentile(50),
    p99: empty ? null : h.getValueAtPercentile(99),
    max: empty ? null : h.getValueAtPercentile(100),
  };
}

/** Fed every interval histogram of a log (any order); build() sorts each series by time. */
export class TimelineBuilder {
  private readonly global: TimelineSet = {};
  private readonly hosts = new Map<string, TimelineSet>();
  private readonly starts = new Set<number>();
  private startMs = Number.POSITIVE_INFINITY;
  private endMs = Number.NEGATIVE_INFINITY;

  /** Reads what it needs at once: the caller may add h into a sum afterwards. */
  add(h: Histogram): void {
    const { metric, host } = parseTag(h.tag);
    if (!isMetric(metric)) return;
    this.starts.add(h.startTimeStampMsec);
    this.startMs = Math.min(this.startMs, h.startTimeStampMsec);
    this.endMs = Math.max(this.endMs, h.endTimeStampMsec);
    let set = this.global;
    if (host !== undefined) {
      const existing = this.hosts.get(host);
      set = existing ?? {};
      if (existing === undefined) this.hosts.set(host, set);
    }
    (set[metric] ??= []).push(pointOf(h));
  }

  build(): LatencyTimeline {
    const sortSet = (set: TimelineSet): TimelineSet => {
      for (const points of Object.values(set)) points?.sort((a, b) => a.startMs - b.startMs);
      return set;
    };
    sortSet(this.global);
    for (const set of this.hosts.values()) sortSet(set);
    const empty = this.starts.size === 0;
    return {
      startMs: empty ? 0 : this.startMs,
      endMs: empty ? 0 : this.endMs,
      intervalStarts: [...this.starts].sort((a, b) => a - b),
      global: this.global,
      hosts: this.hosts,
    };
  }
}

/** At most this many columns per chart: a longer log has its adjacent intervals combined. */
export const MAX_TIMELINE_COLUMNS = 360;

/** A combined column: the points it covers, for the page's data. */
export interface TimelineColumn extends TimelinePoint {
  intervals: number;
}

function largest(values: Array<number | null>): number | null {
  let out: number | null = null;
  for (const v of values) if (v !== null && (out === null || v > out)) out = v;
  return out;
}

/**
 * Groups points into columns of columnMs from startMs. A column's count is the sum, its p99 and max
 * the largest of its intervals' (a slow interval is never averaged away), its p50 the
 * count-weighted mean of their medians (exact percentiles would need every interval's histogram
 * kept in memory). With columnMs no longer than the intervals, every point is its own column.
 */
export function combineIntervals(points: readonly TimelinePoint[], startMs: number, columnMs: number): TimelineColumn[] {
  const columns: TimelineColumn[] = [];
  let group: TimelinePoint[] = [];
  let groupIndex = -1;
  const flush = (): void => {
    if (group.length === 0) return;
    const first = group[0] as TimelinePoint;
    const last = group[group.length - 1] as TimelinePoint;
    const count = group.reduce((n, p) => n + p.count, 0);
    const weighted = group.filter((p) => p.p50 !== null && p.count > 0);
    const p50 = weighted.length === 0 ? null : weighted.reduce((s, p) => s + (p.p50 as number) * p.count, 0) / weighted.reduce((n, p) => n + p.count, 0);
    columns.push({
      startMs: first.startMs,
      endMs: last.endMs,
      count,
      p50,
      p99: largest(group.map((p) => p.p99)),
      max: largest(group.map((p) => p.max)),
      intervals: group.length,
    });
    group = [];
  };
  for (const p of points) {
    const index = Math.floor((p.startMs - startMs) / columnMs);
    if (index !== groupIndex) flush();
    groupIndex = index;
    group.push(p);
  }
  flush();
  return columns;
}

/** The column width for a span: the log's own intervals, or wider when they would not fit. */
export function columnWidthMs(timeline: Pick<LatencyTimeline, 'startMs' | 'endMs'>, maxColumns = MAX_TIMELINE_COLUMNS): number {
  const span = Math.max(1, timeline.endMs - timeline.startMs);
  return Math.max(1, Math.ceil(span / maxColumns));
}
