// The workloads. Each run drives the client namespace (pinned to the load CPUs) against the lab
// server's address, so whatever the gateway does with that traffic (forward, or REDIRECT to one
// proxy) is what gets measured. Every run is bounded in time.

import * as path from 'node:path';
import { sleep } from '../../test/lab/util';
import { type BenchEnv, type Contender, pinned, SERVER_PORTS } from './contenders';
import { parseIperf, parseWrk, wrkErrorCount } from './parse';
import { processRssBytes } from './proc';
import { MID_FILE_BYTES, SMALL_FILE_BYTES } from './servers';

export type WorkloadGroup = 'bulk' | 'requests' | 'latency' | 'cpu' | 'memory' | 'percore';

export interface Durations {
  /** iperf3 -t and wrk -d, seconds. */
  iperf: number;
  wrk: number;
  sweep: number;
  /** Idle relayed connections opened for the memory measurement. */
  idleConns: number;
  /** Rate of the paced iperf3 run used for CPU per GiB, Gbit/s. */
  pacedGbit: number;
}

export interface Outcome {
  /** Named numbers; which ones depends on the workload (see Workload.metrics). */
  metrics: Record<string, number>;
  /** Payload bytes relayed, for CPU per GiB (0 when not meaningful). */
  bytes: number;
  /** Errors the load generator saw (non-zero marks the run). */
  errors: number;
  detail?: string;
}

export interface Workload {
  id: string;
  title: string;
  group: WorkloadGroup;
  /** The headline metric and its unit / direction. */
  metric: string;
  unit: string;
  higherIsBetter: boolean;
  /** Run in the first this-many repetitions only (a deterministic figure; saves the run's time). */
  maxReps?: number;
  applies(c: Contender): boolean;
  run(env: BenchEnv, c: Contender, d: Durations): Promise<Outcome>;
}

function target(env: BenchEnv, port: number): string {
  return `${env.serverAddr}:${port}`;
}

async function runWrk(env: BenchEnv, args: string[], seconds: number): Promise<ReturnType<typeof parseWrk>> {
  const lua = path.join(env.repoRoot, 'bench', 'lib', 'wrk-report.lua');
  const p = pinned(env, env.loadCpus, 'wrk', ['-t1', `-d${seconds}s`, '--timeout', '5s', '-s', lua, ...args]);
  const r = await env.lab.exec('cli', p.cmd, p.args, { timeoutMs: (seconds + 30) * 1000, nofile: env.nofile });
  if (r.code !== 0) throw new Error(`wrk ${args.join(' ')} exited ${r.code}/${r.signal}: ${r.stderr.trim()} ${r.stdout.slice(-500)}`);
  return parseWrk(r.stdout);
}

function wrkOutcome(w: ReturnType<typeof parseWrk>): Outcome {
  return {
    metrics: {
      rps: w.requestsPerSec,
      gbps: w.gbitPerSec,
      p50_us: w.latencyUs.p50,
      p90_us: w.latencyUs.p90,
      p99_us: w.latencyUs.p99,
      p999_us: w.latencyUs.p999,
      max_us: w.latencyUs.max,
      requests: w.requests,
    },
    bytes: w.bytes,
    errors: wrkErrorCount(w),
    detail: wrkErrorCount(w) > 0 ? `wrk errors ${JSON.stringify(w.errors)}` : undefined,
  };
}

async function runIperf(env: BenchEnv, streams: number, seconds: number, gbitPerStream: number | null): Promise<Outcome> {
  const argv = ['-c', env.serverAddr, '-p', String(SERVER_PORTS.iperf), '-t', String(seconds), '-P', String(streams), '-J', '-Z', '--connect-timeout', '3000'];
  if (gbitPerStream !== null) argv.push('-b', `${Math.round(gbitPerStream * 1000)}M`);
  const p = pinned(env, env.loadCpus, 'iperf3', argv);
  const r = await env.lab.exec('cli', p.cmd, p.args, { timeoutMs: (seconds + 30) * 1000, nofile: env.nofile });
  const res = parseIperf(r.stdout); // throws on iperf3's own error
  if (r.code !== 0) throw new Error(`iperf3 exited ${r.code}: ${r.stderr.trim()}`);
  return {
    metrics: { gbps: res.gbitPerSec, retransmits: res.retransmits ?? -1, endpoint_cpu_s: res.endpointCpuS },
    bytes: res.bytes,
    errors: 0,
  };
}

const anyContender = (): boolean => true;

/** Keep-alive requests through an HTTP listener that routes each one by its header (no REDIRECT). */
export const HTTP_CONNECTIONS = 16;

export function sweepWorkload(conns: number): Workload {
  return {
    id: `sweep-c${conns}`,
    title: `wrk keep-alive ${SMALL_FILE_BYTES} B, ${conns} conn${conns === 1 ? '' : 's'}: p99`,
    group: 'latency',
    metric: 'p99_us',
    unit: 'us',
    higherIsBetter: false,
    applies: anyContender,
    run: async (env, _c, d) => wrkOutcome(await runWrk(env, [`-c${conns}`, `http://${target(env, SERVER_PORTS.http)}/small`], d.sweep)),
  };
}

/** RSS growth of the proxy while `n` relayed connections sit idle (each verified by one echo). */
async function runIdle(env: BenchEnv, c: Contender, d: Durations): Promise<Outcome> {
  const pid = c.pid();
  if (pid === null) throw new Error('idle: no proxy process');
  await sleep(300);
  const before = processRssBytes(pid);
  const script = path.join(env.repoRoot, 'dist', 'bench', 'idle-conns.js');
  const n = d.idleConns;
  const p = pinned(env, env.loadCpus, process.execPath, [script, 'client', target(env, SERVER_PORTS.idle), String(n), '256', '30000']);
  const client = env.lab.start('cli', p.cmd, p.args, {
    nofile: env.nofile,
    stdin: 'pipe',
    label: `idle-client ${n}`,
  });
  try {
    const held = await client.waitForEvents((e) => e['event'] === 'held', 1, 120000, 'all idle connections held');
    const h = held[0] ?? {};
    const ok = typeof h['ok'] === 'number' ? h['ok'] : 0;
    const failed = typeof h['failed'] === 'number' ? h['failed'] : n;
    const openMs = typeof h['ms'] === 'number' ? h['ms'] : 0;
    await sleep(500);
    const after = processRssBytes(pid);
    if (before === null || after === null) throw new Error('idle: proxy process gone');
    client.write('release\n');
    await client.waitForEvents((e) => e['event'] === 'released', 1, 90000, 'idle connections released');
    await client.waitExit(10000);
    return {
      metrics: {
        bytes_per_conn: ok > 0 ? (after - before) / ok : 0,
        rss_before_mib: before / 1048576,
        rss_after_mib: after / 1048576,
        held: ok,
        failed,
        open_ms: openMs,
      },
      bytes: 0,
      errors: failed,
      detail: failed > 0 ? `idle: ${failed} of ${n} connections failed: ${JSON.stringify(h['errors'])}` : undefined,
    };
  } finally {
    if (client.running) await client.stop('SIGKILL', 2000);
  }
}

export function allWorkloads(sweep: readonly number[]): Workload[] {
  const http = (env: BenchEnv, p: string): string => `http://${target(env, SERVER_PORTS.http)}${p}`;
  return [
    {
      id: 'iperf-1',
      title: 'iperf3, 1 stream (client -> server)',
      group: 'bulk',
      metric: 'gbps',
      unit: 'Gbit/s',
      higherIsBetter: true,
      applies: anyContender,
      run: (env, _c, d) => runIperf(env, 1, d.iperf, null),
    },
    {
      id: 'iperf-4',
      title: 'iperf3, 4 streams (client -> server)',
      group: 'bulk',
      metric: 'gbps',
      unit: 'Gbit/s',
      higherIsBetter: true,
      applies: anyContender,
      run: (env, _c, d) => runIperf(env, 4, d.iperf, null),
    },
    {
      id: 'wrk-1m',
      title: 'wrk 1 MiB downloads, 8 conns keep-alive (server -> client)',
      group: 'bulk',
      metric: 'gbps',
      unit: 'Gbit/s',
      higherIsBetter: true,
      applies: anyContender,
      run: async (env, _c, d) => wrkOutcome(await runWrk(env, ['-c8', http(env, '/1m')], d.wrk)),
    },
    {
      id: 'iperf-paced',
      title: 'iperf3, 1 stream paced (same offered load for all): CPU per GiB',
      group: 'cpu',
      metric: 'gbps',
      unit: 'Gbit/s',
      higherIsBetter: true,
      applies: anyContender,
      run: (env, _c, d) => runIperf(env, 1, d.iperf, d.pacedGbit),
    },
    {
      id: 'wrk-ka',
      title: `wrk keep-alive ${SMALL_FILE_BYTES} B file, 32 conns`,
      group: 'requests',
      metric: 'rps',
      unit: 'req/s',
      higherIsBetter: true,
      applies: anyContender,
      run: async (env, _c, d) => wrkOutcome(await runWrk(env, ['-c32', http(env, '/small')], d.wrk)),
    },
    {
      id: 'wrk-close',
      title: `wrk new connection per request (Connection: close), ${SMALL_FILE_BYTES} B, 32 conns`,
      group: 'requests',
      metric: 'rps',
      unit: 'conn/s',
      higherIsBetter: true,
      applies: anyContender,
      run: async (env, _c, d) => wrkOutcome(await runWrk(env, ['-c32', '-H', 'Connection: close', http(env, '/small')], d.wrk)),
    },
    {
      id: 'http-ka',
      // 16 connections: within the default http_pool.max_idle_per_host, so the pool is measured
      // at its default without opening and closing upstream connections as idle counts swing.
      title: `HTTP listener, header routing: wrk keep-alive ${SMALL_FILE_BYTES} B, ${HTTP_CONNECTIONS} conns`,
      group: 'requests',
      metric: 'rps',
      unit: 'req/s',
      higherIsBetter: true,
      applies: (c) => c.httpEntry('') !== null,
      run: async (env, c, d) => {
        const entry = c.httpEntry(env.serverAddr);
        if (entry === null) throw new Error(`${c.id} has no HTTP listener`);
        const headers = entry.headers.flatMap((h) => ['-H', h]);
        return wrkOutcome(await runWrk(env, [`-c${HTTP_CONNECTIONS}`, ...headers, `${entry.base}/small`], d.wrk));
      },
    },
    {
      id: 'http-1m',
      // The same listener with 1 MiB responses: all but the part read with the head goes by splice
      // (docs/HTTP.md, "Bodies"); compare with --sg-tuning relay_mode=copy for the copy path.
      title: `HTTP listener, header routing: wrk keep-alive 1 MiB downloads, 8 conns`,
      group: 'bulk',
      metric: 'gbps',
      unit: 'Gbit/s',
      higherIsBetter: true,
      applies: (c) => c.httpEntry('') !== null,
      run: async (env, c, d) => {
        const entry = c.httpEntry(env.serverAddr);
        if (entry === null) throw new Error(`${c.id} has no HTTP listener`);
        const headers = entry.headers.flatMap((h) => ['-H', h]);
        return wrkOutcome(await runWrk(env, ['-c8', ...headers, `${entry.base}/1m`], d.wrk));
      },
    },
    {
      id: 'http-24k',
      // 24 KiB responses: about 8 KiB remain after the first 16 KiB read, which the default (auto)
      // copies; --sg-tuning relay_mode=splice splices it, relay_mode=copy copies the whole body.
      // Comparing the three measures the splice threshold (docs/HTTP.md, "Bodies").
      title: `HTTP listener, header routing: wrk keep-alive ${MID_FILE_BYTES / 1024} KiB, ${HTTP_CONNECTIONS} conns`,
      group: 'requests',
      metric: 'rps',
      unit: 'req/s',
      higherIsBetter: true,
      applies: (c) => c.httpEntry('') !== null,
      run: async (env, c, d) => {
        const entry = c.httpEntry(env.serverAddr);
        if (entry === null) throw new Error(`${c.id} has no HTTP listener`);
        const headers = entry.headers.flatMap((h) => ['-H', h]);
        return wrkOutcome(await runWrk(env, [`-c${HTTP_CONNECTIONS}`, ...headers, `${entry.base}/24k`], d.wrk));
      },
    },
    ...sweep.map(sweepWorkload),
    {
      id: 'idle',
      title: 'idle relayed connections: RSS growth per connection',
      group: 'memory',
      metric: 'bytes_per_conn',
      unit: 'B/conn',
      higherIsBetter: false,
      // Once: RSS per idle connection moves by 0.2 % between repetitions (613-615 B, 3,551-3,555 B
      // on 2026-11-28), and each repetition costs ~30 s of the 10-minute budget.
      maxReps: 1,
      applies: (c) => c.idleMemory,
      run: runIdle,
    },
  ];
}

/** Workloads of the per-core phase by default: req/s (keep-alive), conn/s (new connection per request), Gbit/s (bulk). */
export const PER_CORE_DEFAULT: readonly string[] = ['wrk-ka', 'wrk-close', 'wrk-1m'];

/** The per-core id of an unconstrained workload id. */
export function perCoreId(id: string): string {
  return `core-${id}`;
}

/**
 * The per-core variants of `base`: the same load, run against each proxy contender held to a CPU
 * quota (run.ts attaches the quota and checks the throttling). direct has no proxy to hold, and
 * node-pipe, a floor rather than a peer, is left out to keep the run short.
 */
export function perCoreWorkloads(base: readonly Workload[], ids: readonly string[]): Workload[] {
  return ids.map((id) => {
    const w = base.find((x) => x.id === id);
    if (!w) throw new Error(`--per-core-workloads: unknown workload ${id}; known: ${base.map((x) => x.id).join(', ')}`);
    if (w.group === 'memory') throw new Error(`--per-core-workloads: ${id} measures memory, not traffic per core`);
    return {
      ...w,
      id: perCoreId(w.id),
      title: `${w.title} (per core)`,
      group: 'percore' as const,
      applies: (c: Contender) => c.isProxy && c.id !== 'node-pipe' && w.applies(c),
    };
  });
}
