// The proxy-wide percentile plots of `splicegate report --html`, from live merged histograms: what
// the admin dashboard shows (GET /latency?format=plots). Runs on the merge pool like the other
// latency views.

import type { MergedLatency } from './merge';
import { LATENCY_METRICS, METRIC_INFO, type LatencyMetricName } from './metrics';
import { metricPlot } from './report-html';

export interface LatencyPlot {
  metric: LatencyMetricName;
  title: string;
  description: string;
  count: number;
  /** Inline SVG markup (the report's chart: x = percentile on a 1/(1-p) log scale, y = ms). */
  svg: string;
}

export interface LatencyPlots {
  unit: 'ms';
  workers: number;
  plots: LatencyPlot[];
}

export function latencyPlots(merged: MergedLatency): LatencyPlots {
  return {
    unit: 'ms',
    workers: merged.workers,
    plots: LATENCY_METRICS.map((metric) => {
      const h = merged.global[metric]?.histogram;
      return {
        metric,
        title: METRIC_INFO[metric].title,
        description: METRIC_INFO[metric].description,
        count: h?.totalCount ?? 0,
        svg: metricPlot(metric, h),
      };
    }),
  };
}
