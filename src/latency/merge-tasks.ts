// The CPU-bound latency work, as plain functions of plain data: runnable inline (tests, the report
// command) or on the merge pool's worker thread (the running proxy), with the same results.

import { hdrExport, type HdrLatencyExport } from './hdr-export';
import { intervalLines, type IntervalInput, type IntervalOutput } from './interval-lines';
import { mergeExports } from './merge';
import { latencyPlots, type LatencyPlots } from './plots';
import { formatPrometheusHistograms, prometheusHistograms } from './prometheus';
import type { WorkerLatencyExport } from './source';
import { summarizeLatency, type LatencySummary } from './summary';

type Exports = readonly WorkerLatencyExport[];

export const MERGE_TASKS = {
  summary: (workerExports: Exports): LatencySummary => summarizeLatency(mergeExports(workerExports)),
  hdr: (workerExports: Exports): HdrLatencyExport => hdrExport(mergeExports(workerExports)),
  plots: (workerExports: Exports): LatencyPlots => latencyPlots(mergeExports(workerExports)),
  prometheus: (workerExports: Exports): string => formatPrometheusHistograms(prometheusHistograms(workerExports)),
  interval: (input: IntervalInput): IntervalOutput => intervalLines(input),
};

export type MergeTaskName = keyof typeof MERGE_TASKS;
export type MergeInput<K extends MergeTaskName> = Parameters<(typeof MERGE_TASKS)[K]>[0];
export type MergeOutput<K extends MergeTaskName> = ReturnType<(typeof MERGE_TASKS)[K]>;

export interface MergeRequest<K extends MergeTaskName = MergeTaskName> {
  kind: K;
  input: MergeInput<K>;
}

export function runMergeTask<K extends MergeTaskName>(request: MergeRequest<K>): MergeOutput<K> {
  const task = MERGE_TASKS[request.kind] as (input: MergeInput<K>) => MergeOutput<K>;
  return task(request.input);
}
