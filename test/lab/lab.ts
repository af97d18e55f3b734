// A three-namespace network lab: client <-> gateway <-> server, IPv4 and IPv6, built with
// iproute2/iptables. Everything lives inside namespaces this process creates; the host's own
// network configuration is never touched.
//
//   cli  eth0  10.10.1.2/24  fd00:1::2/64   default via 10.10.1.1 / fd00:1::1
//   gw   cli0  10.10.1.1/24  fd00:1::1/64   (forwarding on, v4 and v6)
//   gw   srv0  10.10.2.1/24  fd00:2::1/64
//   srv  eth0  10.10.2.2/24  fd00:2::2/64   default via 10.10.2.1 / fd00:2::1

import { ChildProcess, spawn, spawnSync, StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { clientScript, serverScript } from './paths';
import { ExitInfo, LabProcess } from './process';
import { isJsonObject, JsonObject, parseJsonObject, tail } from './util';

export type Ns = 'cli' | 'gw' | 'srv';
export type Family = 4 | 6;

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface SpawnOptions {
  /** Run under `ulimit -n N` (fails loudly if N exceeds the hard limit). */
  nofile?: number;
  env?: NodeJS.ProcessEnv;
  /** stdin: 'pipe' (default for start()) or 'ignore'. */
  stdin?: 'pipe' | 'ignore';
  label?: string;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
  nofile?: number;
}

export interface RedirectOptions {
  /** Destination port(s) to catch: a number, an iptables range "a:b", or a list (one rule each). Omit for all TCP. */
  dport?: number | string | number[];
  /** Only catch this destination address. */
  daddr?: string;
  toPort: number;
  family: Family;
}

export interface TproxyOptions {
  dport?: number | string | number[];
  daddr?: string;
  onPort: number;
  mark: number;
  family?: Family;
  /** Routing table for the local route; default 100. */
  table?: number;
  /** The transport the rule catches; default tcp. */
  protocol?: 'tcp' | 'udp';
}

export interface StartServerOptions {
  ns?: Ns;
  nofile?: number;
  readyTimeoutMs?: number;
}

export interface RunClientOptions {
  ns?: Ns;
  nofile?: number;
  timeoutMs?: number;
}

export interface AdminResponse {
  status: number;
  body: string;
  /** Response headers (lower-case names), when there was a response. */
  headers?: Record<string, string>;
  error?: string;
}

/** A fixture server started by startServer(); `address` is what it printed in READY. */
export interface ServerHandle {
  proc: LabProcess;
  address: string;
}

export interface ClientRun {
  result: JsonObject;
  proc: LabProcess;
}

export const ADDR = {
  client4: '10.10.1.2',
  client6: 'fd00:1::2',
  gwCli4: '10.10.1.1',
  gwCli6: 'fd00:1::1',
  gwSrv4: '10.10.2.1',
  gwSrv6: 'fd00:2::1',
  server4: '10.10.2.2',
  server6: 'fd00:2::2',
} as const;

export const IFACE = {
  /** client side, in cli */
  client: 'eth0',
  /** gateway, towards the client */
  gwCli: 'cli0',
  /** gateway, towards the server */
  gwSrv: 'srv0',
  /** server side, in srv */
  server: 'eth0',
} as const;

/** "ip:port" or "[ip6]:port" */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

const NS_RE = /^sg-[a-z0-9]*-(\d+)-(\d+)-(cli|gw|srv)$/;
const NS_KINDS: readonly Ns[] = ['cli', 'gw', 'srv'];

let counter = 0;
const liveLabs = new Set<Lab>();
let handlersInstalled = false;

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const lab of liveLabs) lab.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      for (const lab of liveLabs) lab.destroySync();
      process.exit(sig === 'SIGINT' ? 130 : sig === 'SIGTERM' ? 143 : 129);
    });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function listNetns(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  if (r.status !== 0) return [];
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

/** SIGKILL every process inside namespace `ns` (by PID) and delete it. Synchronous. */
function killAndDeleteNsSync(ns: string): void {
  const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
  if (r.status === 0) {
    for (const tok of r.stdout.split(/\s+/)) {
      const pid = Number(tok);
      if (Number.isInteger(pid) && pid > 1 && pid !== process.pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  }
  spawnSync('ip', ['netns', 'del', ns], { encoding: 'utf8' });
}

/**
 * Delete lab namespaces left behind by lab processes that no longer exist (e.g. a test run that
 * was SIGKILLed). Only names of this library's form whose creator PID is dead are touched.
 */
function sweepStale(): void {
  for (const ns of listNetns()) {
    const m = NS_RE.exec(ns);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || pidAlive(pid)) continue;
    killAndDeleteNsSync(ns);
  }
}

let hardNofile: number | null = null;
/** The hard RLIMIT_NOFILE children inherit (a non-root-capable sandbox cannot raise it). */
export function hardNofileLimit(): number {
  if (hardNofile === null) {
    const r = spawnSync('bash', ['-c', 'ulimit -Hn'], { encoding: 'utf8' });
    const t = r.stdout.trim();
    hardNofile = t === 'unlimited' ? 1 << 20 : Number(t) || 1024;
  }
  return hardNofile;
}

export class Lab {
  readonly name: string;
  readonly prefix: string;
  readonly ns: Readonly<Record<Ns, string>>;
  private readonly tracked = new Set<ChildProcess>();
  private readonly procs = new Set<LabProcess>();
  private readonly tproxyRoutes = new Set<string>();
  private destroyed = false;
  private created = false;
  private tmp: string | null = null;

  private constructor(name: string) {
    const clean = name.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, 10);
    counter += 1;
    this.name = name;
    this.prefix = `sg-${clean}-${process.pid}-${counter}`;
    this.ns = { cli: `${this.prefix}-cli`, gw: `${this.prefix}-gw`, srv: `${this.prefix}-srv` };
  }

  /** Build the lab. Throws (never skips) if namespaces cannot be created. */
  static async create(opts: { name: string }): Promise<Lab> {
    sweepStale();
    installExitHandlers();
    const lab = new Lab(opts.name);
    liveLabs.add(lab);
    try {
      await lab.build();
    } catch (e) {
      await lab.destroy().catch(() => undefined);
      throw e;
    }
    return lab;
  }

  private async build(): Promise<void> {
    for (const k of NS_KINDS) {
      const r = await this.hostCmd('ip', ['netns', 'add', this.ns[k]]);
      if (r.code !== 0) {
        throw new Error(
          `Lab.create: cannot create network namespace ${this.ns[k]} (this test needs root with CAP_SYS_ADMIN/CAP_NET_ADMIN and netns support): ${r.stderr.trim()}`,
        );
      }
    }
    this.created = true;
    // IPv6: no DAD anywhere so addresses (link-local too) are usable at once.
    for (const k of NS_KINDS) {
      await this.execOk(k, 'sysctl', ['-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
    }
    await this.hostOk('ip', ['link', 'add', 'name', IFACE.client, 'netns', this.ns.cli, 'type', 'veth', 'peer', 'name', IFACE.gwCli, 'netns', this.ns.gw]);
    await this.hostOk('ip', ['link', 'add', 'name', IFACE.gwSrv, 'netns', this.ns.gw, 'type', 'veth', 'peer', 'name', IFACE.server, 'netns', this.ns.srv]);

    await this.ipBatch('cli', [
      `addr add ${ADDR.client4}/24 dev ${IFACE.client}`,
      `addr add ${ADDR.client6}/64 dev ${IFACE.client} nodad`,
      'link set lo up',
      `link set ${IFACE.client} up`,
    ]);
    await this.ipBatch('gw', [
      `addr add ${ADDR.gwCli4}/24 dev ${IFACE.gwCli}`,
      `addr add ${ADDR.gwCli6}/64 dev ${IFACE.gwCli} nodad`,
      `addr add ${ADDR.gwSrv4}/24 dev ${IFACE.gwSrv}`,
      `addr add ${ADDR.gwSrv6}/64 dev ${IFACE.gwSrv} nodad`,
      'link set lo up',
      `link set ${IFACE.gwCli} up`,
      `link set ${IFACE.gwSrv} up`,
    ]);
    await this.ipBatch('srv', [
      `addr add ${ADDR.server4}/24 dev ${IFACE.server}`,
      `addr add ${ADDR.server6}/64 dev ${IFACE.server} nodad`,
      'link set lo up',
      `link set ${IFACE.server} up`,
    ]);
    await this.ipBatch('cli', [`route add default via ${ADDR.gwCli4}`]);
    await this.ipBatch('cli', [`route add default via ${ADDR.gwCli6}`], 6);
    await this.ipBatch('srv', [`route add default via ${ADDR.gwSrv4}`]);
    await this.ipBatch('srv', [`route add default via ${ADDR.gwSrv6}`], 6);
    await this.execOk('gw', 'sysctl', [
      '-qw',
      'net.ipv4.ip_forward=1',
      'net.ipv6.conf.all.forwarding=1',
      'net.ipv4.conf.all.rp_filter=0',
      'net.ipv4.conf.default.rp_filter=0',
      `net.ipv4.conf.${IFACE.gwCli}.rp_filter=0`,
      `net.ipv4.conf.${IFACE.gwSrv}.rp_filter=0`,
    ]);
  }

  // ---------------------------------------------------------------- commands

  /** Run a command in the host namespace (only ever `ip netns ...` / `ip link add ... netns`). */
  private hostCmd(cmd: string, args: string[], input?: string): Promise<ExecResult> {
    return this.runCapture(cmd, args, { timeoutMs: 30000, input });
  }

  private async hostOk(cmd: string, args: string[]): Promise<void> {
    const r = await this.hostCmd(cmd, args);
    if (r.code !== 0) throw new Error(`lab: '${cmd} ${args.join(' ')}' failed (${r.code}): ${r.stderr.trim()}`);
  }

  /** Run several `ip` commands inside a namespace via `ip [-6] -n NS -batch -`. */
  async ipBatch(ns: Ns, lines: string[], family?: Family): Promise<void> {
    this.assertUsable();
    const fam = family === 6 ? ['-6'] : family === 4 ? ['-4'] : [];
    const r = await this.hostCmd('ip', [...fam, '-n', this.ns[ns], '-batch', '-'], lines.join('\n') + '\n');
    if (r.code !== 0) {
      throw new Error(`lab: ip batch in ${this.ns[ns]} failed (${r.code}): ${r.stderr.trim()}\n${lines.join('\n')}`);
    }
  }

  private runCapture(cmd: string, args: string[], opts: { timeoutMs: number; input?: string | undefined }): Promise<ExecResult> {
    return new Promise<ExecResult>((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      this.tracked.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8');
      child.stderr.setEncoding('utf8');
      child.stdout.on('data', (d: string) => {
        stdout += d;
      });
      child.stderr.on('data', (d: string) => {
        stderr += d;
      });
      const timer = setTimeout(() => {
        try {
          child.kill('SIGKILL');
        } catch {
          // gone
        }
        reject(new Error(`lab: '${cmd} ${args.join(' ')}' timed out after ${opts.timeoutMs} ms\nstdout: ${tail(stdout)}\nstderr: ${tail(stderr)}`));
      }, opts.timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        this.tracked.delete(child);
        reject(new Error(`lab: cannot run '${cmd}': ${e.message}`));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        this.tracked.delete(child);
        resolve({ code, signal, stdout, stderr });
      });
      child.stdin.on('error', () => undefined);
      if (opts.input !== undefined) child.stdin.end(opts.input);
      else child.stdin.end();
    });
  }

  private nsArgv(ns: Ns, cmd: string, args: string[], nofile?: number): string[] {
    this.assertUsable();
    const inner = nofile === undefined ? [cmd, ...args] : ['bash', '-c', 'ulimit -n "$0" || exit 97; exec "$@"', String(nofile), cmd, ...args];
    return ['netns', 'exec', this.ns[ns], ...inner];
  }

  /** One-shot command inside a namespace. */
  exec(ns: Ns, cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.runCapture('ip', this.nsArgv(ns, cmd, args, opts.nofile), { timeoutMs: opts.timeoutMs ?? 30000, input: opts.input });
  }

  /** exec() that throws unless the exit code is 0; returns stdout. */
  async execOk(ns: Ns, cmd: string, args: string[], opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(ns, cmd, args, opts);
    if (r.code !== 0) {
      throw new Error(`lab: '${cmd} ${args.join(' ')}' in ${this.ns[ns]} failed (${r.code}/${r.signal}): ${r.stderr.trim()} ${r.stdout.trim()}`);
    }
    return r.stdout;
  }

  /**
   * Start a long-running process inside a namespace and return the raw ChildProcess (stdio piped;
   * the caller must consume stdout/stderr). The PID is tracked and killed on destroy().
   */
  spawn(ns: Ns, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const stdio: StdioOptions = [opts.stdin ?? 'pipe', 'pipe', 'pipe'];
    const child = spawn('ip', this.nsArgv(ns, cmd, args, opts.nofile), { stdio, env: opts.env ?? process.env });
    if (child.pid === undefined) throw new Error(`lab: failed to spawn ${cmd} in ${this.ns[ns]}`);
    this.tracked.add(child);
    child.on('close', () => this.tracked.delete(child));
    child.on('error', () => this.tracked.delete(child));
    return child;
  }

  /** spawn() wrapped in a LabProcess that captures output and can wait for lines. */
  start(ns: Ns, cmd: string, args: string[], opts: SpawnOptions = {}): LabProcess {
    const child = this.spawn(ns, cmd, args, opts);
    const label = opts.label ?? `${ns}:${[cmd, ...args].map((a) => a.replace(/^.*\/test\/fixtures\//, '')).join(' ').slice(0, 120)}`;
    const p = new LabProcess(child, label);
    this.procs.add(p);
    return p;
  }

  // ---------------------------------------------------------------- topology

  /** Add another address to the server (and route to it from the gateway when off-subnet). */
  async addServerAddress(ip: string): Promise<void> {
    if (ip.includes(':')) {
      const onLink = ip.toLowerCase().startsWith('fd00:2::');
      await this.ipBatch('srv', [`addr add ${ip}/${onLink ? 64 : 128} dev ${IFACE.server} nodad`], 6);
      if (!onLink) await this.ipBatch('gw', [`route add ${ip}/128 via ${ADDR.server6}`], 6);
    } else {
      const onLink = ip.startsWith('10.10.2.');
      await this.ipBatch('srv', [`addr add ${ip}/${onLink ? 24 : 32} dev ${IFACE.server}`]);
      if (!onLink) await this.ipBatch('gw', [`route add ${ip}/32 via ${ADDR.server4}`]);
    }
  }

  private static ports(d: number | string | number[] | undefined): Array<string | undefined> {
    if (d === undefined) return [undefined];
    if (Array.isArray(d)) return d.map((p) => String(p));
    return [String(d)];
  }

  /** nat REDIRECT of TCP arriving from the client, in the gateway. */
  async redirect(o: RedirectOptions): Promise<void> {
    await this.fromClientRule(o.family, 'nat', o.dport, o.daddr, ['REDIRECT', '--to-ports', String(o.toPort)]);
  }

  /** One PREROUTING rule per destination port for TCP (or UDP) arriving from the client, in the gateway. */
  private async fromClientRule(
    family: 4 | 6,
    table: 'nat' | 'mangle',
    dport: number | string | number[] | undefined,
    daddr: string | undefined,
    target: string[],
    protocol: 'tcp' | 'udp' = 'tcp',
  ): Promise<void> {
    const tool = family === 6 ? 'ip6tables' : 'iptables';
    for (const port of Lab.ports(dport)) {
      await this.execOk('gw', tool, [
        '-w', '-t', table, '-A', 'PREROUTING', '-i', IFACE.gwCli, '-p', protocol,
        ...(daddr ? ['-d', daddr] : []),
        ...(port !== undefined ? ['--dport', port] : []),
        '-j', ...target,
      ]);
    }
  }

  /** mangle TPROXY of TCP (or UDP, `protocol`) arriving from the client + fwmark policy route to local, in the gateway. */
  async tproxy(o: TproxyOptions): Promise<void> {
    const family = o.family ?? 4;
    const table = o.table ?? 100;
    const mark = `0x${o.mark.toString(16)}`;
    await this.fromClientRule(family, 'mangle', o.dport, o.daddr, ['TPROXY', '--on-port', String(o.onPort), '--tproxy-mark', `${mark}/${mark}`], o.protocol ?? 'tcp');
    const key = `${family}/${mark}/${table}`;
    if (!this.tproxyRoutes.has(key)) {
      this.tproxyRoutes.add(key);
      await this.ipBatch(
        'gw',
        [`rule add fwmark ${mark}/${mark} lookup ${table}`, `route replace local ${family === 6 ? '::/0' : '0.0.0.0/0'} dev lo table ${table}`],
        family,
      );
    }
  }

  /** Append an iptables rule (argv after the tool name) in a namespace, e.g. a DROP. */
  async iptables(ns: Ns, family: Family, args: string[]): Promise<void> {
    await this.execOk(ns, family === 6 ? 'ip6tables' : 'iptables', ['-w', ...args]);
  }

  // ---------------------------------------------------------------- fixtures

  /** Start a fixture server (test/fixtures/servers/<kind>.js) and wait for its READY line. */
  async startServer(kind: string, args: string[], opts: StartServerOptions = {}): Promise<ServerHandle> {
    const proc = this.start(opts.ns ?? 'srv', 'node', [serverScript(kind), ...args], {
      nofile: opts.nofile,
      stdin: 'ignore',
      label: `server:${kind} ${args.join(' ')}`,
    });
    const line = await proc.waitForLine((l) => l.startsWith('READY '), opts.readyTimeoutMs ?? 10000, 'READY');
    return { proc, address: line.slice('READY '.length).trim() };
  }

  /** Start a fixture client (test/fixtures/clients/<kind>.js) in the client namespace. */
  startClient(kind: string, args: string[], opts: RunClientOptions = {}): LabProcess {
    return this.start(opts.ns ?? 'cli', 'node', [clientScript(kind), ...args], {
      nofile: opts.nofile,
      label: `client:${kind} ${args.join(' ')}`,
    });
  }

  /**
   * Run a fixture client to completion (bounded) and return its last JSON line with
   * "event":"result" (or its last JSON line).
   */
  async runClient(kind: string, args: string[], opts: RunClientOptions = {}): Promise<ClientRun> {
    const proc = this.startClient(kind, args, opts);
    const timeoutMs = opts.timeoutMs ?? 60000;
    const exit = await proc.waitExit(timeoutMs);
    if (!exit) {
      await proc.stop('SIGKILL', 1000);
      throw new Error(`client ${kind} did not finish within ${timeoutMs} ms\n${proc.diagnostics()}`);
    }
    const events = proc.events();
    const result = [...events].reverse().find((e) => e['event'] === 'result') ?? events[events.length - 1];
    if (!result) throw new Error(`client ${kind} printed no JSON result (exit ${JSON.stringify(exit)})\n${proc.diagnostics()}`);
    return { result, proc };
  }

  /** GET `path` from an HTTP endpoint inside the gateway namespace (splicegate's admin). */
  async admin(path: string, opts: { address?: string; timeoutMs?: number; method?: string; accept?: string } = {}): Promise<AdminResponse> {
    const address = opts.address ?? '127.0.0.1:9901';
    const timeoutMs = opts.timeoutMs ?? 3000;
    const args = [clientScript('http-get'), '--url', `http://${address}${path}`, '--timeout-ms', String(timeoutMs)];
    if (opts.method) args.push('--method', opts.method);
    if (opts.accept) args.push('--accept', opts.accept);
    const r = await this.exec('gw', 'node', args, {
      timeoutMs: timeoutMs + 10000,
    });
    const o = parseJsonObject(r.stdout.trim().split('\n').pop() ?? '');
    if (!o) return { status: 0, body: '', error: `http-get printed no result (exit ${r.code}): ${r.stderr.trim()}` };
    const status = typeof o['status'] === 'number' ? o['status'] : 0;
    const body = typeof o['body'] === 'string' ? o['body'] : '';
    const res: AdminResponse = { status, body };
    const headers = o['headers'];
    if (isJsonObject(headers)) res.headers = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, String(v)]));
    if (typeof o['error'] === 'string') res.error = o['error'];
    return res;
  }

  /** A temporary directory owned by the lab (configs, logs); removed by destroy(). */
  tmpDir(): string {
    this.assertUsable();
    if (this.tmp === null) this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${this.prefix}-`));
    return this.tmp;
  }

  private removeTmp(): void {
    if (this.tmp !== null) {
      fs.rmSync(this.tmp, { recursive: true, force: true });
      this.tmp = null;
    }
  }

  // ---------------------------------------------------------------- teardown

  private assertUsable(): void {
    if (this.destroyed) throw new Error(`lab ${this.prefix} is destroyed`);
  }

  /** Namespaces of this lab that still exist. */
  existingNamespaces(): string[] {
    const mine = new Set<string>(Object.values(this.ns));
    return listNetns().filter((n) => mine.has(n));
  }

  /**
   * Kill tracked processes (SIGTERM, then SIGKILL after graceMs), kill anything else left inside
   * the lab's namespaces (by PID), and delete the namespaces. Idempotent.
   */
  async destroy(graceMs = 2000): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const waits: Array<Promise<ExitInfo | null>> = [];
    for (const p of this.procs) {
      if (p.running) {
        p.signal('SIGTERM');
        waits.push(p.waitExit(graceMs));
      }
    }
    const raw = [...this.tracked].filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of raw) {
      if (![...this.procs].some((p) => p.child === c)) {
        try {
          c.kill('SIGTERM');
        } catch {
          // gone
        }
        waits.push(
          new Promise<null>((resolve) => {
            const t = setTimeout(() => resolve(null), graceMs);
            c.once('close', () => {
              clearTimeout(t);
              resolve(null);
            });
          }),
        );
      }
    }
    await Promise.all(waits);
    const killWaits: Array<Promise<void>> = [];
    for (const c of this.tracked) {
      if (c.exitCode === null && c.signalCode === null) {
        try {
          c.kill('SIGKILL');
        } catch {
          // gone
        }
        killWaits.push(
          new Promise<void>((resolve) => {
            const t = setTimeout(resolve, 3000);
            c.once('close', () => {
              clearTimeout(t);
              resolve();
            });
          }),
        );
      }
    }
    await Promise.all(killWaits);
    if (this.created) {
      for (const k of NS_KINDS) killAndDeleteNsSync(this.ns[k]);
    }
    this.removeTmp();
    liveLabs.delete(this);
    const left = this.existingNamespaces();
    if (left.length > 0) throw new Error(`lab: namespaces still present after destroy: ${left.join(', ')}`);
  }

  /** Synchronous best-effort teardown for process exit / signals. */
  destroySync(): void {
    for (const c of this.tracked) {
      if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    if (this.created) {
      for (const k of NS_KINDS) killAndDeleteNsSync(this.ns[k]);
    }
    this.removeTmp();
    this.destroyed = true;
    liveLabs.delete(this);
  }

  /** Everything captured from processes started via start()/startServer()/startClient(). */
  diagnostics(maxChars = 2000): string {
    return [...this.procs].map((p) => p.diagnostics(maxChars)).join('\n');
  }
}
