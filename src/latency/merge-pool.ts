// A one-thread piscina pool for the latency merges, so decoding and merging thousands of buckets
// per worker and host never runs on the main thread, where the admin endpoint and the supervisor
// live. One thread is enough: requests are rare (scrapes, log intervals) and a second thread would
// only take the other core from the data plane.

import { join } from 'node:path';
import Piscina from 'piscina';
import type { MergeInput, MergeOutput, MergeRequest, MergeTaskName } from './merge-tasks';

/** Requests queued beyond this are refused at once instead of piling up behind a slow merge. */
const MAX_QUEUE = 64;

let pool: Piscina<MergeRequest, unknown> | undefined;

function sharedPool(): Piscina<MergeRequest, unknown> {
  pool ??= new Piscina<MergeRequest, unknown>({
    // Compiled next to this file: dist/src/latency/merge-worker.js.
    filename: join(__dirname, 'merge-worker.js'),
    minThreads: 1,
    maxThreads: 1,
    // An idle merge thread is unref'd by piscina, so it never keeps the process alive.
    idleTimeout: 60_000,
    maxQueue: MAX_QUEUE,
  });
  return pool;
}

/** Runs a merge task on the pool's thread. */
export async function runOnMergePool<K extends MergeTaskName>(kind: K, input: MergeInput<K>): Promise<MergeOutput<K>> {
  const request: MergeRequest<K> = { kind, input };
  return (await sharedPool().run(request)) as MergeOutput<K>;
}

/** Stops the pool's thread (at shutdown, and at the end of tests). Safe to call when never used. */
export async function closeLatencyPool(): Promise<void> {
  const current = pool;
  pool = undefined;
  if (current !== undefined) await current.destroy();
}
