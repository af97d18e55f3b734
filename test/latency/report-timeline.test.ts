// `report --log FILE --html OUT`, latency over time: a log written by the interval-log writer with
// one host slow during one known interval. The report's timeline data and the page as Chromium
// renders it (its DOM, and a screenshot) must show p99 stepping up at that interval and only
// there, for that host and not for the steady one.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLatencyLog } from '../../src/latency/interval-log';
import { closeLatencyPool } from '../../src/latency/merge-pool';
import { reportFromLogText } from '../../src/latency/report-data';
import { renderReportHtml } from '../../src/latency/report-html';
import { combineIntervals, type TimelinePoint } from '../../src/latency/report-timeline';
import { latencies, StaticSource, workerExport, type Recorded } from './helpers';
import { colourCount, decodePng, inkRatio } from './png';

const dir = mkdtempSync(join(tmpdir(), 'splicegate-timeline-'));
const logPath = join(dir, 'latency.hlog');
const T0 = 1_700_000_000_000;
const INTERVAL_MS = 10_000;
const INTERVALS = 6;
/** The interval (0-based) during which SLOW answers in ~250 ms instead of ~4 ms. */
const SLOW_INTERVAL = 3;
const SLOW = '10.0.3.7:443';
const STEADY = '10.0.4.7:443';

before(async () => {
  const global: Recorded = { connect: [], proxy_overhead: [], ttfb: [], duration: [] };
  const hosts: Record<string, Recorded> = { [SLOW]: { connect: [], ttfb: [], duration: [] }, [STEADY]: { connect: [], ttfb: [], duration: [] } };
  const source = new StaticSource([workerExport(global, hosts)]);
  let clock = T0;
  const log = await startLatencyLog(logPath, 3_600_000, source, { now: () => clock });
  for (let i = 0; i < INTERVALS; i++) {
    for (const [host, n, seed] of [[SLOW, 400, 10], [STEADY, 600, 20]] as const) {
      const ttfb = latencies(n, host === SLOW && i === SLOW_INTERVAL ? 250_000 : 4_000, seed + i);
      const connect = latencies(n, 500, seed + i + 100);
      const h = hosts[host] as Recorded;
      h.ttfb?.push(...ttfb);
      h.connect?.push(...connect);
      h.duration?.push(...ttfb.map((t) => t + 20_000));
      global.ttfb?.push(...ttfb);
      global.connect?.push(...connect);
      global.duration?.push(...ttfb.map((t) => t + 20_000));
      global.proxy_overhead?.push(...latencies(n, 30, seed + i + 200));
    }
    source.workerExports = [workerExport(global, hosts)];
    clock += INTERVAL_MS;
    await log.flush();
  }
  await log.close();
});

after(async () => {
  await closeLatencyPool();
  rmSync(dir, { recursive: true, force: true });
});

const startOf = (i: number): number => T0 + i * INTERVAL_MS;

test('the report from a log holds p50/p99/max per interval, per metric and per busy host', () => {
  const report = reportFromLogText(readFileSync(logPath, 'utf8'), logPath);
  const timeline = report.timeline;
  assert.ok(timeline, 'a report from a log has a timeline');
  assert.equal(timeline.startMs, T0);
  // The writer's close() adds a last, empty interval (0 s long) after the six.
  assert.deepEqual(timeline.intervalStarts.slice(0, INTERVALS), Array.from({ length: INTERVALS }, (_, i) => startOf(i)));
  const slow = timeline.hosts.get(SLOW)?.ttfb ?? [];
  const steady = timeline.hosts.get(STEADY)?.ttfb ?? [];
  assert.equal(slow.filter((p) => p.count > 0).length, INTERVALS);
  for (const [i, p] of slow.filter((q) => q.count > 0).entries()) {
    assert.equal(p.startMs, startOf(i));
    assert.equal(p.count, 400);
    const p99 = (p.p99 ?? 0) / 1000;
    if (i === SLOW_INTERVAL) assert.ok(p99 > 250, `slow interval p99 ${p99} ms`);
    else assert.ok(p99 < 50, `interval ${i} p99 ${p99} ms`);
  }
  for (const p of steady.filter((q) => q.count > 0)) assert.ok((p.p99 ?? 0) / 1000 < 50, `steady host p99 ${(p.p99 ?? 0) / 1000} ms at ${p.startMs}`);
  // Proxy-wide ttfb carries the slow host's step too (400 of 1000 samples: p50 stays low).
  const global = (timeline.global.ttfb ?? []).filter((p) => p.count > 0);
  assert.equal(global.length, INTERVALS);
  assert.ok((global[SLOW_INTERVAL]?.p99 ?? 0) / 1000 > 250);
  assert.ok((global[SLOW_INTERVAL]?.p50 ?? Infinity) / 1000 < 50);
  assert.ok((global[SLOW_INTERVAL - 1]?.p99 ?? Infinity) / 1000 < 50);
});

test('a long log is combined into columns whose p99 and max are the slowest interval\'s', () => {
  const point = (i: number, p99: number): TimelinePoint => ({ startMs: i * 1000, endMs: (i + 1) * 1000, count: 10, p50: 100, p99, max: p99 * 2 });
  const points = Array.from({ length: 10 }, (_, i) => point(i, i === 7 ? 90_000 : 1_000));
  const columns = combineIntervals(points, 0, 5000);
  assert.equal(columns.length, 2);
  assert.deepEqual(
    columns.map((c) => [c.startMs, c.endMs, c.count, c.intervals, c.p50, c.p99, c.max]),
    [
      [0, 5000, 50, 5, 100, 1_000, 2_000],
      [5000, 10_000, 50, 5, 100, 90_000, 180_000],
    ],
  );
  // Columns no wider than the intervals: every interval is its own column.
  assert.equal(combineIntervals(points, 0, 1000).length, 10);
});

function findChromium(): string {
  for (const name of ['chromium', 'chromium-browser']) {
    const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim();
    if (found !== '') return found;
  }
  throw new Error('chromium is not installed: run `apt-get install -y chromium` (scripts/system-deps.sh does it on npm install)');
}

function chromium(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(
    findChromium(),
    ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', `--user-data-dir=${join(dir, 'chromium-profile')}`, ...args],
    { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
  );
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The intervals of one timeline chart, as the browser's DOM holds them. */
function chartIntervals(dom: string, tag: string): Array<{ start: string; count: number; p99: number | null }> {
  const open = dom.indexOf(`data-tag="${tag}"`);
  assert.ok(open >= 0, `no timeline chart for ${tag}`);
  const svg = dom.slice(open, dom.indexOf('</svg>', open));
  return [...svg.matchAll(/<g class="iv" data-start="([^"]+)" data-end="[^"]+" data-count="(\d+)" data-intervals="\d+" data-p50="[^"]*" data-p99="([^"]*)"/g)].map((m) => ({
    start: m[1] as string,
    count: Number(m[2]),
    p99: m[3] === '' ? null : Number(m[3]),
  }));
}

test('rendered by headless Chromium, the page shows the slow host\'s p99 step at its interval', () => {
  const htmlPath = join(dir, 'timeline.html');
  writeFileSync(htmlPath, renderReportHtml(reportFromLogText(readFileSync(logPath, 'utf8'), logPath)));
  const html = readFileSync(htmlPath, 'utf8');
  assert.doesNotMatch(html, /\ssrc=|<link|url\(|<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'self-contained');

  const dump = chromium(['--dump-dom', `file://${htmlPath}`]);
  assert.equal(dump.status, 0, dump.stderr.slice(-2000));
  const dom = dump.stdout;
  for (const tag of ['connect', 'proxy_overhead', 'ttfb', 'duration', `ttfb@${SLOW}`, `connect@${STEADY}`]) assert.ok(dom.includes(`data-tag="${tag}"`), tag);

  const slow = chartIntervals(dom, `ttfb@${SLOW}`).filter((iv) => iv.count > 0);
  assert.equal(slow.length, INTERVALS);
  const slowStart = new Date(startOf(SLOW_INTERVAL)).toISOString();
  const stepped = slow.filter((iv) => (iv.p99 ?? 0) > 250).map((iv) => iv.start);
  assert.deepEqual(stepped, [slowStart], 'p99 above 250 ms in exactly the slow interval');
  assert.ok(slow.every((iv) => iv.start === slowStart || (iv.p99 ?? Infinity) < 50));
  assert.ok(chartIntervals(dom, `ttfb@${STEADY}`).every((iv) => iv.count === 0 || (iv.p99 ?? Infinity) < 50), 'the steady host never steps');
  // The tooltip says the same in words.
  assert.match(dom, new RegExp(`<title>${slowStart.slice(11, 19)}–[0-9:]{8}: 400 samples, p50 [\\d.]+ ms, p99 [\\d.]+ ms`));
});

test('the timeline page renders in headless Chromium: screenshot exists and is not blank', () => {
  const htmlPath = join(dir, 'timeline.html');
  if (!existsSync(htmlPath)) writeFileSync(htmlPath, renderReportHtml(reportFromLogText(readFileSync(logPath, 'utf8'), logPath)));
  const shot = join(dir, 'timeline.png');
  // Tall enough to reach the per-host charts at the bottom of the page.
  const run = chromium([`--screenshot=${shot}`, '--window-size=1200,3200', `file://${htmlPath}`]);
  assert.ok(existsSync(shot), `no screenshot; chromium exited ${run.status}: ${run.stderr.slice(-2000)}`);
  const pixels = decodePng(readFileSync(shot));
  assert.equal(pixels.width, 1200);
  assert.ok(inkRatio(pixels) > 0.2, 'screenshot looks blank');
  assert.ok(colourCount(pixels) > 50, 'too few colours for text plus coloured lines');
  if (process.env['SPLICEGATE_KEEP_SCREENSHOT']) copyFileSync(shot, process.env['SPLICEGATE_KEEP_SCREENSHOT']);
});
