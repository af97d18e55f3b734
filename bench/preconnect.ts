// What cluster.preconnect saves: sequential clients to one host (a client-speaks-first server),
// splicegate with and without a warm pool, alternating. Reports the handshakes saved
// (upstream_cx_preconnect_used) and the client-observed time from connect() to the first reply
// byte. This lab has no way to add network delay (no netem here), so the saving in time is one
// veth round trip; behind a real network it is one RTT to the destination per connection.
//
//   npm run build && node dist/bench/preconnect.js [--connections 400] [--rounds 3]
// Writes bench/results/preconnect.{json,md}.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Lab } from '../test/lab/lab';
import { Splicegate } from '../test/lab/splicegate';

const repoRoot = path.join(__dirname, '..', '..');
const { values } = parseArgs({ options: { connections: { type: 'string' }, rounds: { type: 'string' } } });
const connections = Number(values.connections ?? 400);
const rounds = Number(values.rounds ?? 3);

type Variant = 'warm' | 'cold';

interface RoundResult {
  variant: Variant;
  p50Us: number;
  p90Us: number;
  meanUs: number;
  handshakesSaved: number;
  upstreamConnects: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}

async function runRound(lab: Lab, variant: Variant): Promise<RoundResult> {
  const sg = await Splicegate.start(lab, {
    workers: 1, // one worker: every client meets the same warm pool
    listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
    cluster: variant === 'warm' ? { preconnect: { ports: [7000], per_host: 2, ttl: '10s' } } : {},
  });
  try {
    const script = path.join(repoRoot, 'dist', 'bench', 'sequential-client.js');
    const r = await lab.exec('cli', process.execPath, [script, '10.10.2.2:7000', String(connections), '2'], { timeoutMs: 120000 });
    if (r.code !== 0) throw new Error(`sequential client failed: ${r.stderr}`);
    const times = (JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { times: number[] }).times.sort((a, b) => a - b);
    const stats = (await sg.stats()).raw as Record<string, number>;
    return {
      variant,
      p50Us: percentile(times, 0.5),
      p90Us: percentile(times, 0.9),
      meanUs: times.reduce((a, b) => a + b, 0) / times.length,
      handshakesSaved: stats['upstream_cx_preconnect_used'] ?? 0,
      upstreamConnects: stats['upstream_cx_total'] ?? 0,
    };
  } finally {
    await sg.dispose();
  }
}

async function main(): Promise<void> {
  const lab = await Lab.create({ name: 'bench-preconnect' });
  const results: RoundResult[] = [];
  try {
    await lab.startServer('stamp', ['--listen', '10.10.2.2:7000']);
    await lab.redirect({ dport: 7000, toPort: 15001, family: 4 });
    for (let round = 0; round < rounds; round++) {
      const order: Variant[] = round % 2 === 0 ? ['cold', 'warm'] : ['warm', 'cold'];
      for (const variant of order) {
        process.stderr.write(`[preconnect] round ${round + 1}/${rounds}: ${variant}\n`);
        results.push(await runRound(lab, variant));
      }
    }
  } finally {
    await lab.destroy();
  }
  const med = (variant: Variant, k: keyof Omit<RoundResult, 'variant'>): number => {
    const xs = results.filter((r) => r.variant === variant).map((r) => r[k]).sort((a, b) => a - b);
    return xs[Math.floor(xs.length / 2)] ?? 0;
  };
  const rows = (['p50Us', 'p90Us', 'meanUs'] as const).map(
    (k) => `| ${k.replace('Us', '')} connect-to-first-reply (µs) | ${med('cold', k).toFixed(0)} | ${med('warm', k).toFixed(0)} | ${(med('warm', k) / med('cold', k)).toFixed(2)}x |`,
  );
  const md = [
    `# Preconnect — ${new Date().toISOString()}`,
    '',
    `${connections} sequential client connections (2 ms apart) to one client-speaks-first server, ${rounds} rounds alternating cold/warm, one worker, \`preconnect: {ports: [7000], per_host: 2}\`. Medians over rounds.`,
    '',
    '| | no preconnect | preconnect | ratio |',
    '|---|---|---|---|',
    ...rows,
    `| upstream handshakes saved (upstream_cx_preconnect_used) | ${med('cold', 'handshakesSaved')} | ${med('warm', 'handshakesSaved')} of ${connections} | – |`,
    `| upstream connects opened (upstream_cx_total, incl. warm ones) | ${med('cold', 'upstreamConnects')} | ${med('warm', 'upstreamConnects')} | – |`,
    '',
    'The lab cannot add network delay (no netem module here), so a handshake costs one veth round trip: the time saved per connection is small here; behind a real network it is one round trip to the destination.',
    '',
  ].join('\n');
  const outDir = path.join(repoRoot, 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'preconnect.json'), JSON.stringify({ connections, rounds, results }, null, 2) + '\n');
  fs.writeFileSync(path.join(outDir, 'preconnect.md'), md);
  process.stdout.write(md);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
