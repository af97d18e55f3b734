// Prometheus histograms (text exposition 0.0.4) of the four proxy-wide latency metrics: cumulative
// `_bucket{le}` series on a fixed ladder, `_sum` and `_count`, in seconds. Per-host series are left
// out on purpose (unbounded cardinality); /latency has the per-host view.
//
// Bucket rule: an HDR bucket counts towards `le` when its lowest value is <= le. At 3 significant
// digits a bucket is at most 0.1% wide, so a sample can be counted under an `le` it exceeds by at
// most that much; buckets stay cumulative and the +Inf bucket always equals _count.

import { LATENCY_METRICS, METRIC_INFO } from './metrics';
import { decodeLatencySets, forEachPair } from './native-format';
import type { WorkerLatencyExport } from './source';

/** Upper bounds in seconds: 50 µs to the 1 h the core tracks. */
export const PROMETHEUS_LE_SECONDS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
  300, 900, 3600,
] as const;

export interface PrometheusHistogram {
  name: string;
  help: string;
  /** Cumulative counts, one per PROMETHEUS_LE_SECONDS entry. */
  buckets: number[];
  count: number;
  sumSeconds: number;
}

/** Sums the workers' global histograms onto the ladder. */
export function prometheusHistograms(workerExports: readonly WorkerLatencyExport[]): PrometheusHistogram[] {
  const leUs = PROMETHEUS_LE_SECONDS.map((s) => Math.round(s * 1e6));
  const out = new Map(
    LATENCY_METRICS.map((m) => [
      m,
      { name: METRIC_INFO[m].prometheusName, help: `${METRIC_INFO[m].title}: ${METRIC_INFO[m].description}`, perBucket: new Array<number>(leUs.length).fill(0), count: 0, sumUs: 0 },
    ]),
  );
  for (const worker of workerExports) {
    for (const set of decodeLatencySets(worker.global)) {
      for (const block of Object.values(set)) {
        const target = block === undefined ? undefined : out.get(block.metric);
        if (block === undefined || target === undefined) continue;
        forEachPair(block, (value, count) => {
          target.count += count;
          const first = leUs.findIndex((le) => value <= le);
          if (first >= 0) target.perBucket[first] = (target.perBucket[first] ?? 0) + count;
        });
        target.sumUs += block.sum;
      }
    }
  }
  return [...out.values()].map(({ name, help, perBucket, count, sumUs }) => {
    let running = 0;
    const buckets = perBucket.map((n) => (running += n));
    return { name, help, buckets, count, sumSeconds: sumUs / 1e6 };
  });
}

export function formatPrometheusHistograms(histograms: readonly PrometheusHistogram[]): string {
  const lines: string[] = [];
  for (const h of histograms) {
    lines.push(`# HELP ${h.name} ${h.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    lines.push(`# TYPE ${h.name} histogram`);
    PROMETHEUS_LE_SECONDS.forEach((le, i) => lines.push(`${h.name}_bucket{le="${le}"} ${h.buckets[i] ?? 0}`));
    lines.push(`${h.name}_bucket{le="+Inf"} ${h.count}`);
    lines.push(`${h.name}_sum ${h.sumSeconds}`);
    lines.push(`${h.name}_count ${h.count}`);
  }
  return lines.join('\n') + '\n';
}
