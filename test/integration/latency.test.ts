// Latency histograms end to end: a server that waits a known time before its first byte shows up
// in time-to-first-byte; the interval log written by --latency-log is readable by `report`.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { withDiagnostics } from '../lab/harness';
import { cliPath } from '../lab/paths';

interface Summary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}
interface LatencyJson {
  unit: string;
  global: Record<'connect' | 'ttfb' | 'duration' | 'proxy_overhead', Summary>;
  hosts: Record<string, Record<'connect' | 'ttfb' | 'duration', Summary>>;
}

const DELAY_MS = 200;

describe('latency histograms', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let logPath = '';

  before(async () => {
    lab = await Lab.create({ name: 'latency' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'slow', '--delay-ms', String(DELAY_MS), '--quiet']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    logPath = join(lab.tmpDir(), 'latency.hlog');
    sg = await Splicegate.start(lab, {
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      args: ['--latency-log', logPath, '--latency-log-interval', '1s'],
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('a known first-byte delay appears in ttfb, globally and for the host', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const r = await connectMany(lab, { target: '10.10.2.2:8080', n: 40, concurrency: 8, expectId: 'slow' });
      assert.equal(r.ok, 40, JSON.stringify(r.errors));
      const res = await sg.adminGet('/latency?format=json');
      assert.equal(res.status, 200, res.body);
      const latency = JSON.parse(res.body) as LatencyJson;
      assert.equal(latency.unit, 'us');
      const ttfb = latency.global.ttfb;
      assert.equal(ttfb.count, 40);
      // The server waits DELAY_MS after accepting; the proxy sees the connection established a
      // little before the server's accept returns, never after its first byte.
      assert.ok(ttfb.p50 >= DELAY_MS * 1000 * 0.99, `ttfb p50 ${ttfb.p50} us < ${DELAY_MS} ms`);
      assert.ok(ttfb.p50 <= DELAY_MS * 1000 * 1.25, `ttfb p50 ${ttfb.p50} us far above ${DELAY_MS} ms`);
      assert.ok(latency.global.connect.count === 40 && latency.global.connect.p99 < DELAY_MS * 1000, JSON.stringify(latency.global.connect));
      assert.equal(latency.global.proxy_overhead.count, 40);
      assert.ok(latency.global.duration.p50 >= ttfb.p50, 'a connection lasts at least until its first byte');
      const host = latency.hosts['10.10.2.2:8080'];
      assert.ok(host, `host missing: ${Object.keys(latency.hosts).join(',')}`);
      assert.equal(host.ttfb.count, 40);
      // Per-host histograms have 2 significant digits: within 1% of the global figure.
      assert.ok(Math.abs(host.ttfb.p50 - ttfb.p50) <= ttfb.p50 * 0.01 + 1, `${host.ttfb.p50} vs ${ttfb.p50}`);

      const text = await sg.adminGet('/latency');
      assert.match(text.body, /ttfb/);
      const prom = await sg.adminGet('/stats/prometheus');
      assert.match(prom.body, /_bucket\{le="\+Inf"\} 40\b/);
    }),
  );

  it('a --latency-log that cannot be opened stops the start: exit 1 naming the path, nothing left running', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      // Its own listener and admin ports, so the running instance is not what makes it fail.
      const file = join(lab.tmpDir(), 'bad-latency-log.yaml');
      writeFileSync(file, Splicegate.buildConfig({ listeners: [{ name: 'other', address: '0.0.0.0:15009' }], admin: '127.0.0.1:9909' }));
      const missing = join(lab.tmpDir(), 'no-such-dir', 'x.hlog');
      const bad = lab.start('gw', process.execPath, [cliPath, 'run', '--config', file, '--latency-log', missing], { stdin: 'ignore', label: 'splicegate with a bad --latency-log' });
      const exit = await bad.waitExit(30000);
      assert.deepEqual(exit, { code: 1, signal: null }, bad.diagnostics());
      assert.ok(bad.stderr.includes(missing) && bad.stderr.includes('ENOENT'), bad.stderr);
    }),
  );

  it('the --latency-log interval log is readable by `splicegate report --log`', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      assert.equal(await sg.stop('SIGTERM'), 0);
      assert.ok(existsSync(logPath), `no log at ${logPath}`);
      const { stdout } = await promisify(execFile)(process.execPath, [cliPath, 'report', '--log', logPath]);
      assert.match(stdout, /ttfb/);
      assert.match(stdout, /Percentile/i);
    }),
  );
});

// A reload retires a generation's workers: their histograms must stay in every total, however
// many reloads follow (the counters' rule: nothing ever goes backwards, or Prometheus sees a reset).
describe('latency across reloads', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  const WORKERS = 8;
  const RELOADS = 3;

  before(async () => {
    lab = await Lab.create({ name: 'latreload' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'I', '--quiet']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, { workers: WORKERS, listeners: [{ name: 'egress', address: '0.0.0.0:15001' }] });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it(`${RELOADS} reloads of ${WORKERS} workers: /latency counts and the Prometheus histogram _count stay what was recorded`, { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const proxy = sg;
      const N = 12;
      const r = await connectMany(lab, { target: '10.10.2.2:8080', n: N, concurrency: 4, expectId: 'I' });
      assert.equal(r.ok, N, JSON.stringify(r.errors));
      const counts = async (): Promise<{ connect: number; duration: number; host: number; prom: number }> => {
        const latency = JSON.parse((await proxy.adminGet('/latency?format=json')).body) as LatencyJson;
        const prom = /splicegate_connect_duration_seconds_count (\d+)/.exec((await proxy.adminGet('/stats/prometheus')).body);
        return {
          connect: latency.global.connect.count,
          duration: latency.global.duration.count,
          host: latency.hosts['10.10.2.2:8080']?.connect.count ?? 0,
          prom: Number(prom?.[1] ?? -1),
        };
      };
      // duration is recorded at close: wait until every connection has closed.
      await proxy.waitStats((s) => s.downstream_cx_active === 0, 10000, 'connections closed');
      const want = { connect: N, duration: N, host: N, prom: N };
      assert.deepEqual(await counts(), want, 'before any reload');
      for (let i = 1; i <= RELOADS; i++) {
        const res = await proxy.adminPost('/reload');
        assert.equal(res.status, 200, res.body);
        await proxy.waitStats(
          (s) => s.raw['config_generation'] === i + 1 && s.raw['config_generations_live'] === 1,
          20000,
          `generation ${i} retired`,
        );
        assert.deepEqual(await counts(), want, `after reload ${i}`);
      }
    }),
  );
});
