// What recording latency histograms costs: splicegate with tuning.record_latency on and off,
// through the same lab and workloads (keep-alive requests, a new connection per request),
// alternating on/off for several rounds, medians compared. The target is under 2 % of
// throughput and of connection rate.
//
//   npm run build && node dist/bench/latency-cost.js [--rounds 3] [--seconds 3]
// Writes bench/results/latency-cost.{json,md}.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

interface Sample {
  kaRps: number;
  closeRps: number;
  kaCpuUsPerReq: number;
  closeCpuUsPerReq: number;
}

type Variant = 'on' | 'off';

const repoRoot = path.join(__dirname, '..', '..');
const { values } = parseArgs({ options: { rounds: { type: 'string' }, seconds: { type: 'string' } } });
const rounds = Number(values.rounds ?? 3);
const seconds = Number(values.seconds ?? 3);

/** The two variants' ranges overlap: the difference of medians is not distinguishable from noise. */
function noisy(samples: Record<Variant, Sample[]>, k: keyof Sample): boolean {
  const a = samples.on.map((s) => s[k]);
  const b = samples.off.map((s) => s[k]);
  return Math.min(...a) <= Math.max(...b) && Math.min(...b) <= Math.max(...a);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function metric(summary: Record<string, Record<string, Record<string, { median: number }>>>, workload: string, key: string): number {
  const v = summary[workload]?.['splicegate']?.[key]?.median;
  if (typeof v !== 'number') throw new Error(`no ${workload}.splicegate.${key} in the run's summary`);
  return v;
}

function runOnce(variant: Variant, out: string): Sample {
  const args = [
    path.join(repoRoot, 'dist', 'bench', 'run.js'),
    '--only', 'splicegate',
    '--workloads', 'wrk-ka,wrk-close',
    '--reps', '1',
    '--seconds', String(seconds),
    '--budget-s', '0',
    '--out', out,
    '--sg-tuning', `record_latency=${variant === 'on'}`,
  ];
  execFileSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000 });
  const results = JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8')) as {
    summary: Record<string, Record<string, Record<string, { median: number }>>>;
  };
  return {
    kaRps: metric(results.summary, 'wrk-ka', 'rps'),
    closeRps: metric(results.summary, 'wrk-close', 'rps'),
    kaCpuUsPerReq: metric(results.summary, 'wrk-ka', 'proxy_cpu_us_per_req'),
    closeCpuUsPerReq: metric(results.summary, 'wrk-close', 'proxy_cpu_us_per_req'),
  };
}

/** The core-level micro-benchmark (bench/cpp/latency_record_cost.cc), built in Release. */
function recordCostNs(): { recordNs: number; clockNs: number } {
  const build = path.join(repoRoot, 'build', 'bench');
  execFileSync('cmake', ['-S', repoRoot, '-B', build, '-DSPLICEGATE_TESTS=ON', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'ignore' });
  execFileSync('cmake', ['--build', build, '-j2', '--target', 'latency_record_cost'], { stdio: 'ignore' });
  const out = execFileSync(path.join(build, 'latency_record_cost'), ['2000000', '1000'], { encoding: 'utf8' });
  const parsed = JSON.parse(out) as { record_ns_per_connection: number; clock_read_ns: number };
  return { recordNs: parsed.record_ns_per_connection, clockNs: parsed.clock_read_ns };
}

function main(): void {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'splicegate-latency-cost-'));
  const samples: Record<Variant, Sample[]> = { on: [], off: [] };
  try {
    for (let round = 0; round < rounds; round++) {
      // Alternate which variant goes first, so drift in the machine's load hits both alike.
      const order: Variant[] = round % 2 === 0 ? ['on', 'off'] : ['off', 'on'];
      for (const variant of order) {
        process.stderr.write(`[latency-cost] round ${round + 1}/${rounds}: recording ${variant}\n`);
        samples[variant].push(runOnce(variant, path.join(scratch, `${variant}-${round}`)));
      }
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  const keys: Array<keyof Sample> = ['kaRps', 'closeRps', 'kaCpuUsPerReq', 'closeCpuUsPerReq'];
  const med = (v: Variant): Sample =>
    Object.fromEntries(keys.map((k) => [k, median(samples[v].map((s) => s[k]))])) as unknown as Sample;
  const on = med('on');
  const off = med('off');
  // Cost as a share of what the proxy does without recording: lost throughput, added CPU.
  const cost = {
    keepAliveThroughput: 1 - on.kaRps / off.kaRps,
    connectionRate: 1 - on.closeRps / off.closeRps,
    keepAliveCpuPerRequest: on.kaCpuUsPerReq / off.kaCpuUsPerReq - 1,
    newConnectionCpuPerRequest: on.closeCpuUsPerReq / off.closeCpuUsPerReq - 1,
  };
  const micro = recordCostNs();
  // Per connection: attach + four records, and three extra clock reads (accept, established, close).
  const perConnectionNs = micro.recordNs + 3 * micro.clockNs;
  const shareOfConnectionCpu = perConnectionNs / (off.closeCpuUsPerReq * 1000);
  const verdict = (x: number): string => (x < 0.02 ? 'PASS' : 'MISS');
  const range = (v: Variant, k: keyof Sample): string => {
    const xs = samples[v].map((x) => x[k]);
    return `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`;
  };
  const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;
  const md = [
    `# Latency recording cost — ${new Date().toISOString()}`,
    '',
    `${rounds} rounds, recording on and off alternating, wrk ${seconds} s per run, splicegate alone on the proxy CPU (bench/run.ts lab and pinning). Medians.`,
    '',
    '| | recording on | recording off | cost | target < 2 % |',
    '|---|---|---|---|---|',
    `| keep-alive req/s (min–max) | ${on.kaRps.toFixed(0)} (${range('on', 'kaRps')}) | ${off.kaRps.toFixed(0)} (${range('off', 'kaRps')}) | ${pct(cost.keepAliveThroughput)} | ${verdict(cost.keepAliveThroughput)}${noisy(samples, 'kaRps') ? ' (within run-to-run noise)' : ''} |`,
    `| new connections/s (min–max) | ${on.closeRps.toFixed(0)} (${range('on', 'closeRps')}) | ${off.closeRps.toFixed(0)} (${range('off', 'closeRps')}) | ${pct(cost.connectionRate)} | ${verdict(cost.connectionRate)}${noisy(samples, 'closeRps') ? ' (within run-to-run noise)' : ''} |`,
    `| proxy CPU µs per keep-alive request | ${on.kaCpuUsPerReq.toFixed(1)} | ${off.kaCpuUsPerReq.toFixed(1)} | ${pct(cost.keepAliveCpuPerRequest)} | ${verdict(cost.keepAliveCpuPerRequest)} |`,
    `| proxy CPU µs per new connection | ${on.closeCpuUsPerReq.toFixed(1)} | ${off.closeCpuUsPerReq.toFixed(1)} | ${pct(cost.newConnectionCpuPerRequest)} | ${verdict(cost.newConnectionCpuPerRequest)} |`,
    `| core micro-benchmark: recording per connection | ${perConnectionNs.toFixed(0)} ns (attach + 4 records ${micro.recordNs.toFixed(0)} ns, 3 clock reads ${(3 * micro.clockNs).toFixed(0)} ns) | – | ${pct(shareOfConnectionCpu)} of the proxy CPU per new connection | ${verdict(shareOfConnectionCpu)} |`,
    '',
    'Every lab figure here moves by more than 2 % between runs on this shared 2-core machine (throughput is capped by the load-generator CPU; compare the min–max ranges), so a 2 % effect cannot be resolved from them in either direction. The micro-benchmark resolves it: recording is work per connection only (one attach, four records, three clock reads), nothing per request or per byte, and it is set against the measured proxy CPU per new connection. Keep-alive requests on an open connection record nothing, so any keep-alive difference above is noise.',
    '',
  ].join('\n');
  const outDir = path.join(repoRoot, 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(
    path.join(outDir, 'latency-cost.json'),
    JSON.stringify({ rounds, seconds, samples, medians: { on, off }, cost, micro, perConnectionNs, shareOfConnectionCpu }, null, 2) + '\n',
  );
  fs.writeFileSync(path.join(outDir, 'latency-cost.md'), md);
  process.stdout.write(md);
}

main();
