// `splicegate run --latency-log FILE`: an HdrHistogram interval log (format 1.3), one interval of
// every metric (and of the interval's busiest hosts) every intervalMs. Readable by HdrHistogram's
// HistogramLogProcessor (`-tag connect`), by hdr-histogram-js' HistogramLogReader and by
// `splicegate report --log FILE`. The merge runs on the merge pool's thread.

import { open, type FileHandle } from 'node:fs/promises';
import { HistogramLogWriter } from 'hdr-histogram-js';
import type { Logger } from '../util/logger';
import type { IntervalState } from './interval-lines';
import { runOnMergePool } from './merge-pool';
import type { LatencySource } from './source';

export const DEFAULT_LATENCY_LOG_INTERVAL_MS = 5_000;
/** Hosts logged per interval besides the proxy-wide histograms. */
export const DEFAULT_LOG_TOP_HOSTS = 10;

export interface LatencyLogOptions {
  topHosts?: number;
  log?: Pick<Logger, 'warn'>;
  /** For tests: the clock, in ms since the epoch. */
  now?: () => number;
}

export interface LatencyLog {
  path: string;
  /** Writes the interval up to now at once (the timer keeps its own rhythm). */
  flush(): Promise<void>;
  /** Writes a last interval and closes the file. */
  close(): Promise<void>;
}

function header(startMs: number): string {
  let text = '';
  const writer = new HistogramLogWriter((chunk) => (text += chunk));
  writer.outputComment('[Logged with splicegate: latency in microseconds, Interval_Max in milliseconds]');
  writer.outputComment('[Tags: connect, proxy_overhead, ttfb, duration; busiest hosts as <metric>@<ip:port>]');
  writer.outputLogFormatVersion();
  // Written by hand rather than outputStartTime(), which leaves an empty line behind its comment.
  const startSec = (startMs / 1000).toFixed(3);
  writer.outputComment(`[StartTime: ${startSec} (seconds since epoch), ${new Date(startMs).toISOString()}]`);
  writer.outputComment(`[BaseTime: ${startSec} (seconds since epoch)]`);
  writer.outputLegend();
  return text;
}

export async function startLatencyLog(path: string, intervalMs: number, source: LatencySource, options: LatencyLogOptions = {}): Promise<LatencyLog> {
  const now = options.now ?? Date.now;
  const topHosts = options.topHosts ?? DEFAULT_LOG_TOP_HOSTS;
  const startMs = now();
  const file: FileHandle = await open(path, 'w');
  await file.write(header(startMs));

  let previous: IntervalState | null = null;
  let intervalStartMs = startMs;
  // Intervals are written one at a time, in order; a tick that finds one still queued or running
  // is skipped (the next interval is simply longer) rather than queued behind it.
  let chain: Promise<void> = Promise.resolve();
  let pending = 0;
  let closed = false;

  const writeInterval = async (): Promise<void> => {
    const endMs = now();
    const output = await runOnMergePool('interval', {
      workerExports: await source.collect(),
      previous,
      startSec: (intervalStartMs - startMs) / 1000,
      endSec: (endMs - startMs) / 1000,
      topHosts,
    });
    previous = output.state;
    intervalStartMs = endMs;
    if (output.text !== '') await file.write(output.text);
  };
  const runInterval = (): Promise<void> => {
    pending += 1;
    chain = chain
      .then(writeInterval)
      .catch((err: unknown) => {
        options.log?.warn('latency log interval failed', { path, error: err instanceof Error ? err.message : String(err) });
      })
      .finally(() => {
        pending -= 1;
      });
    return chain;
  };

  const timer = setInterval(() => {
    if (pending === 0) void runInterval();
  }, intervalMs);
  timer.unref();

  return {
    path,
    flush: runInterval,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      await runInterval();
      await file.close();
    },
  };
}
