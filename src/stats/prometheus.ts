// Prometheus text exposition (version 0.0.4) of the summed counters and gauges. Per-host series are
// left out on purpose: with up to max_hosts destinations they would be unbounded cardinality;
// /clusters carries the per-host view. Per-rule policy counters and per-listener counters are
// bounded by the config, so each kind is a labelled family: one family per stat, a series per rule
// or listener.

import { isGauge, type CounterValues } from './counters';
import { parseListenerCounter } from './listeners';

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

interface Family {
  help: string;
  gauge: boolean;
  series: string[];
}

/** The labelled family a counter belongs to, with its series' label, or undefined for a plain one. */
function labelled(stat: string): { name: string; help: string; gauge: boolean; label: string } | undefined {
  const rule = RULE_COUNTER.exec(stat);
  if (rule) {
    return {
      name: RULE_FAMILY,
      help: 'connections refused by the destination policy, by deciding rule (rule="special": built-in denies)',
      gauge: false,
      label: `rule="${labelValue(rule[1] ?? '')}"`,
    };
  }
  const listener = parseListenerCounter(stat);
  if (listener) {
    // listener.egress.downstream_cx_total -> splicegate_listener_downstream_cx_total{listener="egress"}
    const gauge = isGauge(stat);
    return {
      name: metricName(`listener_${listener.stat}`, gauge),
      help: `splicegate ${listener.stat.replace(/_/g, ' ')}, by listener`,
      gauge,
      label: `listener="${labelValue(listener.listener)}"`,
    };
  }
  return undefined;
}

export function prometheusText(values: CounterValues, extra: readonly string[] = []): string {
  const out: string[] = [];
  const families = new Map<string, Family>();
  for (const [stat, value] of Object.entries(values)) {
    const v = Number.isFinite(value) ? value : 0;
    const l = labelled(stat);
    if (l) {
      let family = families.get(l.name);
      if (!family) families.set(l.name, (family = { help: l.help, gauge: l.gauge, series: [] }));
      family.series.push(`${l.name}{${l.label}} ${v}`);
      continue;
    }
    const gauge = isGauge(stat);
    const name = metricName(stat, gauge);
    out.push(`# HELP ${name} splicegate ${stat.replace(/_/g, ' ')}`);
    out.push(`# TYPE ${name} ${gauge ? 'gauge' : 'counter'}`);
    out.push(`${name} ${v}`);
  }
  for (const [name, family] of families) {
    out.push(`# HELP ${name} ${family.help}`);
    out.push(`# TYPE ${name} ${family.gauge ? 'gauge' : 'counter'}`);
    out.push(...family.series);
  }
  return out.join('\n') + '\n' + extra.join('');
}
