// The text form of GET /latency: one aligned table for the proxy as a whole and one per host,
// microseconds, busiest hosts first.

import { HOST_LATENCY_METRICS, LATENCY_METRICS, type LatencyMetricName } from './metrics';
import type { LatencySummary, PercentileSummary } from './summary';

const COLUMNS = ['count', 'p50', 'p90', 'p99', 'p999', 'max', 'mean'] as const;
const HEADERS: Record<(typeof COLUMNS)[number], string> = {
  count: 'count',
  p50: 'p50',
  p90: 'p90',
  p99: 'p99',
  p999: 'p99.9',
  max: 'max',
  mean: 'mean',
};

/** A histogram without samples has no percentiles: '-' (as `splicegate report` prints), not 0. */
function cell(s: PercentileSummary, column: (typeof COLUMNS)[number]): string {
  return column !== 'count' && s.count === 0 ? '-' : String(s[column]);
}

function table(rows: Array<[string, PercentileSummary]>, indent: string): string[] {
  const cells = rows.map(([name, s]) => [name, ...COLUMNS.map((c) => cell(s, c))]);
  const header = ['', ...COLUMNS.map((c) => HEADERS[c])];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    indent + r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), ...cells.map(line)];
}

export function formatLatencyText(summary: LatencySummary): string {
  const workers = `${summary.workers} worker${summary.workers === 1 ? '' : 's'}`;
  const out = [`latency in microseconds, merged over ${workers}`, ''];
  out.push(...table(LATENCY_METRICS.map((m: LatencyMetricName) => [m, summary.global[m]]), ''));
  const hosts = Object.entries(summary.hosts);
  out.push('', `hosts (${hosts.length} tracked, busiest first)`);
  for (const [address, host] of [...hosts, ['other hosts', summary.other_hosts] as const]) {
    out.push('', `${address}`);
    out.push(...table(HOST_LATENCY_METRICS.map((m) => [m, host[m]]), '  '));
  }
  return out.join('\n') + '\n';
}
