// `splicegate report` on a terminal: HdrHistogram's percentile distribution table for each metric
// (values in milliseconds), then the busiest hosts' percentiles side by side.

import type { Histogram } from 'hdr-histogram-js';
import { HOST_LATENCY_METRICS, LATENCY_METRICS, METRIC_INFO } from './metrics';
import { connections, type LatencyReport } from './report-data';

/** Microseconds -> milliseconds in every printed value. */
export const MS_RATIO = 1000;
const TICKS_PER_HALF_DISTANCE = 5;

function ms(us: number): string {
  return (us / MS_RATIO).toFixed(3);
}

function percentiles(h: Histogram | undefined): [string, string] {
  if (h === undefined || h.totalCount === 0) return ['-', '-'];
  return [ms(h.getValueAtPercentile(50)), ms(h.getValueAtPercentile(99))];
}

function hostsTable(report: LatencyReport, topHosts: number): string[] {
  const hosts = report.hosts.slice(0, topHosts);
  if (hosts.length === 0) return ['(no per-host histograms)'];
  const header = ['host', 'connections', ...HOST_LATENCY_METRICS.flatMap((m) => [`${m} p50`, `${m} p99`])];
  const rows = hosts.map(({ address, set }) => [
    address,
    String(connections(set)),
    ...HOST_LATENCY_METRICS.flatMap((m) => percentiles(set[m])),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), ...rows.map(line)];
}

export function renderReportText(report: LatencyReport, topHosts = 10): string {
  const out = [`splicegate latency report: ${report.source}`, report.description, ''];
  for (const metric of LATENCY_METRICS) {
    const info = METRIC_INFO[metric];
    out.push(`== ${metric}: ${info.title} (${info.description}), values in milliseconds`);
    const h = report.global[metric];
    if (h === undefined || h.totalCount === 0) out.push('(no samples)', '');
    else out.push(h.outputPercentileDistribution(TICKS_PER_HALF_DISTANCE, MS_RATIO).trimEnd(), '');
  }
  out.push(`== busiest hosts (top ${topHosts}), milliseconds`);
  out.push(...hostsTable(report, topHosts));
  return out.join('\n') + '\n';
}
