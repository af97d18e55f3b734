// The input of `splicegate report`: full-fidelity histograms per metric and host, read either from
// a running proxy's admin endpoint (GET /latency?format=hdr) or from a latency interval log (all
// of its intervals added up).

import { readFile } from 'node:fs/promises';
import { HistogramLogReader, type Histogram } from 'hdr-histogram-js';
import { httpGet, type HttpGetResult } from '../util/http-get';
import { decodeHdrExport, type DecodedSet } from './hdr-export';
import { parseTag } from './interval-lines';
import { intervalLogProblem } from './log-check';
import { hostConnections } from './merge';
import { LATENCY_METRICS, type LatencyMetricName } from './metrics';
import { TimelineBuilder, type LatencyTimeline } from './report-timeline';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9901';

export interface LatencyReport {
  /** Where the histograms came from: the admin URL or the log file. */
  source: string;
  /** One line about the data: "live, 2 workers" or "12 intervals over 60.0 s from ...". */
  description: string;
  global: DecodedSet;
  /** Busiest first (connections, i.e. the connect histogram's count). */
  hosts: Array<{ address: string; set: DecodedSet }>;
  otherHosts: DecodedSet;
  /** Per-interval percentiles: only a log has them (the admin endpoint serves totals). */
  timeline?: LatencyTimeline;
}

function isMetric(name: string): name is LatencyMetricName {
  return (LATENCY_METRICS as readonly string[]).includes(name);
}

export function connections(set: DecodedSet): number {
  return hostConnections(set.connect?.totalCount ?? 0, set.duration?.totalCount ?? 0);
}

export function rankHosts(hosts: Array<{ address: string; set: DecodedSet }>): Array<{ address: string; set: DecodedSet }> {
  return [...hosts].sort((a, b) => connections(b.set) - connections(a.set) || a.address.localeCompare(b.address));
}

export async function loadReportFromAdmin(baseUrl: string, timeoutMs = 10_000): Promise<LatencyReport> {
  const url = new URL('/latency?format=hdr', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
  let response: HttpGetResult;
  try {
    response = await httpGet(url, timeoutMs);
  } catch (err) {
    throw new Error(`cannot reach the admin endpoint at ${url.origin}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (response.status < 200 || response.status > 299) throw new Error(`${url.href}: HTTP ${response.status} ${response.body.trim()}`);
  let json: unknown;
  try {
    json = JSON.parse(response.body);
  } catch (err) {
    throw new Error(`${url.href}: the answer is not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  let decoded;
  try {
    decoded = decodeHdrExport(json);
  } catch (err) {
    throw new Error(`${url.href}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return {
    source: url.origin,
    description: `live, merged over ${decoded.workers} worker${decoded.workers === 1 ? '' : 's'}, ${new Date().toISOString()}`,
    global: decoded.global,
    hosts: rankHosts(decoded.hosts),
    otherHosts: decoded.otherHosts,
  };
}

/** The next interval of the log; a histogram the library refuses is an error naming its line. */
function nextInterval(reader: HistogramLogReader, source: string): Histogram | null {
  try {
    return reader.nextIntervalHistogram();
  } catch (err) {
    // currentLineIndex has already moved past the line it was decoding: it is that line's number.
    throw new Error(`${source}, line ${reader.currentLineIndex}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * Adds every interval of a log, per tag. Throws when the log holds no splicegate histogram, or a
 * histogram line that does not decode (naming the line; log-check.ts says why it looks first).
 */
export function reportFromLogText(content: string, source: string): LatencyReport {
  const problem = intervalLogProblem(content);
  if (problem !== null) throw new Error(`${source}, ${problem}`);
  const reader = new HistogramLogReader(content, 64);
  const byTag = new Map<string, Histogram>();
  const timeline = new TimelineBuilder();
  const intervalStarts = new Set<number>();
  let firstMs = Number.POSITIVE_INFINITY;
  let lastMs = Number.NEGATIVE_INFINITY;
  for (let h = nextInterval(reader, source); h !== null; h = nextInterval(reader, source)) {
    intervalStarts.add(h.startTimeStampMsec);
    firstMs = Math.min(firstMs, h.startTimeStampMsec);
    lastMs = Math.max(lastMs, h.endTimeStampMsec);
    // Before the sum: the first histogram of a tag becomes the sum and is added to.
    timeline.add(h);
    const sum = byTag.get(h.tag);
    if (sum === undefined) byTag.set(h.tag, h);
    else sum.add(h);
  }
  const global: DecodedSet = {};
  const hosts = new Map<string, DecodedSet>();
  for (const [tag, histogram] of byTag) {
    const { metric, host } = parseTag(tag);
    if (!isMetric(metric)) continue;
    if (host === undefined) {
      global[metric] = histogram;
      continue;
    }
    let set = hosts.get(host);
    if (set === undefined) hosts.set(host, (set = {}));
    set[metric] = histogram;
  }
  if (Object.keys(global).length === 0 && hosts.size === 0) {
    throw new Error(`${source}: no splicegate latency histograms (tags connect, ttfb, ...) in this log`);
  }
  const intervals = intervalStarts.size;
  const seconds = intervals === 0 ? 0 : (lastMs - firstMs) / 1000;
  const from = Number.isFinite(firstMs) ? ` from ${new Date(firstMs).toISOString()}` : '';
  return {
    source,
    description: `${intervals} interval${intervals === 1 ? '' : 's'} over ${seconds.toFixed(1)} s${from}`,
    global,
    hosts: rankHosts([...hosts.entries()].map(([address, set]) => ({ address, set }))),
    otherHosts: {},
    timeline: timeline.build(),
  };
}

export async function loadReportFromLog(path: string): Promise<LatencyReport> {
  return reportFromLogText(await readFile(path, 'utf8'), path);
}
