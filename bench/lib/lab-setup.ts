// Lab preparation shared by the benchmark runners (run.ts, syscalls.ts): kernel settings, receive
// processing pinned per namespace, the gateway's BENCH nat chain, and switching it to a contender.

import { ADDR, type Lab } from '../../test/lab/lab';
import { type BenchEnv, type Contender, pinned } from './contenders';
import type { Servers } from './servers';

/** Replaces the gateway's BENCH chain with `c`'s REDIRECT rules (check: verify the rule count). */
export async function setRedirect(env: BenchEnv, c: Contender, check = false): Promise<void> {
  const text = ['*nat', ':BENCH - [0:0]', ...c.redirectRules(), 'COMMIT', ''].join('\n');
  const r = await env.lab.exec('gw', 'iptables-restore', ['-w', '--noflush'], { input: text, timeoutMs: 10000 });
  if (r.code !== 0) throw new Error(`iptables-restore for ${c.id} failed: ${r.stderr}`);
  if (!check) return;
  const l = await env.lab.exec('gw', 'iptables', ['-w', '-t', 'nat', '-S', 'BENCH'], { timeoutMs: 10000 });
  const rules = l.stdout.split('\n').filter((x) => x.startsWith('-A BENCH')).length;
  if (rules !== c.redirectRules().length) throw new Error(`BENCH chain has ${rules} rules, expected ${c.redirectRules().length}:\n${l.stdout}`);
}

/** "0", "1", "0-1", "0,2" -> hex CPU mask ("1", "2", "3", "5"). */
export function cpuMask(list: string): string {
  let mask = 0n;
  for (const part of list.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m || m[1] === undefined) throw new Error(`bad CPU list ${JSON.stringify(list)}`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    for (let i = a; i <= b; i++) mask |= 1n << BigInt(i);
  }
  return mask.toString(16);
}

/** Steer the receive processing of `devs` (veth, single rx queue) in namespace `ns` to `cpus`. */
export async function setRps(lab: Lab, ns: 'cli' | 'gw' | 'srv', devs: string[], cpus: string): Promise<void> {
  const mask = cpuMask(cpus);
  const script = devs.map((d) => `echo ${mask} > /sys/class/net/${d}/queues/rx-0/rps_cpus`).join(' && ');
  await lab.execOk(ns, 'sh', ['-c', script]);
}

/**
 * Kernel settings and pinning for a benchmark lab: wide port range and TIME_WAIT reuse for the
 * short-connection workloads, receive processing of each namespace on a fixed CPU (RPS on the veth
 * rx queues: the gateway's on the proxy CPU(s), the client's and server's on the load CPU(s), so
 * CPU 1 is "the gateway box" and CPU 0 "the client and server boxes" for every contender alike,
 * and a flow's packets are never processed on two CPUs at once, which reorders them on veth and
 * shows up as spurious retransmits), the empty BENCH chain hooked into the gateway's PREROUTING,
 * and a short conntrack TIME_WAIT. Returns warnings.
 */
export async function prepareLab(lab: Lab, proxyCpus: string, loadCpus: string): Promise<string[]> {
  const warnings: string[] = [];
  for (const ns of ['cli', 'gw'] as const) {
    await lab.execOk(ns, 'sysctl', ['-qw', 'net.ipv4.ip_local_port_range=1024 65000', 'net.ipv4.tcp_tw_reuse=1']);
  }
  await setRps(lab, 'gw', ['cli0', 'srv0'], proxyCpus);
  await setRps(lab, 'cli', ['eth0'], loadCpus);
  await setRps(lab, 'srv', ['eth0'], loadCpus);
  await lab.iptables('gw', 4, ['-t', 'nat', '-N', 'BENCH']);
  // Connections to the gateway's own address are the HTTP listeners' (the http-ka workload):
  // never redirected, whichever contender the BENCH chain holds.
  await lab.iptables('gw', 4, ['-t', 'nat', '-A', 'PREROUTING', '-i', 'cli0', '-d', ADDR.gwCli4, '-p', 'tcp', '-j', 'RETURN']);
  await lab.iptables('gw', 4, ['-t', 'nat', '-A', 'PREROUTING', '-i', 'cli0', '-p', 'tcp', '-j', 'BENCH']);
  // Short conntrack TIME_WAIT in the gateway: tens of thousands of short connections per run.
  const ct = await lab.exec('gw', 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_tcp_timeout_time_wait=5']);
  if (ct.code !== 0) warnings.push(`could not shorten conntrack TIME_WAIT in the gateway: ${ct.stderr.trim()}`);
  return warnings;
}

/**
 * Readies the lab for the per-request tools (bench:syscalls, bench:profile): pinning and RPS,
 * the servers, then every contender started. Returns prepareLab's warnings.
 */
export async function startLab(env: BenchEnv, servers: Servers, contenders: readonly Contender[]): Promise<string[]> {
  const warnings = await prepareLab(env.lab, env.proxyCpus, env.loadCpus);
  await servers.start();
  for (const c of contenders) await c.start(env);
  return warnings;
}

/** Points the gateway's redirect at `c` (checked) and warms it with one second of keep-alive wrk. */
export async function selectAndWarm(env: BenchEnv, c: Contender): Promise<void> {
  await setRedirect(env, c, true);
  const warm = pinned(env, env.loadCpus, 'wrk', ['-t1', '-c8', '-d1s', `http://${env.serverAddr}/small`]);
  await env.lab.exec('cli', warm.cmd, warm.args, { timeoutMs: 30000, nofile: env.nofile });
}
