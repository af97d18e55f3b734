// The contenders: how each one is started in the gateway namespace (pinned to the proxy CPU), which
// REDIRECT rules send the client's traffic to it, and how it is stopped. All proxies run side by
// side on their own ports; switching contender = swapping the gateway's BENCH nat chain, so the
// workloads can be interleaved contender by contender without restarting anything.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify as yamlStringify } from 'yaml';
import { ADDR, type Lab } from '../../test/lab/lab';
import type { LabProcess } from '../../test/lab/process';
import { sleep } from '../../test/lab/util';

export type ContenderId = 'direct' | 'splicegate' | 'haproxy' | 'haproxy-splice-auto' | 'haproxy-splice' | 'node-pipe' | 'proto-epoll' | 'proto-uring' | 'proto-hybrid';

export const ALL_CONTENDERS: readonly ContenderId[] = ['direct', 'splicegate', 'haproxy', 'haproxy-splice-auto', 'haproxy-splice', 'node-pipe', 'proto-epoll', 'proto-uring', 'proto-hybrid'];

/**
 * The prototype relays (bench/cpp/proto_relay_*.cc): measuring instruments for the I/O interface,
 * not peers, so they run only when --only names them (scripts/bench.sh then builds them).
 */
export const PROTO_CONTENDERS: readonly ContenderId[] = ['proto-epoll', 'proto-uring', 'proto-hybrid'];

/** What runs when --only is not given. */
export const DEFAULT_CONTENDERS: readonly ContenderId[] = ALL_CONTENDERS.filter((id) => !PROTO_CONTENDERS.includes(id));

export const HAPROXY_VARIANTS: readonly ContenderId[] = ['haproxy', 'haproxy-splice-auto', 'haproxy-splice'];
export const HAPROXY_SPLICE_VARIANTS: readonly ContenderId[] = ['haproxy-splice-auto', 'haproxy-splice'];

/** Ports the lab servers listen on (in the server namespace). */
export const SERVER_PORTS = { http: 80, iperf: 5201, idle: 9000 } as const;

export interface BenchEnv {
  lab: Lab;
  /** Scratch directory for configs and sockets (removed at the end). */
  tmpDir: string;
  repoRoot: string;
  /** CPU list (taskset -c) for the proxy under test, and for load generators + servers. */
  proxyCpus: string;
  loadCpus: string;
  /** splicegate workers == HAProxy nbthread. */
  threads: number;
  /** RLIMIT_NOFILE for every process of the benchmark. */
  nofile: number;
  /** The lab server's address (the original destination of every workload). */
  serverAddr: string;
  /** Extra splicegate `tuning:` keys, from --sg-tuning. */
  sgTuning: Record<string, string | number | boolean>;
  /** splicegate's access_log file (every connection logged); absent = no access log. */
  sgAccessLog?: string;
  /** Nice value for every lab process (negative: other users of the machine disturb less). */
  nice: number;
}

/** argv (after the command) to run `cmd` pinned to `cpus` at the lab's nice value. */
export function pinned(env: BenchEnv, cpus: string, cmd: string, args: string[]): { cmd: string; args: string[] } {
  return { cmd: 'nice', args: ['-n', String(env.nice), 'taskset', '-c', cpus, cmd, ...args] };
}

/** Where the HTTP-listener workload sends its requests for one contender. */
export interface HttpEntry {
  /** "http://host:port" that wrk requests (paths appended). */
  base: string;
  /** Request headers wrk adds ("name: value"). */
  headers: string[];
}

/** The header that names each request's destination in the HTTP-listener workload. */
export const ROUTING_HEADER = 'x-envoy-original-dst-host';

export interface Contender {
  readonly id: ContenderId;
  readonly label: string;
  /** A proxy process relays the traffic (false only for direct). */
  readonly isProxy: boolean;
  /** Whether it is expected to connect to the original destination address (node-pipe is not). */
  readonly honoursOriginalDst: boolean;
  /** Included in the idle-connections memory measurement. */
  readonly idleMemory: boolean;
  readonly notes: string;
  /** Lines for the gateway's nat BENCH chain (iptables-restore syntax, without COMMIT). */
  redirectRules(): string[];
  /**
   * The HTTP-listener workload (header routing, no REDIRECT): where the client sends requests to
   * reach the server at `serverAddr`:80. null = this contender has no such listener.
   */
  httpEntry(serverAddr: string): HttpEntry | null;
  start(env: BenchEnv): Promise<void>;
  /** The PID whose CPU and RSS are measured (null for direct). */
  pid(): number | null;
  running(): boolean;
  stop(): Promise<void>;
  /** The config it runs with, for the results file. */
  configText(): string;
  diagnostics(): string;
}

const LISTEN = {
  splicegate: 15001,
  haproxy: 15011,
  'haproxy-splice-auto': 15012,
  'haproxy-splice': 15013,
  nodeHttp: 15021,
  nodeIperf: 15022,
  nodeIdle: 15023,
  // HTTP listeners, addressed directly by the client (the gateway exempts its own address from
  // the BENCH redirect).
  splicegateHttp: 15031,
  haproxyHttp: 15032,
  'proto-epoll': 15041,
  'proto-uring': 15042,
  'proto-hybrid': 15043,
} as const;

function headerEntry(port: number, serverAddr: string): HttpEntry {
  return { base: `http://${ADDR.gwCli4}:${port}`, headers: [`${ROUTING_HEADER}: ${serverAddr}:${SERVER_PORTS.http}`] };
}

function redirectAll(port: number): string[] {
  return [`-A BENCH -p tcp -j REDIRECT --to-ports ${port}`];
}

/** Start `cmd` in the gateway namespace pinned to the proxy CPUs, with the benchmark's fd limit. */
function startPinned(env: BenchEnv, label: string, cmd: string, args: string[]): LabProcess {
  const p = pinned(env, env.proxyCpus, cmd, args);
  return env.lab.start('gw', p.cmd, p.args, { nofile: env.nofile, stdin: 'ignore', label });
}

/** Wait (bounded) until TCP `port` listens in the gateway namespace. */
async function waitListening(env: BenchEnv, proc: LabProcess, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.running) throw new Error(`${proc.label} exited before listening on ${port}\n${proc.diagnostics()}`);
    const r = await env.lab.exec('gw', 'ss', ['-Hltn', `sport = :${port}`], { timeoutMs: 5000 });
    if (r.code === 0 && r.stdout.trim().length > 0) return;
    if (Date.now() >= deadline) throw new Error(`${proc.label} not listening on ${port} after ${timeoutMs} ms\n${proc.diagnostics()}`);
    await sleep(100);
  }
}

abstract class ProcessContender implements Contender {
  abstract readonly id: ContenderId;
  abstract readonly label: string;
  readonly isProxy = true;
  abstract readonly honoursOriginalDst: boolean;
  abstract readonly idleMemory: boolean;
  abstract readonly notes: string;
  protected proc: LabProcess | null = null;
  protected config = '';

  abstract redirectRules(): string[];
  abstract start(env: BenchEnv): Promise<void>;

  httpEntry(_serverAddr: string): HttpEntry | null {
    return null;
  }

  pid(): number | null {
    return this.proc && this.proc.running ? this.proc.pid : null;
  }

  running(): boolean {
    return this.proc !== null && this.proc.running;
  }

  async stop(): Promise<void> {
    if (this.proc) await this.proc.stop('SIGTERM', 5000);
  }

  configText(): string {
    return this.config;
  }

  diagnostics(): string {
    return this.proc ? this.proc.diagnostics(3000) : '(not started)';
  }
}

class Direct implements Contender {
  readonly id = 'direct' as const;
  readonly label = 'direct';
  readonly isProxy = false;
  readonly honoursOriginalDst = true;
  readonly idleMemory = false;
  readonly notes = 'Kernel IP forwarding through the gateway, no REDIRECT, no proxy process: the baseline.';
  redirectRules(): string[] {
    return [];
  }
  httpEntry(serverAddr: string): HttpEntry {
    // The same requests straight to the server: the baseline every ratio needs.
    return { base: `http://${serverAddr}:${SERVER_PORTS.http}`, headers: [] };
  }
  async start(): Promise<void> {
    // nothing runs
  }
  pid(): number | null {
    return null;
  }
  running(): boolean {
    return true;
  }
  async stop(): Promise<void> {
    // nothing runs
  }
  configText(): string {
    return '';
  }
  diagnostics(): string {
    return '';
  }
}

class SplicegateContender extends ProcessContender {
  readonly id = 'splicegate' as const;
  readonly label = 'splicegate';
  readonly honoursOriginalDst = true;
  readonly idleMemory = true;
  readonly notes =
    'splicegate, one original_dst listener (REDIRECT + SO_ORIGINAL_DST) and one http listener (x-envoy-original-dst-host from the lab client, default http_pool), default relay settings unless --sg-tuning.';

  redirectRules(): string[] {
    return redirectAll(LISTEN.splicegate);
  }

  override httpEntry(serverAddr: string): HttpEntry {
    return headerEntry(LISTEN.splicegateHttp, serverAddr);
  }

  async start(env: BenchEnv): Promise<void> {
    const doc: Record<string, unknown> = {
      workers: env.threads,
      admin: { address: '127.0.0.1:9901' },
      listeners: [
        { name: 'egress', address: `0.0.0.0:${LISTEN.splicegate}`, mode: 'original_dst' },
        { name: 'http', address: `0.0.0.0:${LISTEN.splicegateHttp}`, mode: 'http', http: { trusted_sources: [`${ADDR.client4}/32`] } },
      ],
      // HAProxy's maxconn below: 8,000 idle connections must fit (the default bound at 20,000 fds is 7,897).
      cluster: { connect_timeout: '5s', upstream_mark: 0, max_downstream_connections: 9000 },
      drain_timeout: '2s',
    };
    if (Object.keys(env.sgTuning).length > 0) doc['tuning'] = env.sgTuning;
    if (env.sgAccessLog) doc['access_log'] = { path: env.sgAccessLog, sample: 1 };
    this.config = yamlStringify(doc);
    const file = path.join(env.tmpDir, 'splicegate.yaml');
    fs.writeFileSync(file, this.config);
    const cli = path.join(env.repoRoot, 'dist', 'src', 'cli.js');
    this.proc = startPinned(env, 'splicegate', process.execPath, [cli, 'run', '--config', file]);
    const deadline = Date.now() + 20000;
    for (;;) {
      if (!this.proc.running) throw new Error(`splicegate exited during start\n${this.proc.diagnostics()}`);
      const r = await env.lab.admin('/ready', { timeoutMs: 1000 });
      if (r.status === 200) break;
      if (Date.now() >= deadline) throw new Error(`splicegate not ready after 20 s (last /ready: ${r.status} ${r.error ?? r.body})\n${this.proc.diagnostics()}`);
      await sleep(150);
    }
  }

  /** Admin counters (flat JSON), for the results file. */
  async stats(env: BenchEnv): Promise<Record<string, number>> {
    const r = await env.lab.admin('/stats?format=json', { timeoutMs: 3000 });
    if (r.status !== 200) throw new Error(`splicegate /stats -> ${r.status} ${r.error ?? r.body}`);
    const o: unknown = JSON.parse(r.body);
    const out: Record<string, number> = {};
    if (typeof o === 'object' && o !== null) {
      for (const [k, v] of Object.entries(o)) if (typeof v === 'number') out[k] = v;
    }
    return out;
  }
}

type SpliceMode = 'none' | 'auto' | 'always';

class HaproxyContender extends ProcessContender {
  readonly honoursOriginalDst = true;
  readonly idleMemory = true;
  readonly notes: string;
  readonly label: string;
  private readonly port: number;

  constructor(
    readonly id: 'haproxy' | 'haproxy-splice-auto' | 'haproxy-splice',
    private readonly splice: SpliceMode,
  ) {
    super();
    this.label = id;
    this.port = LISTEN[id];
    const how = splice === 'none' ? 'no splicing' : splice === 'auto' ? 'option splice-auto' : 'option splice-request + option splice-response';
    this.notes = `HAProxy (Debian package), mode tcp, "server s1 0.0.0.0:0" (connect to the original destination read with SO_ORIGINAL_DST), ${how}.`;
    if (id === 'haproxy') {
      this.notes +=
        ` Also a mode http frontend for the HTTP-listener workload: "http-request set-dst req.hdr_ip(${ROUTING_HEADER})" and set-dst-port from the header's port, from the lab client only, the header deleted, default connection reuse (http-reuse safe).`;
    }
  }

  redirectRules(): string[] {
    return redirectAll(this.port);
  }

  override httpEntry(serverAddr: string): HttpEntry | null {
    return this.id === 'haproxy' ? headerEntry(LISTEN.haproxyHttp, serverAddr) : null;
  }

  /**
   * The HTTP gateway as HAProxy 2.6 can express it: the destination address and port from the
   * header (req.hdr_ip ignores a port; field(2,:) is the port of "ip:port"), honoured only from
   * the trusted client like splicegate's trusted_sources, and never forwarded. IPv4 only: the
   * field() split would cut an "[ipv6]:port" value apart, and the workload uses IPv4.
   */
  static httpFrontend(port: number): string[] {
    return [
      'frontend http_gateway',
      '    mode http',
      `    bind 0.0.0.0:${port}`,
      '    option http-keep-alive',
      '    timeout http-request 10s',
      '    timeout http-keep-alive 60s',
      `    acl trusted src ${ADDR.client4}/32`,
      `    http-request set-dst req.hdr_ip(${ROUTING_HEADER}) if trusted`,
      `    http-request set-dst-port req.hdr(${ROUTING_HEADER}),field(2,:) if trusted`,
      `    http-request del-header ${ROUTING_HEADER}`,
      '    default_backend http_original_dst',
      '',
      'backend http_original_dst',
      '    mode http',
      '    server s1 0.0.0.0:0',
      '',
    ];
  }

  static spliceLines(splice: SpliceMode): string[] {
    if (splice === 'auto') return ['    option splice-auto'];
    if (splice === 'always') return ['    option splice-request', '    option splice-response'];
    return [];
  }

  async start(env: BenchEnv): Promise<void> {
    const sock = path.join(env.tmpDir, `${this.id}.sock`);
    this.config = [
      'global',
      `    nbthread ${env.threads}`,
      // 8,000 idle connections = 16,000 sockets; keep maxconn + pipes inside the 20,000 fd limit.
      '    maxconn 9000',
      '    maxpipes 512',
      `    stats socket ${sock} mode 600 level admin`,
      '',
      'defaults',
      '    mode tcp',
      '    timeout connect 5s',
      '    timeout client 1h',
      '    timeout server 1h',
      ...HaproxyContender.spliceLines(this.splice),
      '',
      'frontend egress',
      `    bind 0.0.0.0:${this.port}`,
      '    default_backend original_dst',
      '',
      'backend original_dst',
      '    server s1 0.0.0.0:0',
      '',
      ...(this.id === 'haproxy' ? HaproxyContender.httpFrontend(LISTEN.haproxyHttp) : []),
    ].join('\n');
    const file = path.join(env.tmpDir, `${this.id}.cfg`);
    fs.writeFileSync(file, this.config);
    const check = await env.lab.exec('gw', 'haproxy', ['-c', '-q', '-f', file], { timeoutMs: 10000, nofile: env.nofile });
    if (check.code !== 0) throw new Error(`haproxy -c rejected ${file}: ${check.stderr} ${check.stdout}`);
    this.proc = startPinned(env, this.id, 'haproxy', ['-db', '-f', file]);
    await waitListening(env, this.proc, this.port, 10000);
  }
}

class NodePipeContender extends ProcessContender {
  readonly id = 'node-pipe' as const;
  readonly label = 'node-pipe';
  readonly honoursOriginalDst = false;
  readonly idleMemory = false;
  readonly notes =
    'Naive Node.js net + pipe() proxy, single thread. Cannot read SO_ORIGINAL_DST: one REDIRECT rule per destination port to its own listening port, each mapped to the one lab server. A floor, not a feature-equal peer.';

  private serverAddr = '';

  redirectRules(): string[] {
    return [
      `-A BENCH -p tcp --dport ${SERVER_PORTS.http} -j REDIRECT --to-ports ${LISTEN.nodeHttp}`,
      `-A BENCH -p tcp --dport ${SERVER_PORTS.iperf} -j REDIRECT --to-ports ${LISTEN.nodeIperf}`,
      `-A BENCH -p tcp --dport ${SERVER_PORTS.idle} -j REDIRECT --to-ports ${LISTEN.nodeIdle}`,
    ];
  }

  async start(env: BenchEnv): Promise<void> {
    this.serverAddr = env.serverAddr;
    const maps = [
      `${LISTEN.nodeHttp}=${this.serverAddr}:${SERVER_PORTS.http}`,
      `${LISTEN.nodeIperf}=${this.serverAddr}:${SERVER_PORTS.iperf}`,
      `${LISTEN.nodeIdle}=${this.serverAddr}:${SERVER_PORTS.idle}`,
    ];
    this.config = `node dist/bench/node-pipe-proxy.js ${maps.join(' ')}`;
    const script = path.join(env.repoRoot, 'dist', 'bench', 'node-pipe-proxy.js');
    this.proc = startPinned(env, 'node-pipe', process.execPath, [script, ...maps]);
    await this.proc.waitForLine((l) => l.trim() === 'READY', 10000, 'READY');
  }
}

/** Where scripts/bench.sh builds the prototype relays (CMake option SPLICEGATE_BENCH_PROTOS). */
export const PROTO_BUILD_DIR = path.join('build', 'bench-protos');

type ProtoId = 'proto-epoll' | 'proto-uring' | 'proto-hybrid';

const PROTO_BINARY: Record<ProtoId, string> = {
  'proto-epoll': 'proto_relay_epoll',
  'proto-uring': 'proto_relay_uring',
  'proto-hybrid': 'proto_relay_hybrid',
};

const PROTO_NOTES: Record<ProtoId, string> = {
  'proto-epoll':
    'Benchmark prototype (bench/cpp/proto_relay_epoll.cc), not a product: a minimal single-threaded copy relay on edge-triggered epoll, REDIRECT + SO_ORIGINAL_DST, one 16 KiB buffer per direction, recv/send. The control for proto-uring and proto-hybrid.',
  'proto-uring':
    'Benchmark prototype (bench/cpp/proto_relay_uring.cc), not a product: proto-epoll with io_uring as its I/O interface (multishot accept, IORING_OP_CONNECT, recv/send SQEs, one io_uring_submit_and_wait per loop iteration).',
  'proto-hybrid':
    'Benchmark prototype (bench/cpp/proto_relay_hybrid.cc), not a product: proto-epoll for established streams, with accept (multishot), connect and close batched through an io_uring whose fd sits in the epoll set.',
};

/** Extra arguments per prototype, for experiments (their variants: see the sources' headers). */
const PROTO_ARGS_ENV: Partial<Record<ProtoId, string>> = {
  'proto-uring': 'SPLICEGATE_PROTO_URING_ARGS',
  'proto-hybrid': 'SPLICEGATE_PROTO_HYBRID_ARGS',
};

/**
 * A prototype relay (bench/cpp/proto_relay_{epoll,uring,hybrid}.cc): REDIRECT + SO_ORIGINAL_DST
 * like splicegate, copy only, one thread. Extra arguments for the io_uring ones (their --setup and
 * other variants) come from SPLICEGATE_PROTO_URING_ARGS / SPLICEGATE_PROTO_HYBRID_ARGS.
 */
class ProtoRelayContender extends ProcessContender {
  readonly honoursOriginalDst = true;
  readonly idleMemory = false;
  readonly label: string;
  readonly notes: string;
  private readonly port: number;

  constructor(readonly id: ProtoId) {
    super();
    this.label = id;
    this.port = LISTEN[id];
    this.notes = PROTO_NOTES[id];
  }

  redirectRules(): string[] {
    return redirectAll(this.port);
  }

  async start(env: BenchEnv): Promise<void> {
    const binary = path.join(env.repoRoot, PROTO_BUILD_DIR, PROTO_BINARY[this.id]);
    if (!fs.existsSync(binary)) {
      throw new Error(`${binary} is missing: \`npm run bench -- --only ${this.id} ...\` builds it (scripts/bench.sh; needs liburing-dev)`);
    }
    const envName = PROTO_ARGS_ENV[this.id];
    const extra = envName ? (process.env[envName] ?? '').split(/\s+/).filter((a) => a.length > 0) : [];
    const args = [`0.0.0.0:${this.port}`, ...extra];
    this.config = `${path.relative(env.repoRoot, binary)} ${args.join(' ')}`;
    this.proc = startPinned(env, this.id, binary, args);
    await this.proc.waitForLine((l) => l.startsWith('READY '), 10000, 'READY');
  }
}

export function makeContender(id: ContenderId): Contender {
  switch (id) {
    case 'direct':
      return new Direct();
    case 'splicegate':
      return new SplicegateContender();
    case 'haproxy':
      return new HaproxyContender('haproxy', 'none');
    case 'haproxy-splice-auto':
      return new HaproxyContender('haproxy-splice-auto', 'auto');
    case 'haproxy-splice':
      return new HaproxyContender('haproxy-splice', 'always');
    case 'node-pipe':
      return new NodePipeContender();
    case 'proto-epoll':
    case 'proto-uring':
    case 'proto-hybrid':
      return new ProtoRelayContender(id);
  }
}

export function isSplicegate(c: Contender): c is SplicegateContender {
  return c instanceof SplicegateContender;
}

/** Open pipe file descriptors of a process (a proxy that splices keeps some pooled). */
export function pipeFdCount(pid: number): number | null {
  try {
    let n = 0;
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('pipe:')) n += 1;
      } catch {
        // closed meanwhile
      }
    }
    return n;
  } catch {
    return null;
  }
}
