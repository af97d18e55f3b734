// `splicegate report --log FILE` on a damaged or hostile log: every histogram line is checked
// before hdr-histogram-js decodes it (src/latency/log-check.ts), so the report ends in an error that
// names the line, where the library alone would read on for billions of steps, walk a run of 2^40
// empty buckets, or inflate a few megabytes into gigabytes.

import { test } from 'node:test';
import { once } from 'node:events';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import assert from 'node:assert/strict';
import { inflateSync, deflateSync } from 'node:zlib';
import { build, HistogramLogWriter } from 'hdr-histogram-js';
import { reportFromLogText } from '../../src/latency/report-data';
import { encodedHistogramProblem, MAX_BUCKETS } from '../../src/latency/log-check';
import { HDR_EXPORT_FORMAT } from '../../src/latency/hdr-export';

/** A log of one interval with one ttfb histogram, as `run --latency-log` writes it. */
function validLog(): { text: string; encoded: string } {
  const h = build({ numberOfSignificantValueDigits: 3, highestTrackableValue: 60_000_000 });
  h.recordValue(100);
  h.recordValue(2000);
  h.startTimeStampMsec = 1_700_000_000_000;
  h.endTimeStampMsec = 1_700_000_005_000;
  h.tag = 'ttfb';
  let text = '';
  const writer = new HistogramLogWriter((s: string) => {
    text += s;
  });
  writer.outputLogFormatVersion();
  writer.outputStartTime(1_700_000_000_000);
  writer.outputLegend();
  writer.outputIntervalHistogram(h);
  const encoded = text.trim().split('\n').pop()!.split(',').pop()!;
  return { text, encoded };
}

/** The log with its histogram's inflated bytes (header + payload) replaced by what `change` makes of them. */
function withInflated(change: (raw: Buffer) => Buffer): string {
  const { text, encoded } = validLog();
  const outer = Buffer.from(encoded, 'base64');
  const compressed = deflateSync(change(inflateSync(outer.subarray(8))));
  const head = Buffer.alloc(8);
  outer.copy(head, 0, 0, 4);
  head.writeInt32BE(compressed.length, 4);
  return text.replace(encoded, Buffer.concat([head, compressed]).toString('base64'));
}

/** The header of the valid histogram followed by `payload`, its payload length set to match. */
function withPayload(payload: Buffer): string {
  return withInflated((raw) => {
    const out = Buffer.concat([raw.subarray(0, 40), payload]);
    out.writeInt32BE(payload.length, 4);
    return out;
  });
}

/** LEB128 of a non-negative integer below 2^53, as the ZigZag encoding stores it. */
function leb128(value: number): Buffer {
  const bytes: number[] = [];
  do {
    const low = value % 128;
    value = Math.floor(value / 128);
    bytes.push(value > 0 ? low | 0x80 : low);
  } while (value > 0);
  return Buffer.from(bytes);
}

/**
 * The error reportFromLogText throws on `text`, read in a worker thread: without the check some of
 * these inputs keep the decoder busy for minutes or more, and a synchronous hang on the test's own
 * thread could not be stopped. LIVENESS_MS bounds it (the checked inputs take milliseconds).
 */
const LIVENESS_MS = 60_000;
async function reportError(text: string): Promise<string> {
  return errorIn('report-data.js', 'reportFromLogText', [text, 'damaged.hlog']);
}

/** The error src/latency/<file>'s `fn` throws on `args`, run in a worker thread as above. */
async function errorIn(file: string, fn: string, args: unknown[]): Promise<string> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const fn = require(workerData.module)[workerData.fn];
    try {
      fn(...workerData.args);
      parentPort.postMessage({ read: true });
    } catch (err) {
      parentPort.postMessage({ message: err.message });
    }`;
  const worker = new Worker(code, { eval: true, workerData: { fn, args, module: join(__dirname, '../../src/latency', file) } });
  try {
    const result = await Promise.race([
      once(worker, 'message').then(([m]) => m as { read?: true; message?: string }),
      delay(LIVENESS_MS, undefined, { ref: false }).then(() => assert.fail(`no answer within ${LIVENESS_MS} ms: the decoder is still busy`)),
    ]);
    if (result.read) assert.fail('the damaged log was read as if it were whole');
    return result.message ?? '';
  } finally {
    await worker.terminate();
  }
}

test('a whole log passes the check and reads', () => {
  const { text, encoded } = validLog();
  assert.equal(encodedHistogramProblem(encoded), null);
  const report = reportFromLogText(text, 'whole.hlog');
  assert.equal(report.global.ttfb?.totalCount, 2);
});

test('a payload length past the payload: an error naming the line, not billions of reads past the end', async () => {
  const text = withInflated((raw) => {
    const out = Buffer.from(raw);
    out.writeInt32BE(0x7fffffff, 4);
    return out;
  });
  assert.equal(await reportError(text), 'damaged.hlog, line 5: its payload length runs past its end');
});

test('a run of 2^40 empty buckets: an error, not a walk through all of them', async () => {
  // ZigZag: an odd value v is a run of (v + 1) / 2 empty buckets.
  const text = withPayload(leb128(2 ** 41 - 1));
  assert.equal(await reportError(text), `damaged.hlog, line 5: its counts cover more than ${MAX_BUCKETS} buckets`);
});

test('a histogram that inflates past the bound (here 200 MiB of zeros) is refused there', async () => {
  const text = withPayload(Buffer.alloc(200 * 1024 * 1024));
  assert.match(await reportError(text), /^damaged\.hlog, line 5: it inflates to more than \d+ bytes$/);
});

test('a count cut off at the payload end, timestamps that are not numbers, and text that is not base64 name their line', async () => {
  assert.equal(await reportError(withPayload(Buffer.from([0x80, 0x80]))), 'damaged.hlog, line 5: a count runs past the end of the histogram');
  const { text, encoded } = validLog();
  const line = text.trim().split('\n').pop()!;
  const [tag, , length, max] = line.split(',');
  assert.equal(await reportError(text.replace(line, [tag, 'abc', length, max, encoded].join(','))), 'damaged.hlog, line 5: the interval start is not a number');
  assert.equal(await reportError(text.replace(encoded, 'not base64!')), 'damaged.hlog, line 5: the histogram is not base64');
  assert.equal(await reportError(text.replace(encoded, 'AAAA')), 'damaged.hlog, line 5: the histogram is shorter than its header');
});

test('a histogram the library itself refuses (here: 6 significant digits) is an error naming its line too', async () => {
  const text = withInflated((raw) => {
    const out = Buffer.from(raw);
    out.writeInt32BE(6, 12);
    return out;
  });
  assert.match(await reportError(text), /^damaged\.hlog, line 5: numberOfSignificantValueDigits/);
});

test('report --admin: a histogram in the endpoint\'s answer is checked the same way (the URL may name any server)', async () => {
  const hostile = withPayload(leb128(2 ** 41 - 1)).trim().split('\n').pop()!.split(',').pop()!;
  const answer = { format: HDR_EXPORT_FORMAT, workers: 1, global: {}, hosts: { '10.0.0.7:443': { ttfb: hostile } }, other_hosts: {} };
  assert.equal(await errorIn('hdr-export.js', 'decodeHdrExport', [answer]), `hosts["10.0.0.7:443"].ttfb: its counts cover more than ${MAX_BUCKETS} buckets`);
});
