// `splicegate report`: the text report from a latency log and from an admin endpoint, usage
// errors, and the HTML page rendered by headless Chromium (screenshot produced and not blank).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLatencyLog } from '../../src/latency/interval-log';
import { latencyResponse } from '../../src/latency/latency-views';
import { closeLatencyPool } from '../../src/latency/merge-pool';
import { reportFromLogText } from '../../src/latency/report-data';
import { renderReportHtml } from '../../src/latency/report-html';
import { latencies, StaticSource, workerExport, type Recorded } from './helpers';
import { colourCount, decodePng, inkRatio } from './png';

const CLI = join(__dirname, '..', '..', 'src', 'cli.js');
const dir = mkdtempSync(join(tmpdir(), 'splicegate-report-'));
const logPath = join(dir, 'latency.hlog');

function hostsTraffic(): Record<string, Recorded> {
  const hosts: Record<string, Recorded> = {};
  for (let i = 0; i < 12; i++) {
    const n = 2000 - i * 150;
    hosts[`10.0.${i}.7:443`] = { connect: latencies(n, 300 + 120 * i, i + 1), ttfb: latencies(n, 4000 + 900 * i, i + 50), duration: latencies(n, 80_000 + 20_000 * i, i + 90) };
  }
  hosts['[2001:db8::1]:8443'] = { connect: latencies(700, 900, 7), ttfb: latencies(700, 12_000, 8), duration: latencies(700, 300_000, 9) };
  return hosts;
}

function globalTraffic(seed: number): Recorded {
  return {
    connect: latencies(20_000, 600, seed),
    proxy_overhead: latencies(20_000, 25, seed + 1),
    ttfb: latencies(20_000, 6_000, seed + 2),
    duration: latencies(20_000, 150_000, seed + 3),
  };
}

const source = new StaticSource([workerExport(globalTraffic(1), hostsTraffic()), workerExport(globalTraffic(100))]);

before(async () => {
  // Two intervals: one before any traffic, one with all of it.
  let clock = 1_700_000_000_000;
  const live = new StaticSource([workerExport({})]);
  const log = await startLatencyLog(logPath, 60_000, live, { now: () => clock });
  clock += 5_000;
  await log.flush();
  live.workerExports = source.workerExports;
  clock += 5_000;
  await log.close();
});

after(async () => {
  await closeLatencyPool();
  rmSync(dir, { recursive: true, force: true });
});

function splicegate(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('report --log prints the percentile distribution of every metric and the busiest hosts', () => {
  const run = splicegate('report', '--log', logPath);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, new RegExp(`^splicegate latency report: ${logPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n`));
  for (const metric of ['connect', 'proxy_overhead', 'ttfb', 'duration']) assert.match(run.stdout, new RegExp(`^== ${metric}: `, 'm'));
  // HdrHistogram's table: header, then rows, then the mean/max/count footer.
  assert.match(run.stdout, /^ {7}Value {5}Percentile TotalCount 1\/\(1-Percentile\)$/m);
  assert.match(run.stdout, /^#\[Max {5}= +[\d.]+, Total count {4}= +40000\]$/m);
  assert.match(run.stdout, /^== busiest hosts \(top 10\), milliseconds$/m);
  assert.match(run.stdout, /^10\.0\.0\.7:443 +2000 /m);
});

/** Serves the test's histograms on GET /latency like the admin server; listens on the first of ports it can bind. */
async function liveEndpoint(ports: readonly number[]): Promise<{ server: Server; port: number }> {
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    void latencyResponse(source, url.searchParams.get('format')).then((r) => {
      res.writeHead(url.pathname === '/latency' ? r.status : 404, { 'content-type': r.contentType });
      res.end(r.body);
    });
  });
  for (const want of ports) {
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(want, '127.0.0.1', () => resolve(true));
    });
    if (bound) return { server, port: (server.address() as AddressInfo).port };
  }
  throw new Error(`none of the ports ${ports.join(', ')} could be bound`);
}

async function reportFrom(ports: readonly number[]): Promise<void> {
  const { server, port } = await liveEndpoint(ports);
  try {
    const child = spawn(process.execPath, [CLI, 'report', '--admin', `http://127.0.0.1:${port}`]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const status = await new Promise<number | null>((r) => child.on('exit', r));
    assert.equal(status, 0, stderr);
    assert.match(stdout, new RegExp(`^splicegate latency report: http://127\\.0\\.0\\.1:${port}\nlive, merged over 2 workers`));
    assert.match(stdout, /^#\[Max {5}= +[\d.]+, Total count {4}= +40000\]$/m);
    assert.match(stdout, /^\[2001:db8::1\]:8443 +700 /m);
  } finally {
    server.close();
  }
}

test('report --admin reads GET /latency?format=hdr from a live endpoint', () => reportFrom([0]));

// fetch() refuses these ports (the fetch standard's "bad ports": "fetch failed ... bad port"); an
// admin server may listen on any port.
test('report --admin reads an admin endpoint on a port that browsers block (10080, 6665-6669)', () => reportFrom([10080, 6665, 6666, 6667, 6668, 6669]));

test('report: usage errors exit 2, an unreachable admin endpoint exits 1', async () => {
  const both = splicegate('report', '--admin', 'http://127.0.0.1:9901', '--log', logPath);
  assert.equal(both.status, 2);
  assert.match(both.stderr, /not both/);
  const notUrl = splicegate('report', '--admin', '127.0.0.1:9901');
  assert.equal(notUrl.status, 2);
  // A port that was just free: nothing listens there.
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  const down = splicegate('report', '--admin', `http://127.0.0.1:${port}`);
  assert.equal(down.status, 1);
  assert.match(down.stderr, new RegExp(`cannot reach the admin endpoint at http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  const missing = splicegate('report', '--log', join(dir, 'nope.hlog'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /ENOENT/);
});

test('report --html writes one self-contained page', () => {
  const htmlPath = join(dir, 'cli.html');
  const run = splicegate('report', '--log', logPath, '--html', htmlPath);
  assert.equal(run.status, 0, run.stderr);
  const html = readFileSync(htmlPath, 'utf8');
  assert.match(html, /^<!DOCTYPE html>/);
  // 4 metrics + 3 per-host percentile charts, then over time: 4 metrics + 3 for each of the top 8 hosts.
  assert.equal((html.match(/<svg /g) ?? []).length, 7 + 4 + 8 * 3);
  assert.equal((html.match(/<svg [^>]*class="timeline"/g) ?? []).length, 4 + 8 * 3);
  // No external asset of any kind: no src=, no stylesheet link, no url(), no script.
  assert.doesNotMatch(html, /\ssrc=|<link|url\(|<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  assert.match(html, /99\.9%/);
  assert.match(html, /10\.0\.0\.7:443/);
});

function findChromium(): string {
  for (const name of ['chromium', 'chromium-browser']) {
    const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim();
    if (found !== '') return found;
  }
  throw new Error('chromium is not installed: run `apt-get install -y chromium` (scripts/system-deps.sh does it on npm install)');
}

test('the HTML report renders in headless Chromium: screenshot exists and is not blank', () => {
  const chromium = findChromium();
  const htmlPath = join(dir, 'report.html');
  const shot = join(dir, 'report.png');
  const report = reportFromLogText(readFileSync(logPath, 'utf8'), logPath);
  writeFileSync(htmlPath, renderReportHtml(report));
  const run = spawnSync(
    chromium,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--user-data-dir=${join(dir, 'chromium-profile')}`,
      `--screenshot=${shot}`,
      '--window-size=1200,1600',
      `file://${htmlPath}`,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  );
  assert.ok(existsSync(shot), `no screenshot; chromium exited ${run.status}: ${run.stderr.slice(-2000)}`);
  const bytes = statSync(shot).size;
  assert.ok(bytes > 30_000, `screenshot only ${bytes} bytes`);
  const pixels = decodePng(readFileSync(shot));
  assert.equal(pixels.width, 1200);
  assert.equal(pixels.height, 1600);
  const ink = inkRatio(pixels);
  assert.ok(ink > 0.2, `screenshot looks blank: ${(ink * 100).toFixed(1)}% of pixels differ from the background`);
  assert.ok(colourCount(pixels) > 50, 'screenshot has too few colours for text plus coloured plot lines');
  if (process.env['SPLICEGATE_KEEP_SCREENSHOT']) copyFileSync(shot, process.env['SPLICEGATE_KEEP_SCREENSHOT']);
});
