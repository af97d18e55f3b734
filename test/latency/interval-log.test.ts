// The latency interval log: HdrHistogram log format, one tagged histogram per metric (and busiest
// host) per interval holding only that interval's samples, readable by hdr-histogram-js.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HistogramLogReader, listTags, type Histogram } from 'hdr-histogram-js';
import { startLatencyLog } from '../../src/latency/interval-log';
import { closeLatencyPool } from '../../src/latency/merge-pool';
import { StaticSource, workerExport, type Recorded } from './helpers';

const dir = mkdtempSync(join(tmpdir(), 'splicegate-latency-log-'));
after(async () => {
  await closeLatencyPool();
  rmSync(dir, { recursive: true, force: true });
});

function readAll(content: string): Histogram[] {
  const reader = new HistogramLogReader(content, 64);
  const out: Histogram[] = [];
  for (let h = reader.nextIntervalHistogram(); h !== null; h = reader.nextIntervalHistogram()) out.push(h);
  return out;
}

test('each interval holds only its own samples; the log round-trips through the reader', async () => {
  const path = join(dir, 'latency.hlog');
  let clock = 1_700_000_000_000;
  const cumulative: Recorded = { connect: [], ttfb: [] };
  const host: Recorded = { connect: [] };
  const source = new StaticSource([]);
  const update = (): void => {
    source.workerExports = [workerExport(cumulative, { '10.0.0.7:443': host }), workerExport({ connect: [] })];
  };
  update();
  const log = await startLatencyLog(path, 60_000, source, { now: () => clock });

  cumulative.connect?.push(100, 200, 300);
  host.connect?.push(100, 200);
  update();
  clock += 5_000;
  await log.flush();

  cumulative.connect?.push(5_000);
  cumulative.ttfb?.push(42);
  update();
  clock += 5_000;
  await log.close();

  const content = readFileSync(path, 'utf8');
  assert.match(content, /^#\[Histogram log format version 1\.3\]$/m);
  assert.match(content, /^#\[StartTime: 1700000000\.000 \(seconds since epoch\), /m);
  assert.match(content, /^"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"$/m);
  assert.deepEqual(listTags(content).sort(), ['connect', 'connect@10.0.0.7:443', 'duration', 'duration@10.0.0.7:443', 'proxy_overhead', 'ttfb', 'ttfb@10.0.0.7:443']);

  const histograms = readAll(content);
  const byTag = (tag: string): Histogram[] => histograms.filter((h) => h.tag === tag);
  const connect = byTag('connect');
  assert.equal(connect.length, 2);
  assert.deepEqual(connect.map((h) => h.totalCount), [3, 1]);
  assert.equal(connect[1]?.getValueAtPercentile(50), 5_003); // highest equivalent of 5000 at 3 digits
  // Absolute times: start + offset, intervals back to back.
  assert.deepEqual(connect.map((h) => [h.startTimeStampMsec, h.endTimeStampMsec]), [
    [1_700_000_000_000, 1_700_000_005_000],
    [1_700_000_005_000, 1_700_000_010_000],
  ]);
  assert.deepEqual(byTag('ttfb').map((h) => h.totalCount), [0, 1]);
  // The host appears only in the interval where it had connections.
  assert.deepEqual(byTag('connect@10.0.0.7:443').map((h) => h.totalCount), [2]);
  // Interval_Max is in milliseconds.
  assert.match(content, /^Tag=connect,5\.000,5\.000,5\.000,/m);
});

test('a shrinking cumulative (restarted worker) gives an empty interval, not a negative one', async () => {
  const path = join(dir, 'restart.hlog');
  const source = new StaticSource([workerExport({ connect: [10, 20, 30] })]);
  const log = await startLatencyLog(path, 60_000, source);
  await log.flush();
  source.workerExports = [workerExport({ connect: [10] })];
  await log.flush();
  source.workerExports = [workerExport({ connect: [10, 40] })];
  await log.close();
  const counts = readAll(readFileSync(path, 'utf8')).filter((h) => h.tag === 'connect').map((h) => h.totalCount);
  assert.deepEqual(counts, [3, 0, 1]);
});

test('a host\'s ttfb and duration recorded after the interval of its connect are logged in their own interval', async () => {
  const path = join(dir, 'late.hlog');
  const host: Recorded = { connect: [], ttfb: [], duration: [] };
  const refused: Recorded = { duration: [] };
  const source = new StaticSource([]);
  const update = (): void => {
    source.workerExports = [workerExport({}, { '10.0.0.7:443': host, '10.0.0.9:80': refused })];
  };
  update();
  const log = await startLatencyLog(path, 60_000, source);
  host.connect?.push(150);  // a long connection opens in the first interval...
  update();
  await log.flush();
  host.ttfb?.push(2_000);  // ...its first byte comes in the second...
  refused.duration?.push(90);  // (a connection whose connect failed records only its duration)
  update();
  await log.flush();
  host.duration?.push(30_000_000);  // ...and it closes in the third
  update();
  await log.close();
  const histograms = readAll(readFileSync(path, 'utf8'));
  const counts = (tag: string): number[] => histograms.filter((h) => h.tag === tag).map((h) => h.totalCount);
  // Every sample of the host is in the log, in the interval it was recorded in.
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  assert.equal(sum(counts('connect@10.0.0.7:443')), 1);
  assert.equal(sum(counts('ttfb@10.0.0.7:443')), 1);
  assert.equal(sum(counts('duration@10.0.0.7:443')), 1);
  assert.equal(sum(counts('duration@10.0.0.9:80')), 1);
  assert.equal(counts('duration@10.0.0.7:443').at(-1), 1, 'the duration is in the last interval');
});
