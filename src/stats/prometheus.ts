// Prometheus text exposition (version 0.0.4) of the summed counters and gauges. Per-host series are
// left out on purpose: with up to max_hosts destinations they would be unbounded cardinality;
// /clusters carries the per-host view.

import { isGauge, type CounterValues } from './counters';

const PREFIX = 'splicegate_';

export function metricName(stat: string, gauge: boolean): string {
  const base = PREFIX + stat;
  return gauge || base.endsWith('_total') ? base : `${base}_total`;
}

export function prometheusText(values: CounterValues, extra: readonly string[] = []): string {
  const out: string[] = [];
  for (const [stat, value] of Object.entries(values)) {
    const gauge = isGauge(stat);
    const name = metricName(stat, gauge);
    out.push(`# HELP ${name} splicegate ${stat.replace(/_/g, ' ')}`);
    out.push(`# TYPE ${name} ${gauge ? 'gauge' : 'counter'}`);
    out.push(`${name} ${Number.isFinite(value) ? value : 0}`);
  }
  return out.join('\n') + '\n' + extra.join('');
}
