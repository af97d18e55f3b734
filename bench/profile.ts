// `npm run bench:profile`: where each proxy's CPU goes, per request, by perf with software events.
// Same lab as bench/syscalls.ts (proxy pinned to CPU 1, wrk and the servers on CPU 0). Each proxy
// is held to the per-core quota (bench/lib/cgroup.ts) so that it, not wrk, is the bottleneck, and
// for each workload and proxy, wrk runs for N seconds while
//   perf record -e cpu-clock -F 999 -C <proxy cpu> -g
// samples everything that runs on the proxy's CPU (its threads, the softirq work that lands in
// them, ksoftirqd, kworkers, others). perf starts with its events disabled and is switched on and
// off through its control fd right around the wrk run, so the window is the load's. The samples
// are attributed by bench/lib/perf-attribution.ts and divided by wrk's request count.
// Writes <out>/<name>.{json,md} (default bench/results/profile.*).
//
//   node dist/bench/profile.js [--only splicegate,haproxy] [--workloads wrk-ka,wrk-close]
//        [--quota 0.5] [--seconds 5] [--reps 1] [--freq 999] [--sg-tuning K=V,...]
//        [--out DIR] [--name NAME] [--keep-script DIR]
//   node dist/bench/profile.js --render bench/results/profile.json   (rewrite its .md and summary, no lab)

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ADDR, Lab } from '../test/lab/lab';
import { sleep } from '../test/lab/util';
import { CpuCgroups, type CpuStat, cpuStatDelta } from './lib/cgroup';
import { ALL_CONTENDERS, type BenchEnv, type Contender, type ContenderId, HAPROXY_VARIANTS, makeContender } from './lib/contenders';
import { selectAndWarm, setRedirect, startLab } from './lib/lab-setup';
import { type Attribution, attribute, KERNEL_PARTS, parsePerfScript, type ProxyIdentity, SYSCALL_GROUPS, usPerRequest } from './lib/perf-attribution';
import { PerfRecording, perfScript } from './lib/perf-record';
import { CLK_TCK } from './lib/proc';
import { processUserSystem } from './lib/syscall-count';
import { Servers } from './lib/servers';
import { median } from './lib/stats';
import { allWorkloads, type Durations, type Workload } from './lib/workloads';

/** Defaults of the options, in one place (the usage text and the report's "Reproduce" read them). */
const DEFAULTS = { workloads: ['wrk-ka', 'wrk-close'], quota: 0.5, seconds: 5, reps: 1, freq: 999 } as const;

const USAGE = `node dist/bench/profile.js [options]   (npm run bench:profile -- [options])
  --only IDS         contenders (default: splicegate and the HAProxy variants; known: ${ALL_CONTENDERS.filter((c) => c !== 'direct').join(', ')})
  --workloads IDS    wrk workloads of npm run bench (default ${DEFAULTS.workloads.join(',')}; also wrk-1m)
  --quota CORES      CPU quota of each proxy (cgroup v1 cpu; default ${DEFAULTS.quota})
  --seconds N        wrk duration = perf window per run (default ${DEFAULTS.seconds})
  --reps N           repetitions, medians reported (default ${DEFAULTS.reps})
  --freq HZ          perf sampling frequency (default ${DEFAULTS.freq})
  --sg-tuning K=V,.. extra splicegate tuning keys
  --out DIR          results directory (default bench/results)
  --name NAME        results file name (default profile)
  --keep-script DIR  also keep each run's perf script text there (for fixtures)
  --render FILE      no measurement: recompute the summary and the .md beside FILE from its runs`;

interface Options {
  only: ContenderId[];
  workloads: string[];
  quota: number;
  seconds: number;
  reps: number;
  freq: number;
  sgTuning: Record<string, string | number | boolean>;
  out: string;
  name: string;
  keepScript: string | null;
  /** A results JSON to re-render instead of measuring. */
  render: string | null;
}

interface Run {
  rep: number;
  workload: string;
  contender: ContenderId;
  requests: number;
  rps: number;
  /** The workload's headline metric from wrk (req/s, conn/s or Gbit/s) under the quota. */
  rate: number;
  errors: number;
  /** The proxy's CPU time over the perf window by /proc/<pid>/stat (cross-check of perf's sum). */
  procCpuS: number | null;
  /** Of which user time by /proc (tick-sampled: which mode the scheduler tick interrupted). */
  procUserS: number | null;
  /** Time the hypervisor ran something else on the proxy's vCPU meanwhile (/proc/stat steal). */
  stealS: number | null;
  /** The proxy's pids (the process and its children) as attributed. */
  pids: number[];
  throttle: CpuStat;
  /** Set when the measurement does not count (not throttled, errors, proxy gone). */
  invalid?: string;
  attribution: Attribution;
  /** µs per request per bucket (flat keys, see buckets()). */
  usPerReq: Record<string, number>;
}

function log(msg: string): void {
  process.stderr.write(`[profile ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function parseOptions(argv: string[], repoRoot: string): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      workloads: { type: 'string' },
      quota: { type: 'string' },
      seconds: { type: 'string' },
      reps: { type: 'string' },
      freq: { type: 'string' },
      'sg-tuning': { type: 'string' },
      out: { type: 'string' },
      name: { type: 'string' },
      'keep-script': { type: 'string' },
      render: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return null;
  }
  const list = (v: string | undefined): string[] | null => (v === undefined ? null : v.split(',').map((x) => x.trim()).filter(Boolean));
  const known = ALL_CONTENDERS.filter((c) => c !== 'direct');
  const only = (list(values.only) ?? ['splicegate', ...HAPROXY_VARIANTS]).flatMap((t) => known.filter((id) => id === t || id.startsWith(`${t}-`)));
  if (only.length === 0) throw new Error(`--only selects nothing; known: ${known.join(', ')}`);
  const int = (v: string | undefined, dflt: number, what: string): number => {
    const n = v === undefined ? dflt : Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${what}: expected an integer >= 1, got ${v}`);
    return n;
  };
  const quota = values.quota === undefined ? DEFAULTS.quota : Number(values.quota);
  if (!(quota > 0 && quota <= 64)) throw new Error(`--quota: expected a number of cores > 0, got ${values.quota}`);
  const sgTuning: Record<string, string | number | boolean> = {};
  for (const kv of list(values['sg-tuning']) ?? []) {
    const m = /^([a-z_]+)=(.+)$/.exec(kv);
    if (!m || m[1] === undefined || m[2] === undefined) throw new Error(`--sg-tuning: expected key=value, got ${kv}`);
    sgTuning[m[1]] = /^\d+$/.test(m[2]) ? Number(m[2]) : m[2] === 'true' || m[2] === 'false' ? m[2] === 'true' : m[2];
  }
  const name = values.name ?? 'profile';
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`--name: expected a plain file name, got ${name}`);
  return {
    only: [...new Set(only)],
    workloads: list(values.workloads) ?? [...DEFAULTS.workloads],
    quota,
    seconds: int(values.seconds, DEFAULTS.seconds, '--seconds'),
    reps: int(values.reps, DEFAULTS.reps, '--reps'),
    freq: int(values.freq, DEFAULTS.freq, '--freq'),
    sgTuning,
    out: path.resolve(values.out ?? path.join(repoRoot, 'bench', 'results')),
    name,
    keepScript: values['keep-script'] === undefined ? null : path.resolve(values['keep-script']),
    render: values.render === undefined ? null : path.resolve(values.render),
  };
}

/** The wrk workloads of `npm run bench` (bench/lib/workloads.ts) selected by id. */
function selectWorkloads(ids: readonly string[]): Workload[] {
  const all = allWorkloads([]);
  return ids.map((id) => {
    const w = all.find((x) => x.id === id);
    if (!w || !id.startsWith('wrk-')) throw new Error(`--workloads: ${id} is not a wrk workload; known: ${all.filter((x) => x.id.startsWith('wrk-')).map((x) => x.id).join(', ')}`);
    return w;
  });
}

/** Steal time of one CPU so far, seconds (/proc/stat, field 8 of its cpuN line); null if absent. */
function stealSeconds(cpu: string): number | null {
  const m = new RegExp(`^cpu${escapeRe(cpu)}\\s+(.*)$`, 'm').exec(fs.readFileSync('/proc/stat', 'utf8'));
  const v = m?.[1]?.split(/\s+/).map(Number)[7];
  return v === undefined || !Number.isFinite(v) ? null : v / CLK_TCK;
}

/** `pid` and every process descended from it (a proxy that forks workers). */
function processTree(pid: number): Set<number> {
  const parent = new Map<number, number>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const t = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(t.slice(t.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(e), ppid);
    } catch {
      // exited meanwhile
    }
  }
  const tree = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [p, pp] of parent) {
      if (!tree.has(p) && tree.has(pp)) {
        tree.add(p);
        grew = true;
      }
    }
  }
  return tree;
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const NEVER = /(?!)/;

/** What counts as the proxy's own code: a node process's native addons, else its executable. */
function identity(pid: number): ProxyIdentity {
  const exe = fs.readlinkSync(`/proc/${pid}/exe`);
  const node = path.basename(exe) === 'node';
  return {
    pids: processTree(pid),
    own: node ? /\.node$/ : new RegExp(`^${escapeRe(exe)}$`),
    runtime: node ? new RegExp(`^${escapeRe(exe)}$`) : NEVER,
  };
}

/** Flat µs-per-request map of one run: the keys the report's rows read. */
function buckets(a: Attribution, requests: number, procCpuS: number | null, procUserS: number | null, stealS: number | null): Record<string, number> {
  const r: Record<string, number> = {};
  const put = (k: string, ns: number): void => {
    r[k] = usPerRequest(ns, requests);
  };
  put('cpu', a.totalNs);
  put('proxy', a.proxyNs);
  if (procCpuS !== null) put('proc', procCpuS * 1e9);
  if (procUserS !== null) put('proc.user', procUserS * 1e9);
  if (stealS !== null) put('steal', stealS * 1e9);
  let userNs = 0;
  for (const [k, v] of Object.entries(a.user)) {
    put(`user.${k}`, v);
    userNs += v;
  }
  put('user', userNs);
  put('kernel', a.proxyNs - userNs);
  for (const [k, v] of Object.entries(a.kernel)) put(`ctx.${k}`, v);
  for (const [k, v] of Object.entries(a.parts)) put(`part.${k}`, v);
  for (const [ctx, row] of Object.entries(a.matrix)) for (const [p, v] of Object.entries(row)) put(`m.${ctx}.${p}`, v);
  for (const [k, v] of Object.entries(a.syscalls)) put(`sys.${k}`, v);
  // Threads by rank (busiest first): tids differ from run to run, ranks can be compared.
  Object.values(a.threads)
    .sort((x, y) => y.ns - x.ns)
    .forEach((t, i) => put(`thread.${i + 1}`, t.ns));
  for (const [k, v] of Object.entries(a.others)) put(`other.${k}`, v);
  return r;
}

/** Median over the valid runs of (workload, contender), key by key (missing key = 0 in that run). */
function medians(runs: readonly Run[]): Record<string, number> {
  const keys = new Set(runs.flatMap((r) => Object.keys(r.usPerReq)));
  const m: Record<string, number> = {};
  for (const k of keys) m[k] = median(runs.map((r) => r.usPerReq[k] ?? 0));
  m['rps'] = median(runs.map((r) => r.rps));
  m['rate'] = median(runs.map((r) => r.rate));
  return m;
}

interface Summary {
  workload: string;
  title: string;
  contender: ContenderId;
  valid: number;
  /** µs per request (and rps) medians. */
  m: Record<string, number>;
  /** Lowest and highest proxy µs per request over the valid repetitions. */
  proxyRange: [number, number] | null;
  userShare: number;
  /** Proxy CPU per request over the best (lowest) HAProxy variant's. */
  vsBestHaproxy: number | null;
  /** The measured rate under the quota over the best HAProxy variant's (the per-core ratio of this run). */
  rateVsBestHaproxy: number | null;
  /** Best HAProxy's proxy µs/req over this proxy's kernel-only µs/req: a zero-user-space bound. */
  zeroUserBound: number | null;
}

function summarise(runs: readonly Run[], workloads: readonly Workload[], only: readonly ContenderId[]): Summary[] {
  const out: Summary[] = [];
  for (const w of workloads) {
    const rows = only.map((c) => {
      const valid = runs.filter((r) => r.workload === w.id && r.contender === c && r.invalid === undefined);
      return { c, valid, m: valid.length > 0 ? medians(valid) : {} };
    });
    const hap = rows.filter((r) => HAPROXY_VARIANTS.includes(r.c) && r.m['proxy'] !== undefined).map((r) => r.m['proxy'] as number);
    const best = hap.length > 0 ? Math.min(...hap) : null;
    const rates = rows.filter((r) => HAPROXY_VARIANTS.includes(r.c) && r.m['rate'] !== undefined).map((r) => r.m['rate'] as number);
    const bestRate = rates.length > 0 ? Math.max(...rates) : null;
    for (const r of rows) {
      const proxy = r.m['proxy'];
      const kernel = r.m['kernel'];
      out.push({
        workload: w.id,
        title: w.title,
        contender: r.c,
        valid: r.valid.length,
        m: r.m,
        proxyRange: r.valid.length > 0 ? [Math.min(...r.valid.map((x) => x.usPerReq['proxy'] ?? 0)), Math.max(...r.valid.map((x) => x.usPerReq['proxy'] ?? 0))] : null,
        userShare: proxy !== undefined && proxy > 0 ? (r.m['user'] ?? 0) / proxy : Number.NaN,
        vsBestHaproxy: best !== null && proxy !== undefined ? proxy / best : null,
        rateVsBestHaproxy: bestRate !== null && bestRate > 0 && r.m['rate'] !== undefined ? r.m['rate'] / bestRate : null,
        zeroUserBound: best !== null && kernel !== undefined && kernel > 0 ? best / kernel : null,
      });
    }
  }
  return out;
}

const CONTEXT_LABEL: Record<string, string> = {
  'syscall:send': 'syscalls: sendto / sendmsg / write',
  'syscall:recv': 'syscalls: recvfrom / recvmsg / read',
  'syscall:epoll_wait': 'syscalls: epoll_wait',
  'syscall:epoll_ctl': 'syscalls: epoll_ctl',
  'syscall:splice': 'syscalls: splice',
  'syscall:io_uring_enter': 'syscalls: io_uring_enter',
  'syscall:accept': 'syscalls: accept4',
  'syscall:connect': 'syscalls: connect',
  'syscall:close': 'syscalls: close / shutdown',
  'syscall:sockopt': 'syscalls: setsockopt / getsockopt',
  'syscall:other': 'syscalls: others',
  page_fault: 'page faults (from user space)',
  interrupt: 'interrupts arriving in user space',
  other: 'other kernel (return to user, …)',
};
const PART_LABEL: Record<string, string> = {
  softirq_rx: 'softirq RX run inline (net_rx_action)',
  rps_ipi: 'RPS IPIs sent (net_rps_send_ipi)',
  netfilter: 'netfilter / conntrack (nf_hook_slow)',
  scheduler: 'scheduler (schedule, finish_task_switch)',
  wake_up: 'waking other tasks (try_to_wake_up)',
  ipi_rx: 'IPIs received (RPS kicks from the load CPU)',
  irq: 'other interrupt work',
  page_fault: 'page faults',
  rest: 'the rest (TCP/IP, copies, epoll, syscall entry)',
};

function renderMarkdown(sums: readonly Summary[], runs: readonly Run[], workloads: readonly Workload[], o: Options, startedAt: string, commit: string): string {
  const f = (v: number | undefined | null, d = 1): string => (v === undefined || v === null || !Number.isFinite(v) ? '–' : v.toFixed(d));
  const pct = (v: number): string => (Number.isFinite(v) ? `${Math.round(v * 100)} %` : '–');
  const L: string[] = [];
  L.push(`# Where the CPU goes, per request (perf) — ${startedAt.slice(0, 16).replace('T', ' ')} UTC`);
  L.push('');
  L.push(
    `Commit ${commit}. Each proxy pinned to CPU 1 and held to ${o.quota} core (cgroup v1 cpu quota, the per-core mode of \`npm run bench\`); wrk and nginx on CPU 0. ` +
      `For each workload and proxy, wrk runs ${o.seconds} s while \`perf record -e cpu-clock -F ${o.freq} -C 1 -g\` samples everything on CPU 1 (switched on and off through perf's control fd around the wrk run). ` +
      `Every sample is attributed by bench/lib/perf-attribution.ts: the proxy process or another task; the proxy's user space by the DSO of the sampled instruction; its kernel time by the outermost frame (which syscall, page fault, interrupt) and, across all of them, by the innermost marker frame (softirq RX run inline, RPS IPIs, netfilter, scheduler, …). ` +
      `Figures are CPU µs per request (sample periods / wrk's requests), medians of ${o.reps} repetition(s). Reproduce: \`npm run bench:profile${reproduceArgs(o)}\`.`,
  );
  L.push('');
  L.push(
    'Reading notes: on this kernel cpu-clock does not sample an idle CPU, so the idle time of CPU 1 is absent (not zero). ' +
      `The /proc row is the proxy's utime+stime over the same window; perf's sum is ${coverage(sums)} of it. ` +
      'Where the gap is larger (keep-alive), the proxy goes idle, blocked in epoll_wait, far more often, and a timer-driven sampler that skips idle CPUs under-samples short bursts after idle: on this machine a spinner pinned to CPU 1 was sampled at 100 % of its CPU time when it ran continuously or in 200 µs bursts between 200 µs sleeps, and at 65 % in 50 µs bursts between 100 µs sleeps. Shares within a column are therefore what to compare. ' +
      'Each row is a median of its own over the repetitions, so rows need not add up exactly; the proxy row gives the range. ' +
      '"Other processes" are tasks outside the lab that other users of this machine ran on CPU 1 meanwhile; they are not in the proxy\'s figures. ' +
      'The RPS IPI rows are a property of the lab: the gateway namespace processes its receive path on CPU 1 and the client and server namespaces theirs on CPU 0 (bench/lib/lab-setup.ts), so what the proxy sends is queued to CPU 0 with an IPI (one per softirq round), which in a VM costs an exit; every proxy pays it alike.',
  );
  L.push('');
  const invalid = runs.filter((r) => r.invalid !== undefined);
  if (invalid.length > 0) {
    L.push(`Not counted (${invalid.length}): ${invalid.map((r) => `${r.workload} ${r.contender} rep ${r.rep + 1}: ${r.invalid}`).join('; ')}.`);
    L.push('');
  }
  for (const w of workloads) {
    const ss = sums.filter((s) => s.workload === w.id);
    const cols = ss.map((s) => s.contender);
    L.push(`## ${w.title} (${w.id})`);
    L.push('');
    L.push(`| CPU µs per request | ${cols.join(' | ')} |`);
    L.push(`|---|${cols.map(() => '---:').join('|')}|`);
    const row = (label: string, get: (s: Summary) => string, always = false): void => {
      const cells = ss.map(get);
      if (always || cells.some((c) => c !== '–' && c !== '0.0' && c !== '0 %')) L.push(`| ${label} | ${cells.join(' | ')} |`);
    };
    const key = (k: string, d = 1) => (s: Summary) => f(s.m[k] ?? (s.valid > 0 ? 0 : undefined), d);
    row(`${w.unit} at ${o.quota} core (wrk, while sampled)`, (s) => (s.m['rate'] === undefined ? '–' : w.unit === 'Gbit/s' ? f(s.m['rate'], 2) : Math.round(s.m['rate']).toLocaleString('en-US')), true);
    row(`&nbsp;&nbsp;/ best HAProxy's (this run's per-core ratio)`, (s) => (s.rateVsBestHaproxy === null ? '–' : `${f(s.rateVsBestHaproxy, 2)}x`), true);
    if (w.unit === 'Gbit/s') row('requests per second (each one 1 MiB: µs below are per MiB)', (s) => (s.m['rps'] === undefined ? '–' : f(s.m['rps'], 0)), true);
    row('everything on the proxy CPU', key('cpu'), true);
    row('**the proxy process**', (s) => `**${key('proxy')(s)}**${s.proxyRange && s.valid > 1 ? ` (${f(s.proxyRange[0])}–${f(s.proxyRange[1])})` : ''}`, true);
    row('&nbsp;&nbsp;cross-check: the proxy by /proc/pid/stat', key('proc'), true);
    row('&nbsp;&nbsp;hypervisor steal on the proxy CPU meanwhile', key('steal'), true);
    row('**user space**', (s) => `**${key('user')(s)}**`, true);
    row('&nbsp;&nbsp;own code (splicegate.node / haproxy binary)', key('user.own'), true);
    row('&nbsp;&nbsp;libc, C++ runtime, vDSO', key('user.libc'));
    row('&nbsp;&nbsp;node, V8, JIT code', key('user.runtime'));
    row('&nbsp;&nbsp;other libraries', key('user.other'));
    row('**kernel**', (s) => `**${key('kernel')(s)}**`, true);
    for (const [ctx, label] of Object.entries(CONTEXT_LABEL)) row(`&nbsp;&nbsp;${label}`, key(`ctx.${ctx}`));
    row('*kernel time by innermost marker (all contexts):*', () => '', true);
    for (const p of KERNEL_PARTS) row(`&nbsp;&nbsp;${PART_LABEL[p] ?? p}`, key(`part.${p}`));
    row('*other tasks on the proxy CPU:*', () => '', true);
    row('&nbsp;&nbsp;ksoftirqd', key('other.ksoftirqd'));
    row('&nbsp;&nbsp;kworkers', key('other.kworker'));
    row('&nbsp;&nbsp;idle (swapper)', key('other.idle'));
    row('&nbsp;&nbsp;other processes', key('other.other'));
    row('**user-space share of the proxy**', (s) => `**${pct(s.userShare)}**`, true);
    row('&nbsp;&nbsp;cross-check: utime share by /proc (tick-sampled)', (s) => (s.m['proc.user'] !== undefined && (s.m['proc'] ?? 0) > 0 ? pct((s.m['proc.user'] as number) / (s.m['proc'] as number)) : '–'));
    row('proxy CPU per request / best HAProxy', (s) => (s.vsBestHaproxy === null ? '–' : `${f(s.vsBestHaproxy, 2)}x`), true);
    row('bound with zero user space: best HAProxy / this kernel time', (s) => (s.zeroUserBound === null ? '–' : `${f(s.zeroUserBound, 2)}x`), true);
    L.push('');
    // Sub-shares inside the syscalls that matter.
    const ctxs = ['syscall:send', 'syscall:recv', 'syscall:epoll_wait', 'syscall:splice', 'syscall:accept', 'syscall:connect', 'syscall:close'];
    const sub: string[] = [];
    for (const ctx of ctxs) {
      for (const p of KERNEL_PARTS) {
        const cells = ss.map((s) => f(s.m[`m.${ctx}.${p}`] ?? (s.valid > 0 ? 0 : undefined)));
        if (cells.some((c) => c !== '–' && Number(c) >= 0.5)) sub.push(`| ${ctx.slice(8)}: ${PART_LABEL[p] ?? p} | ${cells.join(' | ')} |`);
      }
    }
    if (sub.length > 0) {
      L.push(`Inside the syscalls (µs per request, rows ≥ 0.5 µs for some proxy):`);
      L.push('');
      L.push(`| syscall: part | ${cols.join(' | ')} |`);
      L.push(`|---|${cols.map(() => '---:').join('|')}|`);
      L.push(...sub);
      L.push('');
    }
    for (const s of ss) {
      const proxy = s.m['proxy'];
      if (proxy === undefined || !(proxy > 0)) continue;
      const th = Object.entries(s.m)
        .filter(([k]) => k.startsWith('thread.'))
        .map(([k, v]) => [k.slice(7), v / proxy] as const)
        .filter(([, v]) => v >= 0.005)
        .sort((a, b) => Number(a[0]) - Number(b[0]));
      if (th.length > 1) L.push(`- ${s.contender}: the proxy's CPU by thread, busiest first: ${th.map(([, v]) => pct(v)).join(', ')} (threads with ≥ 0.5 %)`);
    }
    L.push('');
  }
  L.push(...explain(sums));
  return L.join('\n');
}

/** The command-line options of a run that differ from the defaults (for the report's "Reproduce"). */
function reproduceArgs(o: Options): string {
  const a: string[] = [];
  if (o.only.join(',') !== ['splicegate', ...HAPROXY_VARIANTS].join(',')) a.push(`--only ${o.only.join(',')}`);
  if (o.workloads.join(',') !== DEFAULTS.workloads.join(',')) a.push(`--workloads ${o.workloads.join(',')}`);
  if (o.quota !== DEFAULTS.quota) a.push(`--quota ${o.quota}`);
  if (o.seconds !== DEFAULTS.seconds) a.push(`--seconds ${o.seconds}`);
  if (o.reps !== DEFAULTS.reps) a.push(`--reps ${o.reps}`);
  if (o.freq !== DEFAULTS.freq) a.push(`--freq ${o.freq}`);
  const t = Object.entries(o.sgTuning).map(([k, v]) => `${k}=${String(v)}`);
  if (t.length > 0) a.push(`--sg-tuning ${t.join(',')}`);
  return a.length > 0 ? ` -- ${a.join(' ')}` : '';
}

/** "84-88 % (wrk-ka), 97-100 % (wrk-close)": perf's proxy sum over /proc's, range over contenders. */
function coverage(sums: readonly Summary[]): string {
  const parts: string[] = [];
  for (const w of [...new Set(sums.map((s) => s.workload))]) {
    const r = sums.filter((s) => s.workload === w && (s.m['proc'] ?? 0) > 0 && s.m['proxy'] !== undefined).map((s) => (s.m['proxy'] as number) / (s.m['proc'] as number));
    if (r.length > 0) parts.push(`${Math.round(Math.min(...r) * 100)}-${Math.round(Math.max(...r) * 100)} % (${w})`);
  }
  return parts.join(', ') || '–';
}

/** The sentences under the tables: what share is the proxies' own code, and what that bounds. */
function explain(sums: readonly Summary[]): string[] {
  const L: string[] = ['## What it says', ''];
  const pct = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '–' : `${Math.round(v * 100)} %`);
  for (const w of [...new Set(sums.map((s) => s.workload))]) {
    const ss = sums.filter((s) => s.workload === w && s.m['proxy'] !== undefined);
    const sg = ss.find((s) => s.contender === 'splicegate');
    const hap = ss.filter((s) => HAPROXY_VARIANTS.includes(s.contender));
    if (ss.length === 0) continue;
    const best = hap.length > 0 ? hap.reduce((a, b) => ((a.m['proxy'] ?? Infinity) <= (b.m['proxy'] ?? Infinity) ? a : b)) : null;
    const parts: string[] = [];
    for (const s of ss) {
      const own = s.m['user.own'] ?? 0;
      const proxy = s.m['proxy'] ?? Number.NaN;
      parts.push(`${s.contender} ${(s.m['proxy'] ?? 0).toFixed(1)} µs per request, of which user space ${pct(s.userShare)} and its own code ${pct(own / proxy)}`);
    }
    L.push(`- **${w}**: ${parts.join('; ')}.`);
    if (sg && best) {
      const sgKernel = sg.m['kernel'] ?? Number.NaN;
      const bestProxy = best.m['proxy'] ?? Number.NaN;
      const bestKernel = best.m['kernel'] ?? Number.NaN;
      L.push(
        `  The best HAProxy variant here (${best.contender}) spends ${bestProxy.toFixed(1)} µs, ${(bestKernel).toFixed(1)} of them in the kernel; splicegate's kernel time alone is ${sgKernel.toFixed(1)} µs. ` +
          `A proxy with splicegate's kernel work and zero user-space cost would carry at most ${(bestProxy / sgKernel).toFixed(2)}x the best HAProxy's ${w === 'wrk-close' ? 'connections' : w === 'wrk-1m' ? 'bytes' : 'requests'} per core in this lab ` +
          `(splicegate now: ${sg.vsBestHaproxy === null ? '–' : (1 / sg.vsBestHaproxy).toFixed(2)}x by CPU per request, ${sg.rateVsBestHaproxy === null ? '–' : sg.rateVsBestHaproxy.toFixed(2)}x by the rate wrk measured); one with HAProxy's own kernel work and zero user space: ${(bestProxy / bestKernel).toFixed(2)}x.`,
      );
    }
  }
  L.push('');
  return L;
}

interface Results {
  startedAt: string;
  commit: string;
  kernel: string;
  perf: string;
  options: Options;
  runs: Run[];
}

/** Writes <dir>/<name>.json (the runs and their summary) and .md; returns the markdown. */
function writeResults(r: Results, dir: string, name: string): string {
  const workloads = selectWorkloads(r.options.workloads);
  const sums = summarise(r.runs, workloads, r.options.only);
  const md = renderMarkdown(sums, r.runs, workloads, r.options, r.startedAt, r.commit);
  // Three decimals are more than the sampling resolves; non-finite numbers become null.
  const round = (_k: string, v: unknown): unknown => (typeof v !== 'number' ? v : !Number.isFinite(v) ? null : Number.isInteger(v) ? v : Math.round(v * 1000) / 1000);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify({ ...r, syscallGroups: SYSCALL_GROUPS, summary: sums }, round, 2) + '\n');
  fs.writeFileSync(path.join(dir, `${name}.md`), md);
  return md;
}

async function main(): Promise<number> {
  const repoRoot = path.resolve(__dirname, '..', '..');
  const o = parseOptions(process.argv.slice(2), repoRoot);
  if (o === null) return 0;
  if (o.render !== null) {
    const r = JSON.parse(fs.readFileSync(o.render, 'utf8')) as Results;
    const md = writeResults(r, path.dirname(o.render), path.basename(o.render, '.json'));
    process.stdout.write(md);
    return 0;
  }
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces, cgroups, perf on every process of a CPU)');
  const workloads = selectWorkloads(o.workloads);
  const startedAt = new Date().toISOString();
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicegate-profile-'));
  process.on('exit', () => fs.rmSync(tmpDir, { recursive: true, force: true }));
  if (o.keepScript !== null) fs.mkdirSync(o.keepScript, { recursive: true });
  // This runner (and perf script, which it spawns) stays off the proxy CPU: whatever runs there is
  // in the samples. The proxies are pinned explicitly, so they are not affected.
  const proxyCpus = '1';
  const loadCpus = '0';
  const pin = spawnSync('taskset', ['-a', '-p', '-c', loadCpus, String(process.pid)], { encoding: 'utf8' });
  if (pin.status !== 0) log(`could not pin the runner to CPU ${loadCpus}: ${pin.stderr.trim()}`);
  const lab = await Lab.create({ name: 'prof' });
  const env: BenchEnv = { lab, tmpDir, repoRoot, proxyCpus, loadCpus, threads: 1, nofile: 20000, serverAddr: ADDR.server4, sgTuning: o.sgTuning, nice: -10 };
  const d: Durations = { iperf: o.seconds, wrk: o.seconds, sweep: o.seconds, idleConns: 0, pacedGbit: 1 };
  const contenders: Contender[] = o.only.map(makeContender);
  const servers = new Servers(env);
  let quota: CpuCgroups | null = null;
  const runs: Run[] = [];
  try {
    for (const w of await startLab(env, servers, contenders)) log(w);
    for (const c of contenders) await selectAndWarm(env, c);
    quota = CpuCgroups.create(o.quota);
    log(`each proxy in its own cpu cgroup: ${o.quota} core (${quota.base})`);
    for (let rep = 0; rep < o.reps; rep++) {
      for (const [wi, w] of workloads.entries()) {
        // Rotate the order so that no contender always runs first (or right after the same one).
        const order = contenders.map((_, i) => contenders[(i + rep + wi) % contenders.length] as Contender);
        for (const c of order) {
          const pid = c.pid();
          if (pid === null) throw new Error(`${c.id} is not running:\n${c.diagnostics()}`);
          await setRedirect(env, c);
          quota.attach(c.id, pid);
          if (!quota.holds(c.id, pid)) throw new Error(`${c.id} (pid ${pid}) is not entirely in its cpu cgroup`);
          const who = identity(pid);
          const file = path.join(tmpDir, `perf-${c.id}-${w.id}-${rep}.data`);
          const q0 = quota.stat(c.id);
          const cpu0 = processUserSystem(pid);
          const steal0 = stealSeconds(env.proxyCpus);
          const out = await new PerfRecording(env.proxyCpus, env.loadCpus, file, o.freq).around(() => w.run(env, c, d));
          const steal1 = stealSeconds(env.proxyCpus);
          const cpu1 = processUserSystem(pid);
          const throttle = cpuStatDelta(q0, quota.stat(c.id));
          const text = await perfScript(file);
          fs.rmSync(file, { force: true });
          if (o.keepScript !== null) fs.writeFileSync(path.join(o.keepScript, `${c.id}-${w.id}-${rep}.txt`), text);
          const a = attribute(parsePerfScript(text), who);
          const requests = out.metrics['requests'] ?? 0;
          const procCpuS = cpu0 !== null && cpu1 !== null ? cpu1.user + cpu1.system - cpu0.user - cpu0.system : null;
          const procUserS = cpu0 !== null && cpu1 !== null ? cpu1.user - cpu0.user : null;
          const stealS = steal0 !== null && steal1 !== null ? steal1 - steal0 : null;
          const run: Run = {
            rep,
            workload: w.id,
            contender: c.id,
            requests,
            rps: out.metrics['rps'] ?? 0,
            rate: out.metrics[w.metric] ?? 0,
            errors: out.errors,
            procCpuS,
            procUserS,
            stealS,
            pids: [...who.pids],
            throttle,
            attribution: a,
            usPerReq: buckets(a, requests, procCpuS, procUserS, stealS),
          };
          if (throttle.nrThrottled <= 0) run.invalid = `not throttled (nr_throttled +0 over ${throttle.nrPeriods} periods): the proxy was not the bottleneck`;
          else if (out.errors > 0) run.invalid = `wrk errors: ${out.detail ?? out.errors}`;
          else if (!c.running()) run.invalid = `the proxy exited:\n${c.diagnostics()}`;
          else if (requests <= 0 || a.proxyNs <= 0) run.invalid = 'no requests or no proxy samples';
          runs.push(run);
          const u = run.usPerReq;
          log(
            `${w.id} ${c.id} rep ${rep + 1}: ${w.unit === 'Gbit/s' ? run.rate.toFixed(2) : Math.round(run.rate)} ${w.unit}, proxy ${f1(u['proxy'])} µs/req (/proc ${f1(u['proc'])}), user ${f1(u['user'])}, own ${f1(u['user.own'])}, ` +
              `${a.samples} samples, throttled ${throttle.nrThrottled}/${throttle.nrPeriods}${run.invalid ? `, NOT COUNTED: ${run.invalid.split('\n')[0]}` : ''}`,
          );
          await sleep(200);
        }
      }
    }
  } finally {
    quota?.destroy();
    for (const c of contenders) await c.stop().catch(() => undefined);
    await lab.destroy();
  }
  const commit = spawnSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const perf = spawnSync('perf', ['--version'], { encoding: 'utf8' }).stdout.trim();
  const md = writeResults({ startedAt, commit, kernel: os.release(), perf, options: o, runs }, o.out, o.name);
  process.stdout.write(md);
  return 0;
}

function f1(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(1);
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    log(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
