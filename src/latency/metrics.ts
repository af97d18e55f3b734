// The latency metrics the core records, in the order of their native ids (cpp/core/latency_metric.h:
// index = LatencyMetric value). Append new ones; never reorder.

export const LATENCY_METRICS = ['connect', 'proxy_overhead', 'ttfb', 'duration'] as const;
export type LatencyMetricName = (typeof LATENCY_METRICS)[number];

/** The metrics kept per host; proxy_overhead is the proxy's own and has no per-host histogram. */
export const HOST_LATENCY_METRICS = ['connect', 'ttfb', 'duration'] as const satisfies readonly LatencyMetricName[];

export interface MetricInfo {
  /** Short human title, for the text report and the HTML page. */
  title: string;
  /** What is measured, from which event to which. */
  description: string;
  /** Prometheus histogram name (seconds, per the naming conventions). */
  prometheusName: string;
}

export const METRIC_INFO: Record<LatencyMetricName, MetricInfo> = {
  connect: {
    title: 'upstream connect',
    description: 'connect() to the original destination started -> connection established',
    prometheusName: 'splicegate_connect_duration_seconds',
  },
  proxy_overhead: {
    title: 'proxy overhead',
    description: 'client connection accepted -> upstream connect() started',
    prometheusName: 'splicegate_proxy_overhead_seconds',
  },
  ttfb: {
    title: 'time to first byte',
    description: 'upstream connection established -> first upstream byte sent on to the client',
    prometheusName: 'splicegate_ttfb_seconds',
  },
  duration: {
    title: 'connection duration',
    description: 'client connection accepted -> connection closed',
    prometheusName: 'splicegate_connection_duration_seconds',
  },
};

export function metricFromId(id: number): LatencyMetricName | undefined {
  return Number.isInteger(id) ? LATENCY_METRICS[id] : undefined;
}

export function metricId(name: LatencyMetricName): number {
  return LATENCY_METRICS.indexOf(name);
}
