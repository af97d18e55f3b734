// `npm run bench:syscalls`: syscalls and wakeups per request, splicegate against the HAProxy
// variants, on the same wrk keep-alive load through the benchmark lab. These counts hardly depend
// on how busy the machine is (unlike req/s), so they are what the small-message work is judged by
// (bench/results/attempts.md). Per contender and concurrency, two wrk runs:
//   1. untraced: voluntary / involuntary context switches of every thread of the proxy
//      (/proc/<pid>/task/*/status) and its CPU time, per request;
//   2. under `strace -c -f` (attached to every thread): calls per syscall per request.
// Writes <out>/<name>.{json,md} (default bench/results/syscalls.*).
//
//   node dist/bench/syscalls.js [--only splicegate,haproxy] [--conns 1,64] [--seconds 3]
//                               [--close] [--path /small|/1m] [--http] [--sg-tuning K=V,...] [--out DIR] [--name NAME]
// --http: the HTTP listeners instead (the http-ka workload of `npm run bench`: requests to the
// gateway's own address routed by header; contenders without one, the splicing HAProxy variants,
// are left out).

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ADDR, Lab } from '../test/lab/lab';
import { sleep } from '../test/lab/util';
import { type BenchEnv, type ContenderId, HAPROXY_VARIANTS, makeContender, pinned, PROTO_CONTENDERS, SERVER_PORTS } from './lib/contenders';
import { selectAndWarm, startLab } from './lib/lab-setup';
import { parseWrk } from './lib/parse';
import { processCpuSeconds } from './lib/proc';
import { Servers } from './lib/servers';
import { parseStraceSummary, processUserSystem, type StraceRow, type ThreadSwitches, threadSwitches } from './lib/syscall-count';

interface Options {
  only: ContenderId[];
  conns: number[];
  seconds: number;
  close: boolean;
  /** What wrk fetches: /small (1 KiB) or /1m (1 MiB). */
  path: string;
  /** Through each contender's HTTP listener (header routing) instead of the transparent path. */
  http: boolean;
  sgTuning: Record<string, string | number | boolean>;
  out: string;
  name: string;
}

/** A proxy at rest (no traffic): what it costs just to be there. */
interface Idle {
  contender: ContenderId;
  seconds: number;
  cpuMsPerS: number | null;
  wakeupsPerS: number;
  threads: Array<{ tid: number; name: string; wakeupsPerS: number }>;
}

const IDLE_SECONDS = 5;

interface Measurement {
  contender: ContenderId;
  conns: number;
  /** Untraced run. */
  requests: number;
  rps: number;
  proxyCpuUsPerReq: number | null;
  /** Share of that CPU spent in user space (the rest is the kernel: syscalls, TCP, and the softirq work they run inline). */
  userShare: number | null;
  wakeupsPerReq: number;
  involuntaryPerReq: number;
  /** Voluntary context switches per request of each thread that had any (name: per request). */
  threads: Array<{ tid: number; name: string; voluntaryPerReq: number }>;
  /** Traced run. */
  tracedRequests: number;
  syscallsPerReq: number;
  errorsPerReq: number;
  perSyscall: Array<{ syscall: string; perReq: number; errorsPerReq: number }>;
}

function log(msg: string): void {
  process.stderr.write(`[syscalls ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function parseOptions(argv: string[], repoRoot: string): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      conns: { type: 'string' },
      seconds: { type: 'string' },
      close: { type: 'boolean', default: false },
      http: { type: 'boolean', default: false },
      path: { type: 'string' },
      'sg-tuning': { type: 'string' },
      out: { type: 'string' },
      name: { type: 'string' },
    },
    strict: true,
  });
  const list = (v: string | undefined): string[] | null => (v === undefined ? null : v.split(',').map((x) => x.trim()).filter(Boolean));
  // The prototype relays only when named (scripts/bench.sh builds them then).
  const known: ContenderId[] = ['splicegate', ...HAPROXY_VARIANTS, ...PROTO_CONTENDERS];
  const only = (list(values.only) ?? ['splicegate', ...HAPROXY_VARIANTS]).flatMap((t) => known.filter((id) => id === t || id.startsWith(`${t}-`)));
  if (only.length === 0) throw new Error(`--only selects nothing; known: ${known.join(', ')}`);
  const conns = (list(values.conns) ?? ['1', '64']).map(Number);
  if (!conns.every((n) => Number.isInteger(n) && n > 0)) throw new Error(`--conns: expected positive integers`);
  const seconds = values.seconds === undefined ? 3 : Number(values.seconds);
  if (!Number.isInteger(seconds) || seconds < 1) throw new Error('--seconds: expected an integer >= 1');
  const sgTuning: Record<string, string | number | boolean> = {};
  for (const kv of list(values['sg-tuning']) ?? []) {
    const m = /^([a-z_]+)=(.+)$/.exec(kv);
    if (!m || m[1] === undefined || m[2] === undefined) throw new Error(`--sg-tuning: expected key=value, got ${kv}`);
    sgTuning[m[1]] = /^\d+$/.test(m[2]) ? Number(m[2]) : m[2] === 'true' || m[2] === 'false' ? m[2] === 'true' : m[2];
  }
  if (values.path !== undefined && !['/small', '/1m'].includes(values.path)) throw new Error('--path: /small or /1m');
  const name = values.name ?? 'syscalls';
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`--name: expected a plain file name, got ${name}`);
  return {
    only: [...new Set(only)],
    conns,
    seconds,
    close: values.close === true,
    path: values.path ?? '/small',
    http: values.http === true,
    sgTuning,
    out: path.resolve(values.out ?? path.join(repoRoot, 'bench', 'results')),
    name,
  };
}

/** Where wrk sends its requests: the server through the transparent path, or an HTTP listener. */
interface Target {
  base: string;
  headers: string[];
}

async function wrk(env: BenchEnv, target: Target, conns: number, seconds: number, close: boolean, urlPath: string): Promise<ReturnType<typeof parseWrk>> {
  const lua = path.join(env.repoRoot, 'bench', 'lib', 'wrk-report.lua');
  const extra = [...(close ? ['-H', 'Connection: close'] : []), ...target.headers.flatMap((h) => ['-H', h])];
  const p = pinned(env, env.loadCpus, 'wrk', ['-t1', `-c${conns}`, `-d${seconds}s`, '--timeout', '5s', '-s', lua, ...extra, `${target.base}${urlPath}`]);
  const r = await env.lab.exec('cli', p.cmd, p.args, { timeoutMs: (seconds + 30) * 1000, nofile: env.nofile });
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${r.stderr.trim()}`);
  return parseWrk(r.stdout);
}

function tids(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map(Number).filter((t) => Number.isInteger(t));
}

function traced(tid: number): boolean {
  try {
    const m = /^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${tid}/status`, 'utf8'));
    return m !== null && Number(m[1]) !== 0;
  } catch {
    return true; // gone: nothing to wait for
  }
}

/** Runs `body` with `strace -c -f` attached to every thread of `pid`; returns strace's table. */
async function underStrace(pid: number, tmpDir: string, body: () => Promise<void>): Promise<StraceRow[]> {
  const file = path.join(tmpDir, `strace-${pid}-${Date.now()}.txt`);
  const threads = tids(pid);
  const st = spawn('strace', ['-c', '-f', '-q', '-o', file, ...threads.flatMap((t) => ['-p', String(t)])], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  st.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => st.on('exit', (code) => resolve(code)));
  try {
    // Synchronise on the attachment itself, not on a sleep (bounded: a liveness limit).
    const deadline = Date.now() + 10000;
    while (!threads.every(traced)) {
      if (st.exitCode !== null) throw new Error(`strace exited early: ${stderr.trim()}`);
      if (Date.now() > deadline) throw new Error(`strace did not attach to ${pid} within 10 s: ${stderr.trim()}`);
      await sleep(20);
    }
    await body();
  } finally {
    st.kill('SIGINT');
    const code = await Promise.race([exited, sleep(10000).then(() => 'timeout' as const)]);
    if (code === 'timeout') st.kill('SIGKILL');
  }
  const text = fs.readFileSync(file, 'utf8');
  fs.rmSync(file, { force: true });
  return parseStraceSummary(text);
}

function perThread(a: ThreadSwitches[], b: ThreadSwitches[], requests: number): Measurement['threads'] {
  const before = new Map(a.map((t) => [t.tid, t]));
  return b
    .map((t) => ({ tid: t.tid, name: t.name, voluntaryPerReq: (t.voluntary - (before.get(t.tid)?.voluntary ?? 0)) / requests }))
    .filter((t) => t.voluntaryPerReq > 0)
    .sort((x, y) => y.voluntaryPerReq - x.voluntaryPerReq);
}

function renderMarkdown(ms: Measurement[], idle: Idle[], o: Options, startedAt: string, commit: string): string {
  const L: string[] = [];
  L.push(`# Syscalls and wakeups per request — ${startedAt.slice(0, 16).replace('T', ' ')} UTC`);
  L.push('');
  L.push(
    `Commit ${commit}. wrk ${o.close ? 'new connection per request (`Connection: close`)' : 'keep-alive'}, ${o.path === '/1m' ? '1 MiB' : '1 KiB'} file from nginx, ${o.seconds} s per run, through the benchmark lab ` +
      (o.http ? '(each proxy\'s HTTP listener: requests to the gateway\'s own address, routed by header, as the http-ka workload) ' : '') +
      `(proxy pinned to CPU 1, load on CPU 0). Wakeups = voluntary context switches of all the proxy's threads (a thread that blocks in epoll_wait and is woken again) per request, from an untraced run; ` +
      `syscalls per request from a second run under \`strace -c -f\` attached to every thread (strace slows the proxy, which changes how many events one epoll_wait returns: compare contenders, not absolute rates). ` +
      `Per request = per HTTP request/response through the proxy (both directions, both sockets). Reproduce: \`npm run bench:syscalls${o.http ? ' -- --http' : ''}\`${Object.keys(o.sgTuning).length ? ` (splicegate tuning: ${JSON.stringify(o.sgTuning)})` : ''}.`,
  );
  L.push('');
  const f = (v: number | null, d = 2): string => (v === null || !Number.isFinite(v) ? '–' : v.toFixed(d));
  L.push('| contender | conns | syscalls/req | of which failed (EAGAIN…) | wakeups/req | involuntary switches/req | proxy CPU µs/req | of which user space | req/s (untraced, noisy) |');
  L.push('|---|---|---|---|---|---|---|---|---|');
  for (const m of ms) {
    L.push(`| ${m.contender} | ${m.conns} | ${f(m.syscallsPerReq)} | ${f(m.errorsPerReq)} | ${f(m.wakeupsPerReq)} | ${f(m.involuntaryPerReq)} | ${f(m.proxyCpuUsPerReq, 1)} | ${m.userShare === null ? '–' : `${Math.round(m.userShare * 100)} %`} | ${Math.round(m.rps).toLocaleString('en-US')} |`);
  }
  L.push('');
  L.push(`### At rest (${IDLE_SECONDS} s, no traffic, after the runs above)`);
  L.push('');
  L.push('| contender | CPU ms per second | wakeups per second | by thread |');
  L.push('|---|---|---|---|');
  for (const i of idle) {
    L.push(`| ${i.contender} | ${f(i.cpuMsPerS, 2)} | ${f(i.wakeupsPerS, 1)} | ${i.threads.map((t) => `${t.name} ${f(t.wakeupsPerS, 1)}`).join(', ') || '–'} |`);
  }
  L.push('');
  L.push('### Calls per request, by syscall (≥ 0.01 per request)');
  L.push('');
  const names = [...new Set(ms.flatMap((m) => m.perSyscall.filter((x) => x.perReq >= 0.01).map((x) => x.syscall)))];
  L.push(`| syscall | ${ms.map((m) => `${m.contender} c${m.conns}`).join(' | ')} |`);
  L.push(`|---|${ms.map(() => '---').join('|')}|`);
  for (const n of names) {
    L.push(
      `| ${n} | ${ms
        .map((m) => {
          const x = m.perSyscall.find((y) => y.syscall === n);
          return x ? `${f(x.perReq)}${x.errorsPerReq > 0 ? ` (${f(x.errorsPerReq)} failed)` : ''}` : '–';
        })
        .join(' | ')} |`,
    );
  }
  L.push('');
  L.push('### Wakeups per request, by thread');
  L.push('');
  for (const m of ms) {
    L.push(`- ${m.contender} c${m.conns}: ${m.threads.map((t) => `${t.name} ${f(t.voluntaryPerReq, 3)}`).join(', ') || '–'}`);
  }
  L.push('');
  return L.join('\n');
}

async function main(): Promise<number> {
  const repoRoot = path.resolve(__dirname, '..', '..');
  const o = parseOptions(process.argv.slice(2), repoRoot);
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces, strace on other processes)');
  const startedAt = new Date().toISOString();
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicegate-syscalls-'));
  process.on('exit', () => fs.rmSync(tmpDir, { recursive: true, force: true }));
  const lab = await Lab.create({ name: 'sysc' });
  const env: BenchEnv = { lab, tmpDir, repoRoot, proxyCpus: '1', loadCpus: '0', threads: 1, nofile: 20000, serverAddr: ADDR.server4, sgTuning: o.sgTuning, nice: -10 };
  const contenders = o.only.map(makeContender);
  const servers = new Servers(env);
  const ms: Measurement[] = [];
  const idle: Idle[] = [];
  try {
    for (const w of await startLab(env, servers, contenders)) log(w);
    for (const c of contenders) {
      const target: Target | null = o.http ? c.httpEntry(env.serverAddr) : { base: `http://${env.serverAddr}:${SERVER_PORTS.http}`, headers: [] };
      if (target === null) {
        log(`${c.id}: no HTTP listener, left out`);
        continue;
      }
      await selectAndWarm(env, c);
      for (const conns of o.conns) {
        const pid = c.pid();
        if (pid === null) throw new Error(`${c.id} is not running:\n${c.diagnostics()}`);
        const s0 = threadSwitches(pid);
        const cpu0 = processCpuSeconds(pid);
        const us0 = processUserSystem(pid);
        const plain = await wrk(env, target, conns, o.seconds, o.close, o.path);
        const cpu1 = processCpuSeconds(pid);
        const us1 = processUserSystem(pid);
        const s1 = threadSwitches(pid);
        const n = Math.max(1, plain.requests);
        const sum = (xs: ThreadSwitches[], k: 'voluntary' | 'involuntary'): number => xs.reduce((a, t) => a + t[k], 0);
        let tracedReqs = 0;
        const rows = await underStrace(pid, tmpDir, async () => {
          tracedReqs = (await wrk(env, target, conns, o.seconds, o.close, o.path)).requests;
        });
        const t = Math.max(1, tracedReqs);
        const total = rows.find((r) => r.syscall === 'total');
        const m: Measurement = {
          contender: c.id,
          conns,
          requests: plain.requests,
          rps: plain.requestsPerSec,
          proxyCpuUsPerReq: cpu0 !== null && cpu1 !== null ? ((cpu1 - cpu0) * 1e6) / n : null,
          userShare: us0 !== null && us1 !== null && us1.user + us1.system - us0.user - us0.system > 0 ? (us1.user - us0.user) / (us1.user + us1.system - us0.user - us0.system) : null,
          wakeupsPerReq: (sum(s1, 'voluntary') - sum(s0, 'voluntary')) / n,
          involuntaryPerReq: (sum(s1, 'involuntary') - sum(s0, 'involuntary')) / n,
          threads: perThread(s0, s1, n),
          tracedRequests: tracedReqs,
          syscallsPerReq: (total?.calls ?? 0) / t,
          errorsPerReq: (total?.errors ?? 0) / t,
          perSyscall: rows.filter((r) => r.syscall !== 'total').map((r) => ({ syscall: r.syscall, perReq: r.calls / t, errorsPerReq: r.errors / t })),
        };
        ms.push(m);
        log(`${c.id} c${conns}: ${m.syscallsPerReq.toFixed(2)} syscalls/req, ${m.wakeupsPerReq.toFixed(3)} wakeups/req, ${m.proxyCpuUsPerReq?.toFixed(1) ?? '-'} µs CPU/req, ${Math.round(m.rps)} req/s`);
      }
    }
    // At rest, after the traffic (so lazily started machinery is running): all proxies side by side.
    const pids = contenders.map((c) => ({ c, pid: c.pid() }));
    const a = pids.map((x) => ({ s: x.pid === null ? [] : threadSwitches(x.pid), cpu: x.pid === null ? null : processCpuSeconds(x.pid) }));
    const t0 = Date.now();
    await sleep(IDLE_SECONDS * 1000);
    const secs = (Date.now() - t0) / 1000;
    pids.forEach((x, i) => {
      if (x.pid === null) return;
      const s1 = threadSwitches(x.pid);
      const cpu1 = processCpuSeconds(x.pid);
      const s0 = a[i]?.s ?? [];
      const cpu0 = a[i]?.cpu ?? null;
      const threads = perThread(s0, s1, secs).map((t) => ({ tid: t.tid, name: t.name, wakeupsPerS: t.voluntaryPerReq }));
      idle.push({
        contender: x.c.id,
        seconds: secs,
        cpuMsPerS: cpu0 !== null && cpu1 !== null ? ((cpu1 - cpu0) * 1000) / secs : null,
        wakeupsPerS: threads.reduce((acc, t) => acc + t.wakeupsPerS, 0),
        threads,
      });
    });
  } finally {
    for (const c of contenders) await c.stop().catch(() => undefined);
    await lab.destroy();
  }
  const commit = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  fs.mkdirSync(o.out, { recursive: true });
  const md = renderMarkdown(ms, idle, o, startedAt, commit);
  fs.writeFileSync(path.join(o.out, `${o.name}.json`), JSON.stringify({ startedAt, commit, options: o, measurements: ms, idle }, null, 2) + '\n');
  fs.writeFileSync(path.join(o.out, `${o.name}.md`), md);
  process.stdout.write(md);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    log(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
