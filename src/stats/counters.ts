// Sums the workers' counter blocks into one named view, and keeps the totals of workers that died
// so a restart never makes a counter go backwards (Prometheus treats that as a reset).

/** Stats that describe "now" rather than accumulate: summed across live workers, never retired. */
const GAUGES = new Set([
  'downstream_cx_active',
  'upstream_cx_active',
  'pipes_in_use',
  'pipes_idle',
  'listeners_active',
  'host_count',
  'admin_cx_active',
]);

export function isGauge(name: string): boolean {
  return GAUGES.has(name);
}

export type CounterValues = Record<string, number>;

export class CounterAggregator {
  private readonly retired: Float64Array;

  constructor(private readonly names: readonly string[]) {
    this.retired = new Float64Array(names.length);
  }

  /** A worker is gone: its last counters stay in the totals, its gauges do not. */
  retire(lastSnapshot: Float64Array): void {
    this.names.forEach((name, i) => {
      if (!isGauge(name)) this.retired[i] += lastSnapshot[i] ?? 0;
    });
  }

  sum(live: readonly Float64Array[]): CounterValues {
    const out: CounterValues = {};
    this.names.forEach((name, i) => {
      let total = this.retired[i];
      for (const snapshot of live) total += snapshot[i] ?? 0;
      out[name] = total;
    });
    return out;
  }
}
