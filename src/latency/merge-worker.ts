// Entry point of the merge pool's worker thread (piscina loads the compiled file by path).

import { runMergeTask, type MergeRequest } from './merge-tasks';

export default function mergeWorker(request: MergeRequest): unknown {
  return runMergeTask(request);
}
