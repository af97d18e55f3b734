// What the admin endpoint serves about latency. Every function collects the workers' exports and
// hands the merge to the merge pool's thread, so a scrape never blocks the main thread on it.
//
//   GET /latency                  renderLatencyText   (text/plain)
//   GET /latency?format=json      renderLatencyJson   (application/json, the documented contract)
//   GET /latency?format=hdr       renderLatencyHdr    (application/json, full-fidelity histograms)
//   GET /latency?format=plots     renderLatencyPlots  (application/json, the report's SVG plots; the dashboard's)
//   GET /stats/prometheus         renderPrometheusHistograms, appended to the counters

import { formatLatencyText } from './latency-text';
import { runOnMergePool } from './merge-pool';
import type { LatencySource } from './source';

export async function renderLatencyJson(source: LatencySource): Promise<string> {
  const summary = await runOnMergePool('summary', await source.collect());
  return JSON.stringify(summary, null, 2) + '\n';
}

export async function renderLatencyText(source: LatencySource): Promise<string> {
  return formatLatencyText(await runOnMergePool('summary', await source.collect()));
}

export async function renderLatencyHdr(source: LatencySource): Promise<string> {
  return JSON.stringify(await runOnMergePool('hdr', await source.collect())) + '\n';
}

export async function renderLatencyPlots(source: LatencySource): Promise<string> {
  return JSON.stringify(await runOnMergePool('plots', await source.collect())) + '\n';
}

/** Histogram series in Prometheus text format 0.0.4 (HELP, TYPE, _bucket, _sum, _count). */
export async function renderPrometheusHistograms(source: LatencySource): Promise<string> {
  return runOnMergePool('prometheus', await source.collect());
}

export interface LatencyResponse {
  status: number;
  contentType: string;
  body: string;
}

/** The whole `/latency` route: format from the query (null, "text", "json", "hdr" or "plots"). */
export async function latencyResponse(source: LatencySource, format: string | null): Promise<LatencyResponse> {
  switch (format) {
    case null:
    case 'text':
      return { status: 200, contentType: 'text/plain; charset=utf-8', body: await renderLatencyText(source) };
    case 'json':
      return { status: 200, contentType: 'application/json', body: await renderLatencyJson(source) };
    case 'hdr':
      return { status: 200, contentType: 'application/json', body: await renderLatencyHdr(source) };
    case 'plots':
      return { status: 200, contentType: 'application/json', body: await renderLatencyPlots(source) };
    default:
      return { status: 400, contentType: 'text/plain; charset=utf-8', body: `unknown format "${format}" (use text, json, hdr or plots)\n` };
  }
}
