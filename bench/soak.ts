// `npm run soak`: mixed traffic through splicegate in the namespace lab for a long stretch (10
// minutes by default), sampling what the proxy holds, then checking that it stayed flat and that
// nothing failed that should not have. Not part of `npm test`.
//
// Traffic, all at once, all through one splicegate (REDIRECT in the gateway):
//   keep-alive HTTP     wrk -c16 against nginx (1 KiB file), in 30 s segments
//   new connection      wrk -c8 -H 'Connection: close' against nginx, in 30 s segments
//   bulk                iperf3 -P2 at 250 Mbit/s per stream, in 30 s segments
//   churn               test/fixtures/clients/churn.js: open, greet, echo, close; every 5th
//                       connection aborted with RST after its echo, every 5th right after connect
// Every --sample-seconds: the proxy's fd count and RSS (from /proc) and pipes_in_use, pipes_idle,
// downstream_cx_active, upstream_cx_active (from /stats). At the end the load stops, the proxy
// must return to idle (no connection, no pipe in use, fds back to the start-up count plus the idle
// pipe pool), and the last samples are compared with those right after the warm-up.
//
//   npm run soak [-- --minutes 10] [--warmup-minutes M] [--sample-seconds 10] [--out FILE]
// Writes bench/results/soak-latest.json; exits 1 if a check fails.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ADDR, Lab } from '../test/lab/lab';
import { LabProcess } from '../test/lab/process';
import { Splicegate, Stats } from '../test/lab/splicegate';
import { fdCount, MiB, rssBytes, stat } from '../test/lab/resources';
import { clientScript, serverScript } from '../test/lab/paths';
import { sleep } from '../test/lab/util';
import { type BenchEnv, SERVER_PORTS } from './lib/contenders';
import { parseIperf, parseWrk, type WrkErrors } from './lib/parse';
import { Servers } from './lib/servers';

const repoRoot = path.join(__dirname, '..', '..');

const HELP = `npm run soak [-- options]
  --minutes N          total traffic time (default 10)
  --warmup-minutes M   samples before this are warm-up (default: a fifth of --minutes, at least 1)
  --sample-seconds S   sampling period (default 10)
  --out FILE           results file (default bench/results/soak-latest.json)
`;

const { values } = parseArgs({
  options: {
    minutes: { type: 'string' },
    'warmup-minutes': { type: 'string' },
    'sample-seconds': { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function positive(name: string, text: string | undefined, dflt: number): number {
  const v = text === undefined ? dflt : Number(text);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name}: expected a positive number, got ${text}`);
  return v;
}

const minutes = positive('minutes', values.minutes, 10);
const warmupMinutes = positive('warmup-minutes', values['warmup-minutes'], Math.max(1, minutes / 5));
const sampleSeconds = positive('sample-seconds', values['sample-seconds'], 10);
const outFile = path.resolve(values.out ?? path.join(repoRoot, 'bench', 'results', 'soak-latest.json'));
if (warmupMinutes >= minutes) throw new Error(`--warmup-minutes (${warmupMinutes}) must be shorter than --minutes (${minutes})`);

const LISTEN_PORT = 15001;
const CHURN_PORT = 8080;
const WORKERS = 2;
const NOFILE = 20000;
/** Idle pipes each worker keeps (maxIdlePipes in src/proxy/run.ts). */
const MAX_IDLE_PIPES_PER_WORKER = 64;
const SEGMENT_S = 30;
const IPERF_STREAMS = 2;
const IPERF_MBIT = 250; // per stream: bulk traffic that leaves the two cores room for the rest
const NICE = 10; // load generators and servers yield to the proxy and to other users of the machine

// Flatness tolerances (end of run vs right after the warm-up). Generous: the point is to catch
// growth that accumulates with traffic (a leak of a few bytes or one fd per connection shows up as
// hundreds of MiB or thousands of fds over millions of connections), not noise.
const RSS_TOLERANCE = { ratio: 0.15, absMiB: 24 };
const FD_TOLERANCE = { ratio: 0.25, abs: 64 };

// Counters that must not move during the soak: nothing here is refused, times out or overflows.
const MUST_STAY_ZERO = [
  'downstream_cx_accept_error',
  'downstream_cx_accept_paused',
  'downstream_cx_overflow',
  'no_original_dst',
  'loop_rejected',
  'upstream_cx_connect_fail',
  'upstream_cx_connect_timeout',
  'upstream_cx_overflow',
  'host_overflow',
  'cx_idle_timeout',
  'pipe_unavailable',
] as const;

function log(msg: string): void {
  process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface Sample {
  t: number;
  fds: number;
  rssMiB: number;
  pipesInUse: number;
  pipesIdle: number;
  cxActive: number;
  upActive: number;
  cxTotal: number;
}

interface WrkTotals {
  segments: number;
  requests: number;
  bytes: number;
  errors: WrkErrors;
  failures: string[];
}

interface IperfTotals {
  segments: number;
  bytes: number;
  /** Runs refused with "the server is busy" (it had not yet seen the previous run end) and retried. */
  busyRetries: number;
  failures: string[];
}

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : (s[Math.floor((s.length - 1) / 2)] ?? 0);
}

function nice(cmd: string, args: string[]): { cmd: string; args: string[] } {
  return { cmd: 'nice', args: ['-n', String(NICE), cmd, ...args] };
}

async function wrkLoop(lab: Lab, endAt: number, label: string, extra: string[]): Promise<WrkTotals> {
  const lua = path.join(repoRoot, 'bench', 'lib', 'wrk-report.lua');
  const url = `http://${ADDR.server4}:${SERVER_PORTS.http}/small`;
  const tot: WrkTotals = { segments: 0, requests: 0, bytes: 0, errors: { connect: 0, read: 0, write: 0, status: 0, timeout: 0 }, failures: [] };
  for (;;) {
    const seconds = Math.min(SEGMENT_S, Math.floor((endAt - Date.now()) / 1000));
    if (seconds < 1) return tot;
    const p = nice('wrk', ['-t1', `-d${seconds}s`, '--timeout', '5s', '-s', lua, ...extra, url]);
    const r = await lab.exec('cli', p.cmd, p.args, { timeoutMs: (seconds + 30) * 1000, nofile: NOFILE });
    tot.segments++;
    try {
      if (r.code !== 0) throw new Error(`exit ${r.code}/${r.signal}: ${r.stderr.trim().slice(0, 300)}`);
      const w = parseWrk(r.stdout);
      tot.requests += w.requests;
      tot.bytes += w.bytes;
      for (const k of Object.keys(tot.errors) as Array<keyof WrkErrors>) tot.errors[k] += w.errors[k];
    } catch (e) {
      tot.failures.push(`${label} segment ${tot.segments}: ${e instanceof Error ? e.message : String(e)}`);
      await sleep(1000);
    }
  }
}

async function iperfLoop(lab: Lab, servers: Servers, endAt: number): Promise<IperfTotals> {
  const tot: IperfTotals = { segments: 0, bytes: 0, busyRetries: 0, failures: [] };
  let busySince = 0;
  for (;;) {
    const seconds = Math.min(SEGMENT_S, Math.floor((endAt - Date.now()) / 1000));
    if (seconds < 2) return tot;
    const p = nice('iperf3', ['-c', ADDR.server4, '-p', String(SERVER_PORTS.iperf), '-t', String(seconds), '-P', String(IPERF_STREAMS), '-b', `${IPERF_MBIT}M`, '-J', '-Z', '--connect-timeout', '3000']);
    const r = await lab.exec('cli', p.cmd, p.args, { timeoutMs: (seconds + 30) * 1000, nofile: NOFILE });
    // iperf3 serves one test at a time and may not have finished the last one: retry for a while
    // (a proxy that kept the last run's connections open would keep it busy and fail here).
    if (/server is busy/.test(r.stdout + r.stderr)) {
      if (busySince === 0) busySince = Date.now();
      if (Date.now() - busySince < 10_000) {
        tot.busyRetries++;
        await sleep(500);
        continue;
      }
    }
    busySince = 0;
    tot.segments++;
    try {
      const res = parseIperf(r.stdout);
      if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr.trim().slice(0, 300)}`);
      tot.bytes += res.bytes;
    } catch (e) {
      tot.failures.push(`iperf3 segment ${tot.segments}: ${e instanceof Error ? e.message : String(e)}`);
      await servers.restartIperf();
    }
  }
}

async function sampleOnce(sg: Splicegate, t0: number, statsFailures: string[]): Promise<Sample | null> {
  const pid = sg.proc.pid;
  let s: Stats;
  try {
    s = await sg.stats();
  } catch (e) {
    statsFailures.push(e instanceof Error ? e.message.split('\n')[0] ?? '' : String(e));
    return null;
  }
  return {
    t: Math.round((Date.now() - t0) / 1000),
    fds: fdCount(pid),
    rssMiB: Math.round((rssBytes(pid) / MiB) * 10) / 10,
    pipesInUse: stat(s, 'pipes_in_use'),
    pipesIdle: stat(s, 'pipes_idle'),
    cxActive: s.downstream_cx_active,
    upActive: s.upstream_cx_active,
    cxTotal: s.downstream_cx_total,
  };
}

function table(samples: Sample[], warmupS: number): string {
  const head = '   t(s)    fds   RSS MiB   pipes use/idle   cx active   up active   new cx/s';
  const lines = [head];
  let prev: Sample | undefined;
  for (const s of samples) {
    const rate = prev ? Math.round((s.cxTotal - prev.cxTotal) / Math.max(1, s.t - prev.t)) : 0;
    lines.push(
      `${String(s.t).padStart(7)}${String(s.fds).padStart(7)}${s.rssMiB.toFixed(1).padStart(10)}` +
        `${`${s.pipesInUse}/${s.pipesIdle}`.padStart(17)}${String(s.cxActive).padStart(12)}${String(s.upActive).padStart(12)}` +
        `${String(rate).padStart(11)}${s.t <= warmupS ? '   (warm-up)' : ''}`,
    );
    prev = s;
  }
  return lines.join('\n');
}

function counterDeltas(a: Stats, b: Stats): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b.raw)) {
    const before = a.raw[k];
    if (typeof v === 'number' && typeof before === 'number') out[k] = v - before;
  }
  return out;
}

async function main(): Promise<void> {
  const started = new Date();
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicegate-soak-'));
  process.on('exit', () => fs.rmSync(tmpDir, { recursive: true, force: true }));
  const lab = await Lab.create({ name: 'soak' });
  let sg: Splicegate | undefined;
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string): void => {
    checks.push({ name, ok, detail });
    log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
  };
  try {
    for (const ns of ['cli', 'gw'] as const) {
      await lab.execOk(ns, 'sysctl', ['-qw', 'net.ipv4.ip_local_port_range=1024 65000', 'net.ipv4.tcp_tw_reuse=1']);
    }
    await lab.exec('gw', 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_tcp_timeout_time_wait=5']);
    const cpus = `0-${os.availableParallelism() - 1}`;
    const env: BenchEnv = {
      lab,
      tmpDir,
      repoRoot,
      proxyCpus: cpus,
      loadCpus: cpus,
      threads: WORKERS,
      nofile: NOFILE,
      serverAddr: ADDR.server4,
      sgTuning: {},
      nice: NICE,
    };
    const servers = new Servers(env);
    await servers.start();
    const churnServer = lab.start('srv', 'nice', ['-n', String(NICE), 'node', serverScript('identity'), '--listen', `${ADDR.server4}:${CHURN_PORT}`, '--id', 'S', '--quiet'], {
      nofile: NOFILE,
      stdin: 'ignore',
      label: 'server:identity',
    });
    await churnServer.waitForLine((l) => l.startsWith('READY '), 10000, 'READY');
    await lab.redirect({ dport: [SERVER_PORTS.http, SERVER_PORTS.iperf, CHURN_PORT], toPort: LISTEN_PORT, family: 4 });
    sg = await Splicegate.start(lab, { workers: WORKERS, listeners: [{ name: 'egress', address: `0.0.0.0:${LISTEN_PORT}` }], nofile: NOFILE });
    const proxy = sg;
    const pid = proxy.proc.pid;
    const s0 = await proxy.stats();
    await sleep(500);
    const fdsIdle = fdCount(pid);
    const rssIdleMiB = rssBytes(pid) / MiB;
    log(`splicegate pid ${pid} ready: ${fdsIdle} fds, ${rssIdleMiB.toFixed(1)} MiB RSS; ${minutes} min of traffic, warm-up ${warmupMinutes} min, a sample every ${sampleSeconds} s`);

    const t0 = Date.now();
    const endAt = t0 + minutes * 60_000;
    const churn: LabProcess = lab.start(
      'cli',
      'nice',
      ['-n', String(NICE), 'node', clientScript('churn'), '--target', `${ADDR.server4}:${CHURN_PORT}`, '--duration-ms', String(minutes * 60_000), '--concurrency', '16', '--rate', '150'],
      { nofile: NOFILE, label: 'client:churn' },
    );
    const loads = Promise.all([
      wrkLoop(lab, endAt, 'wrk keep-alive', ['-c16']),
      wrkLoop(lab, endAt, 'wrk close', ['-c8', '-H', 'Connection: close']),
      iperfLoop(lab, servers, endAt),
    ]);

    const samples: Sample[] = [];
    const statsFailures: string[] = [];
    let crashed = false;
    log(table([], 0));
    for (let k = 1; ; k++) {
      const due = t0 + k * sampleSeconds * 1000;
      if (due > endAt) break;
      await sleep(Math.max(0, due - Date.now()));
      if (!proxy.proc.running) {
        crashed = true;
        break;
      }
      const s = await sampleOnce(proxy, t0, statsFailures);
      if (s) {
        samples.push(s);
        log(table(samples.slice(-2), warmupMinutes * 60).split('\n').pop() ?? '');
      }
    }
    const [wrkKeep, wrkClose, iperf] = await loads;
    const churnExit = await churn.waitExit(60_000);
    const churnResult = churn.eventsNamed('result').pop() ?? null;

    // ---- quiesce: no load left, everything must be let go
    let quiet: Stats | null = null;
    const quietDeadline = Date.now() + 30_000;
    while (!crashed && Date.now() < quietDeadline) {
      const s = await proxy.stats().catch(() => null);
      if (s && s.downstream_cx_active === 0 && s.upstream_cx_active === 0 && stat(s, 'pipes_in_use') === 0) {
        quiet = s;
        break;
      }
      await sleep(250);
    }
    await sleep(500);
    const fdsQuiet = proxy.proc.running ? fdCount(pid) : -1;
    const rssQuietMiB = proxy.proc.running ? rssBytes(pid) / MiB : -1;
    const sEnd = quiet ?? (await proxy.stats().catch(() => null));
    const deltas = sEnd ? counterDeltas(s0, sEnd) : {};

    // ---- checks
    const warmupS = warmupMinutes * 60;
    const post = samples.filter((s) => s.t > warmupS);
    const head = post.slice(0, 3);
    const tail = post.slice(-3);
    check('splicegate ran the whole soak', !crashed && proxy.proc.running, crashed ? `exited ${JSON.stringify(proxy.proc.exitInfo)}` : `pid ${pid}`);
    check('every sample was taken', statsFailures.length === 0 && samples.length >= Math.floor((minutes * 60) / sampleSeconds) - 1, `${samples.length} samples, ${statsFailures.length} /stats failures ${statsFailures.slice(0, 3).join('; ')}`);
    if (head.length > 0 && tail.length > 0) {
      const rssWarm = median(head.map((s) => s.rssMiB));
      const rssEnd = median(tail.map((s) => s.rssMiB));
      const rssLimit = rssWarm * (1 + RSS_TOLERANCE.ratio) + RSS_TOLERANCE.absMiB;
      check('RSS flat after warm-up', rssEnd <= rssLimit, `${rssWarm.toFixed(1)} MiB after warm-up, ${rssEnd.toFixed(1)} MiB at the end (limit ${rssLimit.toFixed(1)})`);
      const fdWarm = median(head.map((s) => s.fds));
      const fdEnd = median(tail.map((s) => s.fds));
      const fdLimit = fdWarm + Math.max(FD_TOLERANCE.abs, fdWarm * FD_TOLERANCE.ratio);
      check('fd count flat after warm-up', fdEnd <= fdLimit, `${fdWarm} after warm-up, ${fdEnd} at the end (limit ${Math.round(fdLimit)})`);
    } else {
      check('enough samples after the warm-up', false, `${post.length} samples after ${warmupS} s`);
    }
    check('idle again after the load', quiet !== null, quiet ? 'no connection open, no pipe in use' : `still busy 30 s after the load: ${sEnd ? JSON.stringify(Splicegate.brief(sEnd)) : 'no stats'}`);
    const pipesIdle = sEnd ? stat(sEnd, 'pipes_idle') : -1;
    check('idle pipe pool bounded', pipesIdle >= 0 && pipesIdle <= MAX_IDLE_PIPES_PER_WORKER * WORKERS, `pipes_idle ${pipesIdle} (cap ${MAX_IDLE_PIPES_PER_WORKER * WORKERS})`);
    // Every fd the proxy has when idle is one it had at start-up or an idle pipe (two fds each).
    check('no fd leaked', fdsQuiet >= 0 && fdsQuiet <= fdsIdle + 2 * pipesIdle, `${fdsQuiet} fds when idle again = ${fdsIdle} at start + ${fdsQuiet - fdsIdle} (idle pipes account for ${2 * pipesIdle})`);
    const moved = MUST_STAY_ZERO.filter((k) => (deltas[k] ?? 0) !== 0).map((k) => `${k} ${deltas[k]}`);
    check('no refused, failed, timed-out or overflowed connection in the proxy', moved.length === 0, moved.length ? moved.join(', ') : MUST_STAY_ZERO.join(', ') + ': all 0');
    // The only server that resets is iperf3's: at the end of a run it may close data streams that
    // still hold unread bytes (a soak without iperf3 shows none). Anything beyond one reset per
    // connection of each run is not explained.
    const upstreamResets = deltas['upstream_cx_destroy_remote'] ?? 0;
    const explained = (iperf.segments + iperf.busyRetries) * (IPERF_STREAMS + 1);
    check('upstream resets only from iperf3 run ends', upstreamResets <= explained, `upstream_cx_destroy_remote ${upstreamResets} (at most ${explained} for ${iperf.segments} iperf3 runs)`);
    const wrkErr = (w: WrkTotals): number => Object.values(w.errors).reduce((a, b) => a + b, 0);
    check('wrk keep-alive: no errors', wrkErr(wrkKeep) === 0 && wrkKeep.failures.length === 0 && wrkKeep.requests > 0, `${wrkKeep.requests} requests, errors ${JSON.stringify(wrkKeep.errors)} ${wrkKeep.failures.join('; ')}`);
    check('wrk new connection per request: no errors', wrkErr(wrkClose) === 0 && wrkClose.failures.length === 0 && wrkClose.requests > 0, `${wrkClose.requests} requests, errors ${JSON.stringify(wrkClose.errors)} ${wrkClose.failures.join('; ')}`);
    check('iperf3 bulk: no failed run', iperf.failures.length === 0 && iperf.bytes > 0, `${(iperf.bytes / 2 ** 30).toFixed(1)} GiB in ${iperf.segments} runs ${iperf.failures.join('; ')}`);
    const churnOk = churnExit?.code === 0 && churnResult !== null && churnResult['ok'] === true;
    check('churn: no unexpected reset, EOF, mismatch or stall', churnOk, churnResult ? JSON.stringify(churnResult) : `no result (exit ${JSON.stringify(churnExit)})`);

    process.stdout.write(`\n${table(samples, warmupS)}\n\n`);
    process.stdout.write(`idle: ${fdsIdle} fds, ${rssIdleMiB.toFixed(1)} MiB at start; ${fdsQuiet} fds, ${rssQuietMiB.toFixed(1)} MiB after the load\n`);
    process.stdout.write(`traffic: ${deltas['downstream_cx_total'] ?? 0} connections, ${(((deltas['bytes_received'] ?? 0) + (deltas['bytes_sent'] ?? 0)) / 2 ** 30).toFixed(1)} GiB relayed\n`);
    for (const c of checks) process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}\n`);

    const ok = checks.every((c) => c.ok);
    const results = {
      kind: 'splicegate soak',
      startedAt: started.toISOString(),
      wallSeconds: Math.round((Date.now() - started.getTime()) / 1000),
      minutes,
      warmupMinutes,
      sampleSeconds,
      machine: { cpus: os.availableParallelism(), node: process.version, kernel: os.release() },
      config: proxy.configText,
      traffic: {
        wrkKeepAlive: { connections: 16, ...wrkKeep },
        wrkConnectionClose: { connections: 8, ...wrkClose },
        iperf3: { streams: IPERF_STREAMS, mbitPerStream: IPERF_MBIT, ...iperf },
        churn: churnResult,
      },
      idle: { start: { fds: fdsIdle, rssMiB: rssIdleMiB }, end: { fds: fdsQuiet, rssMiB: rssQuietMiB, pipesIdle } },
      samples,
      counters: deltas,
      checks,
      ok,
    };
    fs.mkdirSync(path.dirname(outFile), { recursive: true });
    fs.writeFileSync(outFile, JSON.stringify(results, null, 2) + '\n');
    log(`wrote ${outFile}: ${ok ? 'all checks passed' : `${checks.filter((c) => !c.ok).length} check(s) failed`}`);
    await proxy.stop('SIGTERM', 20000);
    process.exitCode = ok ? 0 : 1;
  } finally {
    await sg?.dispose().catch(() => undefined);
    await lab.destroy();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`soak failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
