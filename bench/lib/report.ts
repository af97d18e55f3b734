// Turns the raw runs into medians / ranges, evaluates the targets, and renders the markdown
// table and the SVG chart. Every number comes from the runs of this invocation.

import type { ContenderId } from './contenders';
import { HAPROXY_SPLICE_VARIANTS, HAPROXY_VARIANTS, PROTO_CONTENDERS } from './contenders';
import { type Spread, spread } from './stats';

export interface RunRecord {
  rep: number;
  position: number;
  workload: string;
  contender: ContenderId;
  ok: boolean;
  error?: string;
  detail?: string;
  metrics: Record<string, number>;
  bytes: number;
  errors: number;
  cpu: {
    wallS: number;
    proxyS: number | null;
    /** Machine-wide busy CPU-s, less the foreign processes' CPU-s (machineRawS: without that correction). */
    machineS: number;
    machineRawS: number;
    perCpuUtil: number[];
    foreignS: number;
    /** CPU-s the hypervisor gave to other guests meanwhile. */
    stealS: number;
  } | null;
  /** Foreign CPU-s of earlier attempts that were discarded as noisy. */
  noisyAttemptsForeignS?: number[];
  /** Per-core runs: the proxy's cpu cgroup counters over the run (cpu.stat deltas) and its quota. */
  throttle?: { nrPeriods: number; nrThrottled: number; throttledUs: number; quotaCores: number; periodUs: number };
  /** Why a run that completed does not count (per-core: the proxy was never throttled). */
  invalid?: string;
}

export interface Verification {
  contender: ContenderId;
  ok: boolean;
  relayedByProxy: boolean;
  honoursOriginalDst: boolean;
  checks: Array<{ requested: string; status: number; served: string; peer: string; reachedOriginalDst: boolean; viaProxy: boolean; error: string | null }>;
  summary: string;
}

export interface WorkloadInfo {
  id: string;
  title: string;
  group: string;
  metric: string;
  unit: string;
  higherIsBetter: boolean;
}

export interface BenchResults {
  schema: 1;
  startedAt: string;
  wallSeconds: number;
  machine: Record<string, string | number | boolean>;
  settings: {
    quick: boolean;
    reps: number;
    durations: { iperf: number; wrk: number; sweep: number; idleConns: number; pacedGbit: number };
    sweep: number[];
    threads: number;
    nice: number;
    proxyCpus: string;
    loadCpus: string;
    pinning: Record<string, string>;
    sgTuning: Record<string, string | number | boolean>;
    serverAddr: string;
    noiseShare: number;
    retries: number;
    /** The per-core phase, when run (absent in older results files). */
    perCore?: { quotaCores: number; periodUs: number; workloads: string[] } | null;
  };
  contenders: Array<{ id: ContenderId; label: string; notes: string; config: string }>;
  servers: { nginx: string };
  workloads: WorkloadInfo[];
  verifications: Verification[];
  runs: RunRecord[];
  proxyStats: Record<string, Record<string, number>>;
  warnings: string[];
}

/** summary[workload][contender][metric] */
export type Summary = Record<string, Record<string, Record<string, Spread>>>;

export interface Target {
  id: string;
  title: string;
  workload: string;
  metric: string;
  unit: string;
  /** '>=': splicegate / reference must be at least `threshold`; '<=': at most. */
  comparator: '>=' | '<=';
  threshold: number;
  splicegate: number | null;
  reference: number | null;
  referenceContender: string | null;
  ratio: number | null;
  pass: boolean | null;
  /** Relative distance to the bar, positive = inside it (e.g. 0.125 = 12.5 % better than needed). */
  margin: number | null;
  /** direct / reference: what no proxy at all would score, i.e. the lab's ceiling for this ratio. */
  directRatio: number | null;
  note: string;
}

export interface Report {
  summary: Summary;
  targets: Target[];
  markdown: string;
  svg: string;
}

const BEYOND = 'machine_cpu_beyond_direct_s_per_gib';
const LAB_BEYOND = 'lab_process_cpu_beyond_direct_s_per_gib';

// ------------------------------------------------------------------ summary

/** A run in which other processes + hypervisor steal took more than this share is "noisy". */
export const NOISY_SHARE = 0.25;

export function noiseShare(run: RunRecord, cpus: number): number {
  if (!run.cpu || run.cpu.wallS <= 0) return 0;
  return (run.cpu.foreignS + (run.cpu.stealS ?? 0)) / (run.cpu.wallS * Math.max(1, cpus));
}

/**
 * The runs the medians use: the successful ones, minus the noisy ones wherever at least two
 * quieter repetitions of the same workload and contender remain (a rule fixed in advance and
 * applied to every contender alike).
 */
export function keptRuns(r: BenchResults): RunRecord[] {
  const cpus = Number(r.machine['cpus']) || 1;
  const groups = new Map<string, RunRecord[]>();
  for (const run of r.runs) {
    if (!run.ok) continue;
    const k = `${run.workload}/${run.contender}`;
    const g = groups.get(k) ?? [];
    g.push(run);
    groups.set(k, g);
  }
  const out: RunRecord[] = [];
  for (const g of groups.values()) {
    const quiet = g.filter((x) => noiseShare(x, cpus) <= NOISY_SHARE);
    out.push(...(quiet.length >= 2 ? quiet : g));
  }
  return out;
}

export function summarize(r: BenchResults): Summary {
  const values: Record<string, Record<string, Record<string, number[]>>> = {};
  const push = (w: string, c: string, m: string, v: number): void => {
    const byC = (values[w] ??= {});
    const byM = (byC[c] ??= {});
    (byM[m] ??= []).push(v);
  };
  const kept = keptRuns(r);
  for (const run of kept) {
    for (const [m, v] of Object.entries(run.metrics)) push(run.workload, run.contender, m, v);
    if (run.cpu) {
      if (run.cpu.proxyS !== null) push(run.workload, run.contender, 'proxy_cpu_s', run.cpu.proxyS);
      push(run.workload, run.contender, 'machine_cpu_s', run.cpu.machineS);
      push(run.workload, run.contender, 'foreign_cpu_s', run.cpu.foreignS);
      run.cpu.perCpuUtil.forEach((u, i) => push(run.workload, run.contender, `cpu${i}_busy`, u));
    }
  }
  // CPU per GiB beyond direct: the contender's machine-wide CPU-s/GiB minus direct's, same repetition.
  for (const run of kept) {
    if (run.contender === 'direct') continue;
    const directRun = r.runs.find((x) => x.ok && x.contender === 'direct' && x.workload === run.workload && x.rep === run.rep);
    for (const [from, to] of [
      ['machine_cpu_s_per_gib', BEYOND],
      ['lab_process_cpu_s_per_gib', LAB_BEYOND],
    ] as const) {
      const mine = run.metrics[from];
      const direct = directRun?.metrics[from];
      if (mine !== undefined && direct !== undefined) push(run.workload, run.contender, to, mine - direct);
    }
  }
  const out: Summary = {};
  for (const [w, byC] of Object.entries(values)) {
    const ow: Record<string, Record<string, Spread>> = (out[w] = {});
    for (const [c, byM] of Object.entries(byC)) {
      const oc: Record<string, Spread> = (ow[c] = {});
      for (const [m, vs] of Object.entries(byM)) {
        const s = spread(vs);
        if (s) oc[m] = s;
      }
    }
  }
  return out;
}

function med(s: Summary, w: string, c: string, m: string): number | null {
  const v = s[w]?.[c]?.[m]?.median;
  return v === undefined || !Number.isFinite(v) ? null : v;
}

/** The best of `ids` by median (highest, or lowest when !higherIsBetter). */
function best(s: Summary, w: string, m: string, ids: readonly string[], higherIsBetter: boolean): { id: string; value: number } | null {
  let out: { id: string; value: number } | null = null;
  for (const id of ids) {
    const v = med(s, w, id, m);
    if (v === null) continue;
    if (out === null || (higherIsBetter ? v > out.value : v < out.value)) out = { id, value: v };
  }
  return out;
}

// ------------------------------------------------------------------ targets

export function evaluateTargets(r: BenchResults, s: Summary): Target[] {
  const targets: Target[] = [];
  const add = (
    id: string,
    title: string,
    workload: string,
    metric: string,
    unit: string,
    higherIsBetter: boolean,
    refIds: readonly string[],
    refName: string,
    comparator: '>=' | '<=',
    threshold: number,
  ): void => {
    const sg = med(s, workload, 'splicegate', metric);
    const ref = best(s, workload, metric, refIds, higherIsBetter);
    let ratio: number | null = null;
    let pass: boolean | null = null;
    let margin: number | null = null;
    let note = '';
    const negative = (id: string): boolean => (s[workload]?.[id]?.[metric]?.min ?? 0) < 0;
    if (metric === BEYOND && (negative('splicegate') || (ref !== null && negative(ref.id)))) {
      note = 'machine-wide CPU too noisy: in some repetition a proxy measured below direct';
    } else if (sg === null) note = 'no splicegate result';
    else if (ref === null) note = `no ${refName} result`;
    else if (ref.value <= 0) note = `${refName} value ${ref.value.toPrecision(3)} is not positive: ratio undefined`;
    if (note !== '' && sg !== null && ref !== null && ref.value > 0) ratio = sg / ref.value;
    if (note === '' && sg !== null && ref !== null && ref.value > 0) {
      ratio = sg / ref.value;
      pass = comparator === '>=' ? ratio >= threshold : ratio <= threshold;
      margin = comparator === '>=' ? ratio / threshold - 1 : 1 - ratio / threshold;
    }
    const direct = metric === BEYOND || metric === LAB_BEYOND || workload === 'idle' ? null : med(s, workload, 'direct', metric);
    targets.push({
      directRatio: direct !== null && ref !== null && ref.value > 0 ? direct / ref.value : null,
      id,
      title,
      workload,
      metric,
      unit,
      comparator,
      threshold,
      splicegate: sg,
      reference: ref?.value ?? null,
      referenceContender: ref?.id ?? null,
      ratio,
      pass,
      margin,
      note: note || `reference: ${refName} = ${ref?.id ?? '?'}`,
    });
  };
  const has = (w: string): boolean => r.workloads.some((x) => x.id === w);
  // The targets of issue 12 ("Performance per core"): the per-core ratios first, then the
  // unconstrained floor (never below the best HAProxy variant), latency and memory.
  const spliceName = 'HAProxy-splice (better splice variant)';
  const bestName = 'best HAProxy variant';
  const quota = r.settings.perCore?.quotaCores;
  for (const w of r.workloads.filter((x) => x.group === 'percore')) {
    const what = w.unit === 'Gbit/s' ? 'bulk Gbit/s' : w.unit === 'conn/s' ? 'new conn/s' : 'keep-alive req/s';
    add(w.id, `per core (each proxy held to ${quota ?? '?'} core): ${what} (${w.id.replace(/^core-/, '')}) >= 1.5x best HAProxy`, w.id, w.metric, w.unit, true, HAPROXY_VARIANTS, bestName, '>=', 1.5);
  }
  for (const [id, what] of [
    ['iperf-1', 'iperf3 1 stream Gbit/s'],
    ['iperf-4', 'iperf3 4 streams Gbit/s'],
    ['wrk-1m', '1 MiB downloads Gbit/s'],
    ['wrk-ka', 'keep-alive req/s'],
    ['wrk-close', 'new conn/s'],
  ] as const) {
    const w = r.workloads.find((x) => x.id === id);
    if (w) add(id, `unconstrained: ${what} >= best HAProxy`, id, w.metric, w.unit, true, HAPROXY_VARIANTS, bestName, '>=', 1.0);
  }
  for (const w of r.workloads.filter((x) => x.id.startsWith('sweep-c'))) {
    const c = w.id.slice('sweep-c'.length);
    add(w.id, `unconstrained: p99 at ${c} conn(s) <= best HAProxy`, w.id, 'p99_us', 'us', false, HAPROXY_VARIANTS, bestName, '<=', 1.0);
  }
  if (has('idle')) add('idle', 'memory per idle relayed connection <= 0.1x HAProxy', 'idle', 'bytes_per_conn', 'B/conn', false, HAPROXY_VARIANTS, 'HAProxy (lowest variant)', '<=', 0.1);
  if (has('iperf-paced')) {
    add('cpu', 'CPU-seconds/GiB beyond direct (machine-wide) <= 0.8x HAProxy-splice', 'iperf-paced', BEYOND, 'CPU-s/GiB', false, HAPROXY_SPLICE_VARIANTS, spliceName, '<=', 0.8);
    add(
      'cpu-process',
      '(same, process-attributed: lab processes only, no softirq) <= 0.8x HAProxy-splice',
      'iperf-paced',
      LAB_BEYOND,
      'CPU-s/GiB',
      false,
      HAPROXY_SPLICE_VARIANTS,
      spliceName,
      '<=',
      0.8,
    );
  }
  return targets;
}

// ------------------------------------------------------------------ formatting

function fmtNum(v: number, unit: string): string {
  if (!Number.isFinite(v)) return '-';
  switch (unit) {
    case 'Gbit/s':
      return v.toFixed(2);
    case 'req/s':
    case 'conn/s':
      return Math.round(v).toLocaleString('en-US');
    case 'ms':
      return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
    case 'us':
      return fmtNum(v / 1000, 'ms');
    case 'B/conn':
      return Math.round(v).toLocaleString('en-US');
    case 'CPU-s/GiB':
      return v.toFixed(3);
    case 'us/req':
      return v.toFixed(1);
    case 'cores':
      return v.toFixed(2);
    case '%':
      return `${Math.round(v * 100)}`;
    default:
      return v.toPrecision(3);
  }
}

function displayUnit(unit: string): string {
  return unit === 'us' ? 'ms' : unit;
}

function cell(sp: Spread | undefined, unit: string): string {
  if (!sp) return '–';
  const m = fmtNum(sp.median, unit);
  if (sp.n === 1) return m;
  return `${m} <sub>${fmtNum(sp.min, unit)}–${fmtNum(sp.max, unit)}</sub>`;
}

function ratioText(a: number | null, b: number | null): string {
  if (a === null || b === null || b === 0) return '–';
  return `${(a / b).toFixed(2)}x`;
}

interface Row {
  label: string;
  workload: string;
  metric: string;
  unit: string;
  higherIsBetter: boolean;
}

function mainRows(r: BenchResults): Row[] {
  const rows: Row[] = [];
  const has = (w: string): boolean => r.workloads.some((x) => x.id === w);
  if (has('iperf-1')) rows.push({ label: 'iperf3 1 stream (Gbit/s)', workload: 'iperf-1', metric: 'gbps', unit: 'Gbit/s', higherIsBetter: true });
  if (has('iperf-4')) rows.push({ label: 'iperf3 4 streams (Gbit/s)', workload: 'iperf-4', metric: 'gbps', unit: 'Gbit/s', higherIsBetter: true });
  if (has('wrk-1m')) rows.push({ label: '1 MiB downloads, 8 conns (Gbit/s)', workload: 'wrk-1m', metric: 'gbps', unit: 'Gbit/s', higherIsBetter: true });
  if (has('wrk-ka')) rows.push({ label: 'keep-alive 1 KiB, 32 conns (req/s)', workload: 'wrk-ka', metric: 'rps', unit: 'req/s', higherIsBetter: true });
  if (has('wrk-close')) rows.push({ label: 'new conn per request, 32 conns (conn/s)', workload: 'wrk-close', metric: 'rps', unit: 'conn/s', higherIsBetter: true });
  if (has('http-ka')) {
    rows.push({ label: 'HTTP listener, header routing, 16 conns (req/s)', workload: 'http-ka', metric: 'rps', unit: 'req/s', higherIsBetter: true });
    rows.push({ label: 'HTTP listener, header routing: p99 (ms)', workload: 'http-ka', metric: 'p99_us', unit: 'us', higherIsBetter: false });
  }
  if (has('http-1m')) rows.push({ label: 'HTTP listener, 1 MiB downloads, 8 conns (Gbit/s)', workload: 'http-1m', metric: 'gbps', unit: 'Gbit/s', higherIsBetter: true });
  if (has('http-24k')) rows.push({ label: 'HTTP listener, 24 KiB keep-alive, 16 conns (req/s)', workload: 'http-24k', metric: 'rps', unit: 'req/s', higherIsBetter: true });
  for (const w of r.workloads.filter((x) => x.id.startsWith('sweep-c'))) {
    const c = w.id.slice('sweep-c'.length);
    rows.push({ label: `sweep ${c} conn(s): p50 (ms)`, workload: w.id, metric: 'p50_us', unit: 'us', higherIsBetter: false });
    rows.push({ label: `sweep ${c} conn(s): p99 (ms)`, workload: w.id, metric: 'p99_us', unit: 'us', higherIsBetter: false });
    rows.push({ label: `sweep ${c} conn(s): req/s`, workload: w.id, metric: 'rps', unit: 'req/s', higherIsBetter: true });
  }
  if (has('idle')) rows.push({ label: 'memory per idle relayed conn (B RSS)', workload: 'idle', metric: 'bytes_per_conn', unit: 'B/conn', higherIsBetter: false });
  if (has('iperf-paced')) {
    rows.push({ label: 'paced 1 stream: proxy CPU-s/GiB', workload: 'iperf-paced', metric: 'proxy_cpu_s_per_gib', unit: 'CPU-s/GiB', higherIsBetter: false });
    rows.push({ label: 'paced 1 stream: machine CPU-s/GiB', workload: 'iperf-paced', metric: 'machine_cpu_s_per_gib', unit: 'CPU-s/GiB', higherIsBetter: false });
    rows.push({ label: 'paced 1 stream: machine CPU-s/GiB beyond direct', workload: 'iperf-paced', metric: BEYOND, unit: 'CPU-s/GiB', higherIsBetter: false });
    rows.push({ label: 'paced 1 stream: lab processes CPU-s/GiB beyond direct (no softirq)', workload: 'iperf-paced', metric: LAB_BEYOND, unit: 'CPU-s/GiB', higherIsBetter: false });
  }
  for (const w of ['wrk-ka', 'wrk-close', 'http-ka', 'http-24k'].filter(has)) {
    rows.push({ label: `${w}: proxy CPU µs per request`, workload: w, metric: 'proxy_cpu_us_per_req', unit: 'us/req', higherIsBetter: false });
  }
  for (const w of ['iperf-1', 'iperf-4', 'wrk-1m', 'http-1m'].filter(has)) {
    rows.push({ label: `${w}: proxy CPU-s/GiB (saturated)`, workload: w, metric: 'proxy_cpu_s_per_gib', unit: 'CPU-s/GiB', higherIsBetter: false });
  }
  return rows;
}

/** Runs of `workload` by `contender` that completed, and how many of those the quota throttled. */
function throttleCount(r: BenchResults, workload: string, contender: string): { throttled: number; completed: number } {
  const mine = r.runs.filter((x) => x.workload === workload && x.contender === contender && x.throttle !== undefined);
  return { throttled: mine.filter((x) => (x.throttle?.nrThrottled ?? 0) > 0).length, completed: mine.length };
}

/** The per-core table: each proxy held to the same CPU quota; empty when the phase did not run. */
export function perCoreSection(r: BenchResults, s: Summary): string[] {
  const pc = r.settings.perCore;
  const ws = r.workloads.filter((x) => x.group === 'percore');
  if (!pc || ws.length === 0) return [];
  const ids = r.contenders.map((c) => c.id).filter((id) => ws.some((w) => s[w.id]?.[id] !== undefined || r.runs.some((x) => x.workload === w.id && x.contender === id)));
  const L: string[] = [];
  L.push(`## Per core: each proxy held to ${pc.quotaCores} core`);
  L.push('');
  L.push(
    `Every proxy contender runs in its own cgroup v1 \`cpu\` group with cfs_quota_us ${Math.round(pc.quotaCores * pc.periodUs)} per cfs_period_us ${pc.periodUs} ` +
      `(${pc.quotaCores} of a core), the load generators and servers outside it; the same workloads as the unconstrained rows below. ` +
      `A run counts only if the proxy was throttled during it (cpu.stat nr_throttled grew): otherwise the load side, not the proxy's core, limited it, and the run is marked invalid and left out of the medians.`,
  );
  L.push('');
  // The prototype relays, when run, get their own ratio to the same HAProxy reference (they are
  // never the reference themselves).
  const protos = ids.filter((id) => PROTO_CONTENDERS.includes(id));
  L.push(`| workload (per core) | ${ids.join(' | ')} | splicegate / best HAProxy |${protos.map((p) => ` ${p} / best HAProxy |`).join('')}`);
  L.push(`|---|${ids.map(() => '---').join('|')}|---|${protos.map(() => '---|').join('')}`);
  for (const w of ws) {
    const base = w.title.replace(/ \(per core\)$/, '');
    const rows: Array<{ label: string; metric: string; unit: string; higherIsBetter: boolean; ratio: boolean }> = [
      { label: `${base} (${w.unit})`, metric: w.metric, unit: w.unit, higherIsBetter: w.higherIsBetter, ratio: true },
    ];
    if (w.unit === 'req/s' || w.unit === 'conn/s') rows.push({ label: '  proxy CPU µs per request', metric: 'proxy_cpu_us_per_req', unit: 'us/req', higherIsBetter: false, ratio: true });
    rows.push({ label: '  proxy cores used', metric: 'proxy_cores', unit: 'cores', higherIsBetter: false, ratio: false });
    for (const row of rows) {
      const cells = ids.map((id) => cell(s[w.id]?.[id]?.[row.metric], row.unit));
      const sg = med(s, w.id, 'splicegate', row.metric);
      const hb = best(s, w.id, row.metric, HAPROXY_VARIANTS, row.higherIsBetter);
      const protoRatios = protos.map((p) => ` ${row.ratio ? ratioText(med(s, w.id, p, row.metric), hb?.value ?? null) : '–'} |`).join('');
      L.push(`| ${row.label} | ${cells.join(' | ')} | ${row.ratio ? `${ratioText(sg, hb?.value ?? null)}${hb ? ` (${hb.id})` : ''}` : '–'} |${protoRatios}`);
    }
    const counts = ids.map((id) => {
      const t = throttleCount(r, w.id, id);
      return `${t.throttled} of ${t.completed}`;
    });
    L.push(`|   runs throttled (valid) | ${counts.join(' | ')} | – |${protos.map(() => ' – |').join('')}`);
  }
  L.push('');
  return L;
}

function verdict(t: Target): string {
  if (t.pass === null) return `n/a (${t.note})`;
  const pct = ((t.margin ?? 0) * 100).toFixed(1);
  return t.pass ? `**PASS** (margin +${pct}%)` : `**MISS** (short by ${(-(t.margin ?? 0) * 100).toFixed(1)}%)`;
}

export function renderMarkdown(r: BenchResults, s: Summary, targets: Target[]): string {
  const ids = r.contenders.map((c) => c.id);
  const L: string[] = [];
  const st = r.settings;
  L.push(`# splicegate benchmark — ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC${st.quick ? ' (QUICK run: not for conclusions)' : ''}`);
  L.push('');
  L.push(
    `Commit ${r.machine['commit']}${r.machine['dirty'] ? ' (src/ or cpp/ had uncommitted changes)' : ''}; kernel ${r.machine['kernel']}; ${r.machine['cpus']} x ${r.machine['cpuModel']}; ${r.machine['node']}; ${r.machine['haproxy']}; ${r.machine['wrk']}; ${r.machine['iperf3']}.`,
  );
  L.push('');
  L.push(
    `${st.reps} repetition(s), contenders interleaved within each repetition (order rotated per workload and repetition); each cell is the median with the min–max range in small type. ` +
      `iperf3/wrk runs: ${st.durations.iperf} s; sweep points: ${st.durations.sweep} s; ${st.durations.idleConns.toLocaleString('en-US')} idle connections; paced run ${st.durations.pacedGbit} Gbit/s. ` +
      `Pinning, identical for every contender: the proxy on CPU ${st.proxyCpus} (splicegate workers = HAProxy nbthread = ${st.threads}; node-pipe is single-threaded) together with the gateway namespace's packet receive processing (RPS on its veths), so CPU ${st.proxyCpus} is "the gateway box"; ` +
      `wrk/iperf3 clients, nginx/iperf3/echo servers and the client and server namespaces' receive processing on CPU ${st.loadCpus}. Every lab process runs at nice ${st.nice}. Wall time ${r.wallSeconds} s.`,
  );
  L.push('');

  L.push(...perCoreSection(r, s));

  L.push('## Targets');
  L.push('');
  L.push('| target | splicegate | reference | ratio | bar | result | direct would score |');
  L.push('|---|---|---|---|---|---|---|');
  for (const t of targets) {
    const u = displayUnit(t.unit);
    const sg = t.splicegate === null ? '–' : `${fmtNum(t.splicegate, t.unit)} ${u}`;
    const ref = t.reference === null ? '–' : `${fmtNum(t.reference, t.unit)} ${u} (${t.referenceContender})`;
    const ceiling = t.directRatio === null ? '–' : `${t.directRatio.toFixed(2)}x`;
    L.push(`| ${t.title} | ${sg} | ${ref} | ${t.ratio === null ? '–' : `${t.ratio.toFixed(2)}x`} | ${t.comparator} ${t.threshold.toFixed(2)}x | ${verdict(t)} | ${ceiling} |`);
  }
  const passed = targets.filter((t) => t.pass === true).length;
  const missed = targets.filter((t) => t.pass === false).length;
  L.push('');
  L.push(
    `${passed} PASS, ${missed} MISS, ${targets.length - passed - missed} not evaluated. "HAProxy-splice" = the better of haproxy-splice-auto and haproxy-splice for that metric; "best HAProxy variant" = the best of all three HAProxy variants. ` +
      `"direct would score": the same ratio for kernel forwarding with no proxy at all — the lab's ceiling; where it is itself short of the bar, no proxy could meet the target in this lab.`,
  );
  L.push('');

  L.push(r.workloads.some((w) => w.group !== 'percore') ? '## Results (unconstrained)' : '## Noise filter');
  L.push('');
  const okRuns = r.runs.filter((x) => x.ok).length;
  const excluded = okRuns - keptRuns(r).length;
  L.push(
    `Medians leave out runs during which other processes + hypervisor steal took more than ${Math.round(NOISY_SHARE * 100)} % of the machine, wherever at least two quieter repetitions of the same workload and contender remain (${excluded} of ${okRuns} runs left out; the rule is the same for every contender, and latest.json keeps every run).`,
  );
  L.push('');
  const rows = mainRows(r);
  if (rows.length > 0) {
    L.push(`| workload | ${ids.join(' | ')} | splicegate / direct | splicegate / best HAProxy |`);
    L.push(`|---|${ids.map(() => '---').join('|')}|---|---|`);
  }
  for (const row of rows) {
    const cells = ids.map((id) => cell(s[row.workload]?.[id]?.[row.metric], row.unit));
    const sg = med(s, row.workload, 'splicegate', row.metric);
    const direct = med(s, row.workload, 'direct', row.metric);
    const hb = best(s, row.workload, row.metric, HAPROXY_VARIANTS, row.higherIsBetter);
    const vsDirect = row.metric === BEYOND || row.metric === LAB_BEYOND || row.workload === 'idle' ? '–' : ratioText(sg, direct);
    L.push(`| ${row.label} | ${cells.join(' | ')} | ${vsDirect} | ${ratioText(sg, hb?.value ?? null)}${hb ? ` (${hb.id})` : ''} |`);
  }
  L.push('');

  L.push('### Where the CPU went (median busy share of each CPU during the run)');
  L.push('');
  L.push(
    `CPU ${st.loadCpus} runs the load generators and servers, CPU ${st.proxyCpus} the gateway (proxy + its kernel networking; for direct, kernel forwarding). A contender whose CPU ${st.proxyCpus} is well below 100 % while CPU ${st.loadCpus} is at 100 % was limited by the load side, not by itself: its ratios then understate the difference, and the proxy CPU per request / per GiB rows are the better comparison.`,
  );
  L.push('');
  const firstW = s[r.workloads[0]?.id ?? ''] ?? {};
  const cpuKeys = Object.keys(firstW['direct'] ?? Object.values(firstW)[0] ?? {}).filter((k) => /^cpu\d+_busy$/.test(k));
  L.push(`| workload | ${ids.join(' | ')} |`);
  L.push(`|---|${ids.map(() => '---').join('|')}|`);
  for (const w of r.workloads.filter((x) => x.group !== 'memory')) {
    const cells = ids.map((id) => {
      const parts = cpuKeys.map((k) => s[w.id]?.[id]?.[k]?.median).filter((v): v is number => v !== undefined);
      return parts.length ? parts.map((v) => `${Math.round(v * 100)}`).join(' / ') : '–';
    });
    L.push(`| ${w.id} | ${cells.join(' | ')} |`);
  }
  L.push('');
  L.push(`Cells: busy % of ${cpuKeys.map((k) => k.replace('_busy', '').toUpperCase()).join(' / ')}.`);
  L.push('');

  L.push('## Verification (does each contender relay to the original destination?)');
  L.push('');
  for (const v of r.verifications) L.push(`- **${v.contender}**: ${v.ok ? 'as expected' : 'UNEXPECTED'} — ${v.summary}`);
  L.push('');
  const pipes = ids
    .map((id) => {
      const p = s['iperf-1']?.[id]?.['pipe_fds']?.median;
      return p === undefined ? null : `${id} ${p}`;
    })
    .filter((x): x is string => x !== null);
  if (pipes.length) L.push(`Open pipe fds after the 1-stream iperf3 run (pooled splice pipes + stdio): ${pipes.join(', ')}.`);
  L.push('');

  const foreign = r.runs.reduce((a, x) => a + (x.cpu?.foreignS ?? 0), 0);
  const steal = r.runs.reduce((a, x) => a + (x.cpu?.stealS ?? 0), 0);
  const measured = r.runs.reduce((a, x) => a + (x.cpu?.wallS ?? 0), 0);
  const capacity = Math.max(1, measured * (Number(r.machine['cpus']) || 1));
  const share = (foreign + steal) / capacity;
  L.push('## Run health');
  L.push('');
  L.push(
    `During ${measured.toFixed(0)} s of measurement, other processes on the machine (not in the lab) used ${foreign.toFixed(1)} CPU-s and the hypervisor stole ${steal.toFixed(1)} CPU-s: ` +
      `${(share * 100).toFixed(1)} % of the machine — ${share > 0.05 ? 'NOISY: compare with care, and prefer the per-GiB / per-request proxy CPU rows, which noise disturbs less' : 'quiet'}.`,
  );
  L.push('');
  L.push(`| noise (others' share of the machine during the kept runs) | ${ids.join(' | ')} |`);
  L.push(`|---|${ids.map(() => '---').join('|')}|`);
  const noiseCells = ids.map((id) => {
    const mine = r.runs.filter((x) => x.contender === id && x.cpu && x.cpu.wallS > 0);
    if (mine.length === 0) return '–';
    const cpus = Number(r.machine['cpus']) || 1;
    const shares = mine.map((x) => ((x.cpu?.foreignS ?? 0) + (x.cpu?.stealS ?? 0)) / ((x.cpu?.wallS ?? 1) * cpus)).sort((a, b) => a - b);
    const mid = shares[Math.floor(shares.length / 2)] ?? 0;
    return `${(mid * 100).toFixed(0)} % median, ${((shares[shares.length - 1] ?? 0) * 100).toFixed(0)} % max`;
  });
  L.push(`| all workloads | ${noiseCells.join(' | ')} |`);
  L.push('');
  const failed = r.runs.filter((x) => !x.ok);
  L.push(
    `${r.runs.length} runs, ${failed.length} failed or with errors${failed.length ? ':' : '.'} ${r.settings.retries} run(s) were measured again because other processes took more than ${Math.round(r.settings.noiseShare * 100)} % of the machine meanwhile (the less noisy attempt is kept).`,
  );
  for (const f of failed.slice(0, 30)) L.push(`- ${f.workload} / ${f.contender} / rep ${f.rep + 1}: ${(f.invalid ?? f.error ?? f.detail ?? 'errors').split('\n')[0]}`);
  if (r.warnings.length) {
    L.push('');
    L.push('Warnings:');
    for (const w of r.warnings.slice(0, 40)) L.push(`- ${w.split('\n')[0]}`);
  }
  L.push('');
  L.push('Reproduce: `npm run bench` (full, ~9 min) or `npm run bench -- --quick`; every run, raw, is in latest.json; `node dist/bench/render.js` re-renders this file and the chart from it.');
  L.push('');
  return L.join('\n');
}

// ------------------------------------------------------------------ SVG

const COLORS: Record<string, string> = {
  direct: '#9e9e9e',
  splicegate: '#1f77b4',
  haproxy: '#ff7f0e',
  'haproxy-splice-auto': '#f2b134',
  'haproxy-splice': '#d62728',
  'node-pipe': '#2ca02c',
  'proto-epoll': '#9467bd',
  'proto-uring': '#8c564b',
  'proto-hybrid': '#e377c2',
};

function esc(t: string): string {
  return t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

interface Bar {
  id: string;
  value: number;
  min: number;
  max: number;
}

interface Panel {
  title: string;
  categories: Array<{ label: string; bars: Bar[] }>;
  log: boolean;
  refLine?: number;
  axisLabel: string;
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function drawPanel(p: Panel, x: number, y: number, w: number, h: number, out: string[]): void {
  const padL = 58;
  const padB = 34;
  const padT = 26;
  const plotW = w - padL - 10;
  const plotH = h - padT - padB;
  out.push(`<text x="${x + padL}" y="${y + 16}" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
  const all = p.categories.flatMap((c) => c.bars.flatMap((b) => [b.value, b.max]));
  if (p.refLine !== undefined) all.push(p.refLine);
  const pos = all.filter((v) => v > 0 && Number.isFinite(v));
  if (pos.length === 0) {
    out.push(`<text x="${x + padL}" y="${y + padT + 20}" font-size="11">no data</text>`);
    return;
  }
  let lo = 0;
  let hi = niceMax(Math.max(...pos));
  if (p.log) {
    lo = 10 ** Math.floor(Math.log10(Math.min(...pos)));
    hi = 10 ** Math.ceil(Math.log10(Math.max(...pos)));
    if (hi <= lo) hi = lo * 10;
  }
  const Y = (v: number): number => {
    const f = p.log ? (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : (v - lo) / (hi - lo);
    return y + padT + plotH - Math.max(0, Math.min(1, f)) * plotH;
  };
  // axis + grid
  const ticks: number[] = [];
  if (p.log) for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
  else for (let i = 0; i <= 4; i++) ticks.push(lo + ((hi - lo) * i) / 4);
  for (const t of ticks) {
    const ty = Y(t);
    out.push(`<line x1="${x + padL}" y1="${ty.toFixed(1)}" x2="${x + padL + plotW}" y2="${ty.toFixed(1)}" stroke="#e3e3e3"/>`);
    const lbl = t >= 1000 ? `${+(t / 1000).toPrecision(3)}k` : `${+t.toPrecision(3)}`;
    out.push(`<text x="${x + padL - 4}" y="${(ty + 4).toFixed(1)}" font-size="10" text-anchor="end">${lbl}</text>`);
  }
  out.push(`<text x="${x + 12}" y="${y + padT + plotH / 2}" font-size="10" transform="rotate(-90 ${x + 12} ${y + padT + plotH / 2})" text-anchor="middle">${esc(p.axisLabel)}</text>`);
  out.push(`<line x1="${x + padL}" y1="${y + padT + plotH}" x2="${x + padL + plotW}" y2="${y + padT + plotH}" stroke="#444"/>`);
  const groupW = plotW / Math.max(1, p.categories.length);
  p.categories.forEach((cat, ci) => {
    const gx = x + padL + ci * groupW;
    const n = Math.max(1, cat.bars.length);
    const bw = Math.min(22, (groupW - 12) / n);
    const start = gx + (groupW - bw * n) / 2;
    cat.bars.forEach((b, bi) => {
      const bx = start + bi * bw;
      const top = Y(b.value);
      const base = y + padT + plotH;
      out.push(
        `<rect x="${bx.toFixed(1)}" y="${top.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${Math.max(0, base - top).toFixed(1)}" fill="${COLORS[b.id] ?? '#555'}"><title>${esc(`${b.id}: ${+b.value.toPrecision(4)} (min ${+b.min.toPrecision(4)}, max ${+b.max.toPrecision(4)})`)}</title></rect>`,
      );
      if (b.max > b.min) {
        const cx = bx + (bw - 2) / 2;
        out.push(`<line x1="${cx.toFixed(1)}" y1="${Y(b.min).toFixed(1)}" x2="${cx.toFixed(1)}" y2="${Y(b.max).toFixed(1)}" stroke="#222" stroke-width="1"/>`);
      }
    });
    out.push(`<text x="${(gx + groupW / 2).toFixed(1)}" y="${y + padT + plotH + 14}" font-size="10" text-anchor="middle">${esc(cat.label)}</text>`);
  });
  if (p.refLine !== undefined) {
    const ry = Y(p.refLine);
    out.push(`<line x1="${x + padL}" y1="${ry.toFixed(1)}" x2="${x + padL + plotW}" y2="${ry.toFixed(1)}" stroke="#555" stroke-dasharray="4 3"/>`);
  }
}

export function renderSvg(r: BenchResults, s: Summary): string {
  const ids = r.contenders.map((c) => c.id);
  const has = (w: string): boolean => r.workloads.some((x) => x.id === w);
  const bar = (w: string, id: string, m: string, scale = 1): Bar | null => {
    const sp = s[w]?.[id]?.[m];
    return sp ? { id, value: sp.median * scale, min: sp.min * scale, max: sp.max * scale } : null;
  };
  const rel: Panel = { title: 'Throughput / request rate relative to direct (dashed line = direct)', categories: [], log: false, refLine: 1, axisLabel: 'x direct' };
  for (const [w, m, label] of [
    ['iperf-1', 'gbps', 'iperf3 1 stream'],
    ['iperf-4', 'gbps', 'iperf3 4 streams'],
    ['wrk-1m', 'gbps', '1 MiB downloads'],
    ['wrk-ka', 'rps', 'keep-alive req/s'],
    ['wrk-close', 'rps', 'new conn/s'],
    ['http-ka', 'rps', 'HTTP header routing req/s'],
    ['http-1m', 'gbps', 'HTTP header routing 1 MiB'],
  ] as const) {
    if (!has(w)) continue;
    const d = med(s, w, 'direct', m);
    if (d === null || d <= 0) continue;
    rel.categories.push({ label, bars: ids.filter((id) => id !== 'direct').map((id) => bar(w, id, m, 1 / d)).filter((b): b is Bar => b !== null) });
  }
  const lat: Panel = { title: 'p99 latency by concurrency, keep-alive 1 KiB (ms, log scale)', categories: [], log: true, axisLabel: 'p99 ms' };
  for (const w of r.workloads.filter((x) => x.id.startsWith('sweep-c'))) {
    lat.categories.push({ label: `${w.id.slice('sweep-c'.length)} conns`, bars: ids.map((id) => bar(w.id, id, 'p99_us', 1 / 1000)).filter((b): b is Bar => b !== null) });
  }
  const mem: Panel = { title: 'Memory per idle relayed connection (bytes RSS)', categories: [], log: false, axisLabel: 'bytes' };
  if (has('idle')) mem.categories.push({ label: `${r.settings.durations.idleConns} idle conns`, bars: ids.map((id) => bar('idle', id, 'bytes_per_conn')).filter((b): b is Bar => b !== null) });
  const cpu: Panel = { title: 'CPU-s per GiB beyond direct (paced 1 stream)', categories: [], log: false, axisLabel: 'CPU-s/GiB' };
  if (has('iperf-paced')) {
    cpu.categories.push({ label: 'machine-wide', bars: ids.map((id) => bar('iperf-paced', id, BEYOND)).filter((b): b is Bar => b !== null) });
    cpu.categories.push({ label: 'proxy process', bars: ids.map((id) => bar('iperf-paced', id, 'proxy_cpu_s_per_gib')).filter((b): b is Bar => b !== null) });
  }
  const W = 900;
  const out: string[] = [];
  const H = 40 + 260 + 240 + 240 + 20;
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(
    `<text x="12" y="20" font-size="15" font-weight="bold">${esc(`splicegate benchmark ${r.startedAt.slice(0, 10)}${r.settings.quick ? ' (quick)' : ''}: median of ${r.settings.reps}, whiskers min–max`)}</text>`,
  );
  let lx = 12;
  for (const id of ids) {
    out.push(`<rect x="${lx}" y="28" width="10" height="10" fill="${COLORS[id] ?? '#555'}"/>`);
    out.push(`<text x="${lx + 14}" y="37" font-size="11">${esc(id)}</text>`);
    lx += 24 + id.length * 6.5;
  }
  drawPanel(rel, 0, 40, W, 260, out);
  drawPanel(lat, 0, 300, W, 240, out);
  drawPanel(mem, 0, 540, W / 2, 240, out);
  drawPanel(cpu, W / 2, 540, W / 2, 240, out);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export function buildReport(r: BenchResults): Report {
  const summary = summarize(r);
  const targets = evaluateTargets(r, summary);
  return { summary, targets, markdown: renderMarkdown(r, summary, targets), svg: renderSvg(r, summary) };
}
