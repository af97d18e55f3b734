// The full-fidelity export `GET /latency?format=hdr`: every merged histogram as HdrHistogram's
// standard compressed base64 encoding (the same text as in a histogram log), so `splicegate report
// --admin URL` and HdrHistogram's own tools can rebuild them exactly. Field names are a contract.

import { decodeFromCompressedBase64, encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js';
import { encodedHistogramProblem } from './log-check';
import { LATENCY_METRICS, type LatencyMetricName } from './metrics';
import type { LatencySet, LatencySets, MergedLatency, MergedSet } from './merge';

export const HDR_EXPORT_FORMAT = 'hdrhistogram-v2-compressed-base64';

type EncodedSet = Partial<Record<LatencyMetricName, string>>;

export interface HdrLatencyExport {
  unit: 'us';
  format: typeof HDR_EXPORT_FORMAT;
  workers: number;
  global: EncodedSet;
  /** Busiest first. */
  hosts: Record<string, EncodedSet>;
  other_hosts: EncodedSet;
}

function encodeSet(set: MergedSet): EncodedSet {
  const out: EncodedSet = {};
  for (const metric of LATENCY_METRICS) {
    const merged = set[metric];
    if (merged !== undefined) out[metric] = encodeIntoCompressedBase64(merged.histogram);
  }
  return out;
}

export function hdrExport(merged: MergedLatency): HdrLatencyExport {
  const hosts: Record<string, EncodedSet> = {};
  for (const { address, set } of merged.hosts) hosts[address] = encodeSet(set);
  return {
    unit: 'us',
    format: HDR_EXPORT_FORMAT,
    workers: merged.workers,
    global: encodeSet(merged.global),
    hosts,
    other_hosts: encodeSet(merged.otherHosts),
  };
}

export type DecodedSet = LatencySet<Histogram>;
/** The hdr export read back: the merged view, with plain hdr-histogram-js histograms. */
export type DecodedHdrExport = LatencySets<Histogram>;

/** Parses and checks the JSON of GET /latency?format=hdr; throws with what is wrong. */
export function decodeHdrExport(json: unknown): DecodedHdrExport {
  if (!isRecord(json) || json['format'] !== HDR_EXPORT_FORMAT) {
    throw new Error(`not a splicegate latency export (expected "format": "${HDR_EXPORT_FORMAT}")`);
  }
  const hosts = isRecord(json['hosts']) ? json['hosts'] : {};
  return {
    workers: typeof json['workers'] === 'number' ? json['workers'] : 0,
    global: decodeSet(json['global'], 'global'),
    hosts: Object.entries(hosts).map(([address, set]) => ({ address, set: decodeSet(set, `hosts["${address}"]`) })),
    otherHosts: decodeSet(json['other_hosts'], 'other_hosts'),
  };
}

function decodeSet(value: unknown, where: string): DecodedSet {
  const out: DecodedSet = {};
  if (!isRecord(value)) return out;
  for (const metric of LATENCY_METRICS) {
    const encoded = value[metric];
    if (typeof encoded !== 'string') continue;
    // Checked first, as a log's lines are (log-check.ts): the endpoint may be anything the URL names.
    const problem = encodedHistogramProblem(encoded);
    if (problem !== null) throw new Error(`${where}.${metric}: ${problem}`);
    out[metric] = decodeFromCompressedBase64(encoded, 64);
  }
  return out;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
