// Sums the workers' counter blocks into one named view, and keeps the totals of workers that died
// or of config generations that retired, so neither a restart nor a reload ever makes a counter go
// backwards (Prometheus treats that as a reset). Blocks are summed by name: a reload may change
// the policy and listener counters a worker's block ends with; a retired rule's or listener's
// total stays, and a listener kept across a reload sums its generations into one total.

import { parseListenerCounter } from './listeners';

/** Stats that describe "now" rather than accumulate: summed across live workers, never retired. */
const GAUGES = new Set([
  'downstream_cx_active',
  'upstream_cx_active',
  'pipes_in_use',
  'pipes_idle',
  'listeners_active',
  'host_count',
  'udp_sessions_active',
  'admin_cx_active',
  'config_generation',
  'config_generations_live',
  'workers_orphaned',
]);

/** A per-listener stat (listener.<name>.<stat>) is a gauge when the worker-wide one is. */
export function isGauge(name: string): boolean {
  return GAUGES.has(name) || GAUGES.has(parseListenerCounter(name)?.stat ?? '');
}

export type CounterValues = Record<string, number>;

/** One worker's counters and the names of its block's slots (a generation's names). */
export interface CounterBlock {
  names: readonly string[];
  values: Float64Array;
}

export class CounterAggregator {
  private readonly retired = new Map<string, number>();

  /** names: the counters every block starts with (the core's stats), listed first in every sum. */
  constructor(private readonly names: readonly string[]) {}

  /** A worker is gone: its last counters stay in the totals, its gauges do not. */
  retire(lastSnapshot: Float64Array, names: readonly string[] = this.names): void {
    names.forEach((name, i) => {
      if (!isGauge(name)) this.retired.set(name, (this.retired.get(name) ?? 0) + (lastSnapshot[i] ?? 0));
    });
  }

  /** Live blocks with the default names. */
  sum(live: readonly Float64Array[]): CounterValues {
    return this.sumBlocks(live.map((values) => ({ names: this.names, values })));
  }

  sumBlocks(live: readonly CounterBlock[]): CounterValues {
    const out: CounterValues = {};
    for (const name of this.names) out[name] = this.retired.get(name) ?? 0;
    for (const [name, value] of this.retired) out[name] = value;
    for (const block of live) {
      block.names.forEach((name, i) => {
        out[name] = (out[name] ?? 0) + (block.values[i] ?? 0);
      });
    }
    return out;
  }
}
