// Where latency comes from: one export per worker, exactly as the addon's latency() returns it
// (format: native-format.ts). The runtime implements LatencySource over its workers; tests and
// benchmarks can implement it with encodeLatencySets().

export interface WorkerLatencyExport {
  /** One set: every metric of this worker. */
  global: Float64Array;
  /** "10.0.0.7:443", "[2001:db8::1]:443": the worker's tracked hosts, in the order of `hosts`. */
  hostAddresses: string[];
  /** One set per tracked host (per-host metrics only). */
  hosts: Float64Array;
  /** One set: per-host metrics of every host without a slot of its own. */
  otherHosts: Float64Array;
}

export interface LatencySource {
  /**
   * The current cumulative export of every worker. Include the last export of workers that have
   * exited (as CounterAggregator.retire does for counters) so totals never go backwards.
   */
  collect(): Promise<WorkerLatencyExport[]>;
}

/**
 * Readers that arrive while a collect is under way share it: the dashboard reads two latency views
 * at once, and the workers are asked once. Nothing is cached past the answer, so no reader gets
 * figures older than its own request.
 */
export function sharedCollect(source: LatencySource): LatencySource {
  let inFlight: Promise<WorkerLatencyExport[]> | undefined;
  return {
    collect: () =>
      (inFlight ??= source.collect().finally(() => {
        inFlight = undefined;
      })),
  };
}
