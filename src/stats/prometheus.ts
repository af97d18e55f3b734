// Prometheus text exposition (version 0.0.4) of the summed counters and gauges. Per-host series are
// left out on purpose: with up to max_hosts destinations they would be unbounded cardinality;
// /clusters carries the per-host view. Per-rule policy counters are bounded by the config, so they
// are one labelled family.

import { isGauge, type CounterValues } from './counters';

const PREFIX = 'splicegate_';
/** policy.<rule>.denied (rule names: letters, digits, "_", "." and "-"; "special" = built-in denies). */
const RULE_COUNTER = /^policy\.(.+)\.denied$/;
const RULE_FAMILY = `${PREFIX}policy_rule_denied_total`;

export function metricName(stat: string, gauge: boolean): string {
  const base = PREFIX + stat;
  return gauge || base.endsWith('_total') ? base : `${base}_total`;
}

/** Label values may hold any character but these three need escaping. */
function labelValue(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function prometheusText(values: CounterValues, extra: readonly string[] = []): string {
  const out: string[] = [];
  const ruleLines: string[] = [];
  for (const [stat, value] of Object.entries(values)) {
    const v = Number.isFinite(value) ? value : 0;
    const rule = RULE_COUNTER.exec(stat);
    if (rule) {
      ruleLines.push(`${RULE_FAMILY}{rule="${labelValue(rule[1] ?? '')}"} ${v}`);
      continue;
    }
    const gauge = isGauge(stat);
    const name = metricName(stat, gauge);
    out.push(`# HELP ${name} splicegate ${stat.replace(/_/g, ' ')}`);
    out.push(`# TYPE ${name} ${gauge ? 'gauge' : 'counter'}`);
    out.push(`${name} ${v}`);
  }
  if (ruleLines.length > 0) {
    out.push(`# HELP ${RULE_FAMILY} connections refused by the destination policy, by deciding rule (rule="special": built-in denies)`);
    out.push(`# TYPE ${RULE_FAMILY} counter`);
    out.push(...ruleLines);
  }
  return out.join('\n') + '\n' + extra.join('');
}
