// Zero-downtime reload (SIGHUP, POST /reload) and worker replacement under real HTTP load: wrk
// through `splicegate run` in the namespace lab, keep-alive and Connection: close, 256 connections
// each, while the config is reloaded ten times (a listener added and removed, the policy changed,
// the worker count changed, cluster settings changed). wrk's own summary is parsed: zero socket
// errors, zero non-2xx. A slow transfer in flight across the reloads completes byte-identical; an
// invalid config is refused with its problems while traffic goes on.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ADDR, Lab, type ServerHandle } from '../lab/lab';
import { Splicegate, type SplicegateOptions, type Stats } from '../lab/splicegate';
import { finishTransfer, probe, startTransfer } from '../lab/clients';
import { withDiagnostics } from '../lab/harness';
import { startNginx, startWrk, stopWrk } from '../lab/http-load';
import { waitForLog } from '../lab/listen-sockets';
import { fdCount } from '../lab/resources';
import { parseJsonObject, waitFor, type JsonObject } from '../lab/util';

const MiB = 1024 * 1024;
const PORT = 15001;
const EXTRA_PORT = 15002;
const WEB = `${ADDR.server4}:80`;
const BULK = `${ADDR.server4}:8080`;
/** Reached only through the extra listener (15002), which some generations have and some not. */
const EXTRA_TARGET = `${ADDR.server4}:8081`;
/** Denied by the policy of some generations. */
const POLICED_TARGET = `${ADDR.server4}:8082`;
/** Longer than the test needs: wrk is stopped (SIGINT) once the reloads are done. */
const WRK_SECONDS = 600;

interface Step {
  what: string;
  workers: number;
  extra: boolean;
  denyPoliced: boolean;
  connectTimeout: string;
}

const INITIAL: Step = { what: 'initial', workers: 2, extra: false, denyPoliced: false, connectTimeout: '5s' };

/** Ten reloads, each changing something against the one before. */
const STEPS: Step[] = [
  { what: 'add a listener', workers: 2, extra: true, denyPoliced: false, connectTimeout: '5s' },
  { what: 'policy: deny one destination', workers: 2, extra: true, denyPoliced: true, connectTimeout: '5s' },
  { what: 'workers 2 -> 3', workers: 3, extra: true, denyPoliced: true, connectTimeout: '5s' },
  { what: 'workers 3 -> 1', workers: 1, extra: true, denyPoliced: true, connectTimeout: '5s' },
  { what: 'remove the listener', workers: 1, extra: false, denyPoliced: true, connectTimeout: '5s' },
  { what: 'cluster: connect_timeout', workers: 1, extra: false, denyPoliced: true, connectTimeout: '3s' },
  { what: 'add the listener again, workers 1 -> 2', workers: 2, extra: true, denyPoliced: true, connectTimeout: '3s' },
  { what: 'policy: allow it again', workers: 2, extra: true, denyPoliced: false, connectTimeout: '3s' },
  { what: 'workers 2 -> 3', workers: 3, extra: true, denyPoliced: false, connectTimeout: '3s' },
  { what: 'workers 3 -> 2, listener removed', workers: 2, extra: false, denyPoliced: false, connectTimeout: '5s' },
];

function options(step: Omit<Step, 'what'>): SplicegateOptions {
  return {
    workers: step.workers,
    listeners: [
      { name: 'egress', address: `0.0.0.0:${PORT}` },
      ...(step.extra ? [{ name: 'extra', address: `0.0.0.0:${EXTRA_PORT}` }] : []),
    ],
    cluster: { connect_timeout: step.connectTimeout },
    // Longer than the run: the keep-alive connections wrk opened at the start live on the first
    // generation's workers until wrk closes them (the drain_timeout cut is the next test's).
    drain_timeout: '10m',
    env: { SPLICEGATE_TEST_HOOKS: '1' },
    extra: {
      policy: {
        default: 'allow',
        rules: step.denyPoliced ? [{ name: 'no-8082', action: 'deny', cidrs: [`${ADDR.server4}/32`], ports: ['8082'] }] : [],
      },
    },
  };
}

async function reload(sg: Splicegate): Promise<{ status: number; body: JsonObject }> {
  // Starting a generation's workers under load on a shared 2-core machine: a generous bound.
  const r = await sg.lab.admin('/reload', { address: sg.adminAddress, method: 'POST', timeoutMs: 30000 });
  const body = parseJsonObject(r.body.replace(/\n/g, ' '));
  assert.ok(body, `POST /reload answered ${r.status} ${r.error ?? ''} without JSON: ${r.body}`);
  return { status: r.status, body };
}

/** The listening socket's inode on a port (ss -e): the same inode is the same socket, never re-bound. */
async function socketInode(lab: Lab, port: number): Promise<string[]> {
  const raw = await lab.execOk('gw', 'ss', ['-Hltne', `sport = :${port}`]);
  return [...raw.matchAll(/ino:(\d+)/g)].map((m) => m[1] ?? '');
}

describe('reload', () => {
  let lab: Lab;
  let bulk: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'reload' });
    await startNginx(lab, `${WEB}`);
    bulk = await lab.startServer('sink-source', ['--listen', BULK]);
    await lab.startServer('identity', ['--listen', EXTRA_TARGET, '--id', 'extra', '--quiet']);
    await lab.startServer('identity', ['--listen', POLICED_TARGET, '--id', 'policed', '--quiet']);
    await lab.redirect({ dport: [80, 8080, 8082], toPort: PORT, family: 4 });
    await lab.redirect({ dport: 8081, toPort: EXTRA_PORT, family: 4 });
  });

  after(async () => {
    await lab?.destroy();
  });

  it('ten reloads under wrk (keep-alive and Connection: close, 256 connections each): zero socket errors, zero non-2xx, a transfer in flight completes byte-identical, an invalid config is refused', { timeout: 300000 }, async (t) => {
    const sg = await Splicegate.start(lab, options(INITIAL));
    try {
      await withDiagnostics(lab, sg, async () => {
        const inode = await socketInode(lab, PORT);
        assert.equal(inode.length, 1, 'one listening socket on the port');
        const ready0 = await sg.adminGet('/ready');
        assert.equal(ready0.status, 200);
        assert.match(ready0.body, new RegExp(`^ready\\nconfig_generation 1 ${sg.configPath} `));

        // 32 MiB each way at 2 MiB/s: about 16 s, in flight across most of the reloads.
        const xfer = startTransfer(lab, { target: BULK, send: 32 * MiB, recv: 32 * MiB, rateBytesPerSec: 2 * MiB, timeoutMs: 120000 });
        const keepAlive = startWrk(lab, { url: `http://${WEB}/small`, connections: 256, seconds: WRK_SECONDS });
        const close = startWrk(lab, { url: `http://${WEB}/small`, connections: 256, seconds: WRK_SECONDS, headers: ['Connection: close'] });
        // Load is flowing (both wrks connected) before the first reload.
        await sg.waitStats((s) => s.downstream_cx_active >= 256 && s.downstream_cx_total >= 2000, 20000, 'wrk running through the proxy');

        const before = await probe(lab, { target: EXTRA_TARGET, send: 'x\n', waitMs: 5000, untilLine: true });
        assert.equal(before.connected && before.bytes > 0, false, 'no listener on the extra port yet');

        let last: Stats = await sg.stats();
        const monotonic = (s: Stats): void => {
          for (const name of ['downstream_cx_total', 'bytes_sent', 'bytes_received', 'upstream_cx_total'] as const) {
            assert.ok(s[name] >= last[name], `${name} went backwards: ${last[name]} -> ${s[name]}`);
          }
          last = s;
        };

        for (const [i, step] of STEPS.entries()) {
          fs.writeFileSync(sg.configPath, Splicegate.buildConfig(options(step)));
          const generation = i + 2;
          const r = await reload(sg);
          assert.equal(r.status, 200, `reload ${i + 1} (${step.what}): ${JSON.stringify(r.body)}`);
          assert.equal((r.body['config_generation'] as JsonObject)['number'], generation);

          if (i % 3 === 0) {
            const ready = await sg.adminGet('/ready?format=json');
            assert.equal(ready.status, 200, ready.body);
            assert.equal(parseJsonObject(ready.body)?.['config_generation'], generation, ready.body);
          }
          const s = await sg.stats();
          assert.equal(s.raw['config_generation'], generation);
          monotonic(s);

          // The new generation's listener set is the one that accepts, and its policy the one that judges.
          const previous = STEPS[i - 1] ?? INITIAL;
          if (step.extra !== previous.extra) {
            const viaExtra = await probe(lab, { target: EXTRA_TARGET, send: 'x\n', waitMs: 5000, untilLine: true });
            if (step.extra) assert.match(viaExtra.firstLine ?? '', /"id":"extra"/, `${step.what}: extra listener answers: ${JSON.stringify(viaExtra)}`);
            else assert.equal(viaExtra.bytes, 0, `${step.what}: the extra listener is gone: ${JSON.stringify(viaExtra)}`);
          }
          if (step.denyPoliced !== previous.denyPoliced) {
            const policed = await probe(lab, { target: POLICED_TARGET, send: 'x\n', waitMs: 5000, untilLine: true });
            if (step.denyPoliced) assert.equal(policed.bytes, 0, `${step.what}: 8082 denied: ${JSON.stringify(policed)}`);
            else assert.match(policed.firstLine ?? '', /"id":"policed"/, `${step.what}: 8082 allowed: ${JSON.stringify(policed)}`);
          }

          if (i === 4) {
            // An invalid config mid-run: refused with every problem and its path, nothing changes.
            fs.writeFileSync(sg.configPath, 'workers: 0\nlisteners:\n  - { name: egress, address: "0.0.0.0:99999" }\nbogus: 1\n');
            const bad = await reload(sg);
            assert.equal(bad.status, 422, JSON.stringify(bad.body));
            assert.equal(bad.body['ok'], false);
            const paths = (bad.body['problems'] as JsonObject[]).map((p) => p['path']);
            for (const p of ['workers', 'listeners[0].address', 'bogus']) assert.ok(paths.includes(p), `problem at ${p}: ${JSON.stringify(bad.body)}`);
            assert.match(String(bad.body['error']), new RegExp(`${sg.configPath}: listeners\\[0\\]\\.address: `));
            assert.equal((bad.body['config_generation'] as JsonObject)['number'], generation, 'the running generation stays');
            await waitForLog(sg, /reload refused; the running config keeps serving .*reason=invalid/, 5000);
            assert.equal((await sg.adminGet('/ready')).status, 200);
            const s2 = await sg.stats();
            assert.equal(s2.raw['config_generation'], generation);
            assert.equal(s2.raw['config_reload_failures'], 1);
          }
        }
        assert.deepEqual(await socketInode(lab, PORT), inode, 'the listening socket is the same one after ten reloads');
        // Some more load on the last generation, then wrk stops and reports.
        const mark = last.downstream_cx_total;
        await sg.waitStats((s) => s.downstream_cx_total >= mark + 2000, 20000, 'traffic after the last reload');
        assert.ok(keepAlive.running && close.running, 'wrk ran through every reload');
        const [ka, cl] = await Promise.all([stopWrk(keepAlive, 30000), stopWrk(close, 30000)]);
        const brief = JSON.stringify({ keepAlive: ka, close: cl });
        t.diagnostic(`wrk across ten reloads: ${brief}`);
        assert.deepEqual(ka.errors, { connect: 0, read: 0, write: 0, status: 0, timeout: 0 }, `keep-alive wrk: ${brief}`);
        assert.deepEqual(cl.errors, { connect: 0, read: 0, write: 0, status: 0, timeout: 0 }, `Connection: close wrk: ${brief}`);
        assert.ok(ka.requests > 10000 && cl.requests > 1000, `wrk made requests: ${brief}`);

        const x = await finishTransfer(xfer, 90000);
        assert.equal(x.ok, true, `transfer: ${JSON.stringify(x)}`);
        assert.equal(x.recvBytes, 32 * MiB);
        const [done] = await bulk.proc.waitForEvents((e) => e['event'] === 'done' || e['event'] === 'error', 1, 10000, 'sink-source report');
        assert.equal(done?.['event'], 'done', JSON.stringify(done));
        assert.equal(done?.['recvSha256'], x.sentSha256, 'upload byte-identical');
        assert.equal(done?.['sentSha256'], x.recvSha256, 'download byte-identical');

        // Once wrk's keep-alive connections closed, every old generation finished and exited.
        const settled = await sg.waitStats((s) => s.raw['config_generations_live'] === 1 && s.downstream_cx_active === 0, 30000, 'old generations retired');
        monotonic(settled);
        assert.equal(settled.raw['config_reloads'], 10);
        assert.equal(settled.raw['cx_close_drained'] ?? 0, 0, 'no connection was cut by a drain');
        await sg.waitReady(5000);
      });
    } finally {
      await sg.dispose();
    }
  });
  it('SIGHUP with a short drain_timeout: the old generation resets the keep-alive connections it still holds at the deadline, wrk reconnects to the new one and reports exactly those as read errors', { timeout: 180000 }, async (t) => {
    const sg = await Splicegate.start(lab, { ...options({ ...INITIAL, workers: 1 }), drain_timeout: '2s' });
    try {
      await withDiagnostics(lab, sg, async () => {
        const keepAlive = startWrk(lab, { url: `http://${WEB}/small`, connections: 64, seconds: WRK_SECONDS });
        await sg.waitStats((s) => s.downstream_cx_active >= 64 && s.downstream_cx_total >= 64, 20000, 'wrk connected');
        fs.writeFileSync(sg.configPath, Splicegate.buildConfig({ ...options({ ...INITIAL, workers: 2 }), drain_timeout: '2s' }));
        sg.proc.signal('SIGHUP');
        await waitForLog(sg, /config reloaded trigger=SIGHUP config_generation=2 previous_generation=1 /, 30000);
        const retired = await waitForLog(sg, /config generation retired config_generation=1 connections_cut=\d+/, 30000);
        const cut = Number(/connections_cut=(\d+)/.exec(retired)?.[1]);
        // wrk never closes a keep-alive connection on its own: all 64 were still there to cut.
        assert.equal(cut, 64, retired);
        const s1 = await sg.waitStats((s) => s.raw['config_generations_live'] === 1, 10000, 'generation 1 gone');
        assert.equal(s1.raw['cx_close_drained'], cut, 'each cut connection closed as drained (with a reset)');
        // wrk reconnected: the load goes on through generation 2.
        await sg.waitStats((s) => s.downstream_cx_total >= 2 * 64 && s.downstream_cx_active >= 64, 20000, 'wrk reconnected');
        const r = await stopWrk(keepAlive, 30000);
        // A reset between two requests of a keep-alive connection is an error to wrk (it reads the
        // reset), then it reconnects: one read (or write) error per cut connection, nothing else.
        t.diagnostic(`keep-alive wrk across a reload with drain_timeout 2s: ${JSON.stringify(r)}`);
        assert.equal(r.errors.read + r.errors.write, cut, JSON.stringify(r));
        assert.deepEqual({ connect: r.errors.connect, status: r.errors.status, timeout: r.errors.timeout }, { connect: 0, status: 0, timeout: 0 }, JSON.stringify(r));
      });
    } finally {
      await sg.dispose();
    }
  });

  it('a worker killed under wrk load (keep-alive and Connection: close, 256 connections each) fails no request: its loop finishes its connections as an orphan, then ends and frees its fds', { timeout: 120000 }, async (t) => {
    // Every connection gets an access-log line, the orphan's included (written through the main thread).
    const accessLog = path.join(fs.mkdtempSync(path.join(lab.tmpDir(), 'orphan-')), 'access.log');
    const base = options(INITIAL);
    const sg = await Splicegate.start(lab, { ...base, extra: { ...base.extra, access_log: { path: accessLog, sample: 1 } } });
    try {
      await withDiagnostics(lab, sg, async () => {
        const baselineFds = fdCount(sg.proc.pid);
        const keepAlive = startWrk(lab, { url: `http://${WEB}/small`, connections: 256, seconds: WRK_SECONDS });
        const close = startWrk(lab, { url: `http://${WEB}/small`, connections: 256, seconds: WRK_SECONDS, headers: ['Connection: close'] });
        // Both wrks connected and requests flowing on both workers.
        const s0 = await sg.waitStats((s) => s.downstream_cx_active >= 256 && s.downstream_cx_total >= 2000, 30000, 'wrk running');
        const crash = await sg.adminPost('/debug/crash-worker?id=0');
        assert.equal(crash.status, 202, crash.body);
        const died = await waitForLog(sg, /worker died; restarting worker=0 generation=0 /, 15000);
        const tDied = Date.parse(died.split(' ')[0] ?? '');
        await waitForLog(sg, /worker listening worker=0 generation=1 /, 15000);
        await sg.waitReady(10000);
        // Worker 0's keep-alive connections live on in its orphaned loop for as long as wrk keeps them.
        const orphaned = await sg.waitStats((s) => s.raw['workers_orphaned'] === 1, 10000, 'one orphaned loop');
        assert.equal(orphaned.raw['workers_orphaned_total'], 1);
        assert.ok(orphaned.downstream_cx_total >= s0.downstream_cx_total, 'downstream_cx_total went backwards at the crash');
        await waitForLog(sg, /orphaned worker loops relay what they had, accepting nothing new worker=0 /, 5000);
        await sg.waitStats((s) => s.downstream_cx_total >= s0.downstream_cx_total + 4000, 30000, 'traffic after the replacement');
        assert.ok(keepAlive.running && close.running, 'wrk ran through the crash');
        const [ka, cl] = await Promise.all([stopWrk(keepAlive, 30000), stopWrk(close, 30000)]);
        const brief = JSON.stringify({ keepAlive: ka, close: cl });
        t.diagnostic(`wrk, worker 0 of 2 killed: ${brief}`);
        assert.deepEqual(ka.errors, { connect: 0, read: 0, write: 0, status: 0, timeout: 0 }, `keep-alive wrk: ${brief}`);
        assert.deepEqual(cl.errors, { connect: 0, read: 0, write: 0, status: 0, timeout: 0 }, `Connection: close wrk: ${brief}`);
        assert.ok(ka.requests > 4000 && cl.requests > 1000, `wrk made requests: ${brief}`);
        // wrk closed its connections: the orphan had nothing left, ended, and was joined.
        const settled = await sg.waitStats((s) => s.raw['workers_orphaned'] === 0 && s.downstream_cx_active === 0, 30000, 'the orphan ended');
        assert.equal(settled.raw['cx_drained'] ?? 0, 0, 'no connection was cut');
        assert.ok(settled.downstream_cx_total >= orphaned.downstream_cx_total, 'downstream_cx_total went backwards when the orphan ended');
        // No fd of the orphan is left: only the live workers' idle pipes (2 fds each) on top of the start.
        const fds = fdCount(sg.proc.pid);
        const idlePipeFds = 2 * (settled.raw['pipes_idle'] as number);
        assert.ok(fds <= baselineFds + idlePipeFds + 16, `fds: ${baselineFds} at start, ${fds} now, ${idlePipeFds} in idle pipes`);
        // One line per accepted connection, none lost to the death: those worker 0 took before it
        // and had not written yet, and those its orphan closed after it.
        let counts = '';
        const lines = await waitFor(
          async () => {
            const s = await sg.stats();
            const text = fs.existsSync(accessLog) ? fs.readFileSync(accessLog, 'utf8') : '';
            const n = text.split('\n').filter((l) => l.length > 0);
            counts = `${n.length} lines, downstream_cx_total ${s.downstream_cx_total}, access_log_dropped ${String(s.raw['access_log_dropped'])}`;
            return n.length === s.downstream_cx_total ? n : undefined;
          },
          { timeoutMs: 10000, what: 'one access-log line per accepted connection', diagnostics: () => `${counts}\n${sg.diagnostics()}` },
        );
        const byOrphan = lines.map((l) => JSON.parse(l) as { time: string; worker: number }).filter((l) => l.worker === 0 && Date.parse(l.time) > tDied);
        assert.ok(byOrphan.length > 0, 'lines of connections worker 0\'s orphan closed after the death');
        assert.equal((await sg.stats()).raw['access_log_dropped'] ?? 0, 0);
      });
    } finally {
      await sg.dispose();
    }
  });
  it('a reload that cannot be applied (a new listener\'s address is taken) is refused with the bind error; the running generation keeps serving on the same socket', { timeout: 60000 }, async () => {
    // Something else holds the new listener's port in the gateway.
    const squatter = lab.start('gw', process.execPath, ['-e', "require('net').createServer().listen(15003, '0.0.0.0', () => console.log('READY'))"], { label: 'squatter' });
    await squatter.waitForLine((l) => l === 'READY', 10000, 'squatter listening');
    const sg = await Splicegate.start(lab, options({ ...INITIAL, workers: 1 }));
    try {
      await withDiagnostics(lab, sg, async () => {
        const inode = await socketInode(lab, PORT);
        const next = options({ ...INITIAL, workers: 1 });
        next.listeners.push({ name: 'taken', address: '0.0.0.0:15003' });
        fs.writeFileSync(sg.configPath, Splicegate.buildConfig(next));
        const r = await reload(sg);
        assert.equal(r.status, 500, JSON.stringify(r.body));
        assert.equal(r.body['reason'], 'failed');
        // Worded as `splicegate run` words the same bind failure at start (test/cli.test.ts).
        assert.equal(r.body['error'], 'listen taken 0.0.0.0:15003: bind failed: EADDRINUSE (address already in use)', JSON.stringify(r.body));
        await waitForLog(sg, /reload refused; the running config keeps serving trigger="POST \/reload" reason=failed error="listen taken 0\.0\.0\.0:15003: bind failed: EADDRINUSE \(address already in use\)"/, 5000);
        assert.equal((r.body['config_generation'] as JsonObject)['number'], 1);
        const s = await sg.stats();
        assert.equal(s.raw['config_generation'], 1);
        assert.equal(s.raw['config_generations_live'], 1, 'the new generation is gone again');
        assert.equal(s.raw['config_reload_failures'], 1);
        assert.equal((await sg.adminGet('/ready')).status, 200);
        const served = await probe(lab, { target: POLICED_TARGET, send: 'x\n', waitMs: 5000, untilLine: true });
        assert.match(served.firstLine ?? '', /"id":"policed"/, JSON.stringify(served));
        assert.deepEqual(await socketInode(lab, PORT), inode, 'the running listener kept its socket');
      });
    } finally {
      await sg.dispose();
      await squatter.stop('SIGTERM', 2000);
    }
  });
});
