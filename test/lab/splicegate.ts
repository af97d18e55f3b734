// Run splicegate (`node dist/src/cli.js run --config FILE`) inside a lab's gateway namespace.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify as yamlStringify } from 'yaml';
import { hardNofileLimit, Lab } from './lab';
import { cliPath } from './paths';
import { ExitInfo, LabProcess } from './process';
import { isJsonObject, JsonObject, JsonValue, sleep, tail } from './util';

export interface ListenerSpec {
  name: string;
  /** "0.0.0.0:15001" or "[::]:15006" */
  address: string;
  mode?: 'original_dst' | 'http';
  /** listeners[].protocol; udp needs transparent. */
  protocol?: 'tcp' | 'udp';
  transparent?: boolean;
  /** listeners[].http (mode: http). */
  http?: {
    header_name?: string;
    trusted_sources?: string[];
    strip_header?: boolean;
    connect?: boolean;
    request_head_timeout?: string;
    max_request_head_bytes?: number;
  };
  proxy_protocol?: { trusted_sources: string[]; required?: boolean; timeout?: string };
  /** The listener's own `policy:` (replaces the top-level one). */
  policy?: JsonObject;
}

export interface SplicegateOptions {
  workers?: number | 'auto';
  /** Admin address inside the gateway namespace; default 127.0.0.1:9901. */
  admin?: string;
  listeners: ListenerSpec[];
  cluster?: {
    connect_timeout?: string;
    idle_timeout?: string;
    cleanup_interval?: string;
    upstream_mark?: number;
    max_hosts?: number;
    max_connections?: number;
    max_pending?: number;
    max_downstream_connections?: number;
    upstream_port_override?: number;
    preconnect?: { ports: number[]; per_host?: number; ttl?: string };
    send_proxy_protocol?: 'off' | 'v1' | 'v2';
    original_source?: boolean;
    http_pool?: { max_idle_per_host?: number; idle_timeout?: string };
    udp_session_timeout?: string;
    udp_max_sessions_per_worker?: number;
  };
  /** Extra `splicegate run` arguments (e.g. --latency-log FILE). */
  args?: string[];
  /** Extra environment for the splicegate process (e.g. SPLICEGATE_TEST_HOOKS=1). */
  env?: Record<string, string>;
  drain_timeout?: string;
  /** RLIMIT_NOFILE for the process; default: the hard limit. */
  nofile?: number;
  readyTimeoutMs?: number;
  /** Extra top-level YAML keys (merged last). */
  extra?: JsonObject;
  /**
   * Run an Envoy bootstrap instead (`run --envoy FILE`, docs/ENVOY.md); the splicegate keys above
   * (listeners, cluster, ...) are then unused. Its admin address must be `admin` (default 127.0.0.1:9901).
   */
  envoyFile?: string;
  /** A command that execs `node cli.js run ...` (its argv follows), e.g. systemd-socket-activate -l ADDR. */
  launcher?: string[];
  /** Runs once the process is spawned, before start() waits for GET /ready (signals during start-up). */
  beforeReady?: (sg: Splicegate) => Promise<void>;
}

export const STAT_NAMES = [
  'downstream_cx_total',
  'downstream_cx_active',
  'upstream_cx_total',
  'upstream_cx_active',
  'upstream_cx_connect_fail',
  'upstream_cx_connect_timeout',
  'no_original_dst',
  'loop_rejected',
  'bytes_sent',
  'bytes_received',
  'proxy_protocol_accepted',
  'proxy_protocol_error',
  'proxy_protocol_timeout',
  'proxy_protocol_untrusted',
  'proxy_protocol_sent',
  'original_source_failed',
] as const;

export type StatName = (typeof STAT_NAMES)[number];
export type Stats = Record<StatName, number> & { raw: JsonObject; form: string };

/**
 * Find the numeric value of `name` in a /stats?format=json body. Supported forms, in order:
 *   top-level   {"downstream_cx_total": 3, ...}
 *   nested      {"counters": {"downstream_cx_total": 3}, "gauges": {...}}  (any object key)
 *   list        {"stats": [{"name": "downstream_cx_total", "value": 3}, ...]}
 * A key may also be dotted, e.g. "splicegate.downstream_cx_total", but a per-listener counter
 * ("listener.<name>.downstream_cx_total") is never taken for the process's total.
 */
function findStat(body: JsonObject, name: string): { value: number; form: string } | null {
  const match = (k: string): boolean => k === name || (k.endsWith(`.${name}`) && !k.startsWith('listener.'));
  for (const [k, v] of Object.entries(body)) {
    if (match(k) && typeof v === 'number') return { value: v, form: 'top-level' };
  }
  for (const [outer, v] of Object.entries(body)) {
    if (isJsonObject(v)) {
      for (const [k, w] of Object.entries(v)) {
        if (match(k) && typeof w === 'number') return { value: w, form: `nested:${outer}` };
      }
    }
    if (Array.isArray(v)) {
      for (const item of v as JsonValue[]) {
        if (isJsonObject(item) && typeof item['name'] === 'string' && match(item['name']) && typeof item['value'] === 'number') {
          return { value: item['value'], form: `list:${outer}` };
        }
      }
    }
  }
  return null;
}

/**
 * A counter outside STAT_NAMES (newer or listener-specific ones) from a snapshot's raw body;
 * throws when the proxy does not report it, so a renamed counter fails the test instead of
 * reading as 0.
 */
export function counter(s: Stats, name: string): number {
  const f = findStat(s.raw, name);
  if (f === null) throw new Error(`stats: no numeric counter ${name} in ${tail(JSON.stringify(s.raw), 2000)}`);
  return f.value;
}

export function parseStats(text: string): Stats {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`stats: not JSON: ${tail(text, 1000)}`);
  }
  if (!isJsonObject(body)) throw new Error(`stats: not a JSON object: ${tail(text, 1000)}`);
  const out: Partial<Record<StatName, number>> = {};
  const forms = new Set<string>();
  const missing: string[] = [];
  for (const n of STAT_NAMES) {
    const f = findStat(body, n);
    if (f) {
      out[n] = f.value;
      forms.add(f.form);
    } else missing.push(n);
  }
  if (missing.length > 0) throw new Error(`stats: missing numeric field(s) ${missing.join(', ')} in ${tail(text, 2000)}`);
  return { ...(out as Record<StatName, number>), raw: body, form: [...forms].join(',') };
}

export class Splicegate {
  readonly lab: Lab;
  readonly proc: LabProcess;
  readonly configPath: string;
  readonly configText: string;
  readonly adminAddress: string;
  private readonly tmpDir: string;

  private constructor(lab: Lab, proc: LabProcess, configPath: string, configText: string, adminAddress: string, tmpDir: string) {
    this.lab = lab;
    this.proc = proc;
    this.configPath = configPath;
    this.configText = configText;
    this.adminAddress = adminAddress;
    this.tmpDir = tmpDir;
  }

  static buildConfig(o: SplicegateOptions): string {
    const doc: JsonObject = {
      workers: o.workers ?? 2,
      admin: { address: o.admin ?? '127.0.0.1:9901' },
      listeners: o.listeners.map((l) => ({
        name: l.name,
        address: l.address,
        mode: l.mode ?? 'original_dst',
        ...(l.protocol === undefined ? {} : { protocol: l.protocol }),
        transparent: l.transparent ?? false,
        ...(l.proxy_protocol === undefined ? {} : { proxy_protocol: l.proxy_protocol }),
        ...(l.policy === undefined ? {} : { policy: l.policy }),
        ...(l.http === undefined ? {} : { http: l.http }),
      })),
      cluster: {
        connect_timeout: o.cluster?.connect_timeout ?? '5s',
        idle_timeout: o.cluster?.idle_timeout ?? '1h',
        cleanup_interval: o.cluster?.cleanup_interval ?? '5s',
        upstream_mark: o.cluster?.upstream_mark ?? 0,
        ...(o.cluster?.max_hosts === undefined ? {} : { max_hosts: o.cluster.max_hosts }),
        ...(o.cluster?.max_connections === undefined ? {} : { max_connections: o.cluster.max_connections }),
        ...(o.cluster?.max_pending === undefined ? {} : { max_pending: o.cluster.max_pending }),
        ...(o.cluster?.max_downstream_connections === undefined ? {} : { max_downstream_connections: o.cluster.max_downstream_connections }),
        ...(o.cluster?.upstream_port_override === undefined ? {} : { upstream_port_override: o.cluster.upstream_port_override }),
        ...(o.cluster?.preconnect === undefined ? {} : { preconnect: o.cluster.preconnect }),
        ...(o.cluster?.send_proxy_protocol === undefined ? {} : { send_proxy_protocol: o.cluster.send_proxy_protocol }),
        ...(o.cluster?.original_source === undefined ? {} : { original_source: o.cluster.original_source }),
        ...(o.cluster?.http_pool === undefined ? {} : { http_pool: o.cluster.http_pool }),
        ...(o.cluster?.udp_session_timeout === undefined ? {} : { udp_session_timeout: o.cluster.udp_session_timeout }),
        ...(o.cluster?.udp_max_sessions_per_worker === undefined ? {} : { udp_max_sessions_per_worker: o.cluster.udp_max_sessions_per_worker }),
      },
      drain_timeout: o.drain_timeout ?? '10s',
      ...(o.extra ?? {}),
    };
    return yamlStringify(doc);
  }

  /** Write the config, start splicegate in the gateway namespace and wait for GET /ready == 200. */
  static async start(lab: Lab, o: SplicegateOptions): Promise<Splicegate> {
    if (!fs.existsSync(cliPath)) {
      throw new Error(`splicegate CLI not built: ${cliPath} does not exist (run the build first)`);
    }
    const tmpDir = fs.mkdtempSync(path.join(lab.tmpDir(), 'splicegate-'));
    const configPath = o.envoyFile ?? path.join(tmpDir, 'splicegate.yaml');
    const configText = o.envoyFile === undefined ? Splicegate.buildConfig(o) : fs.readFileSync(o.envoyFile, 'utf8');
    if (o.envoyFile === undefined) fs.writeFileSync(configPath, configText);
    const source = o.envoyFile === undefined ? ['--config', configPath] : ['--envoy', configPath];
    const nofile = o.nofile ?? hardNofileLimit();
    const argv = [process.execPath, cliPath, 'run', ...source, ...(o.args ?? [])];
    const [command, ...launcherArgs] = [...(o.launcher ?? []), ...argv];
    const proc = lab.start('gw', command ?? process.execPath, [...launcherArgs], {
      nofile,
      stdin: 'ignore',
      label: 'splicegate',
      ...(o.env ? { env: { ...process.env, ...o.env } } : {}),
    });
    const sg = new Splicegate(lab, proc, configPath, configText, o.admin ?? '127.0.0.1:9901', tmpDir);
    await o.beforeReady?.(sg);
    await sg.waitReady(o.readyTimeoutMs ?? 15000);
    return sg;
  }

  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      if (!this.proc.running) {
        throw new Error(`splicegate exited before becoming ready\n${this.diagnostics()}`);
      }
      const r = await this.lab.admin('/ready', { address: this.adminAddress, timeoutMs: 1000 });
      if (r.status === 200) return;
      last = `status ${r.status} ${r.error ?? ''} ${r.body.slice(0, 200)}`;
      if (Date.now() >= deadline) {
        throw new Error(`splicegate not ready after ${timeoutMs} ms (last /ready: ${last})\n${this.diagnostics()}`);
      }
      await sleep(100);
    }
  }

  async adminGet(p: string): Promise<{ status: number; body: string; error?: string }> {
    return this.lab.admin(p, { address: this.adminAddress });
  }

  async adminPost(p: string): Promise<{ status: number; body: string; error?: string }> {
    return this.lab.admin(p, { address: this.adminAddress, method: 'POST' });
  }

  /** GET /stats?format=json, parsed (top-level or nested forms, see parseStats). */
  async stats(): Promise<Stats> {
    const r = await this.adminGet('/stats?format=json');
    if (r.status !== 200) {
      throw new Error(`GET /stats?format=json -> ${r.status} ${r.error ?? ''} ${tail(r.body, 500)}\n${this.diagnostics()}`);
    }
    return parseStats(r.body);
  }

  /** Poll stats until `pred` holds; throws with the last stats and diagnostics at the deadline. */
  async waitStats(pred: (s: Stats) => boolean, timeoutMs: number, what: string): Promise<Stats> {
    const deadline = Date.now() + timeoutMs;
    let last: Stats | null = null;
    let lastErr = '';
    for (;;) {
      try {
        last = await this.stats();
        if (pred(last)) return last;
      } catch (e) {
        lastErr = e instanceof Error ? e.message : String(e);
      }
      if (Date.now() >= deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for stats: ${what}\nlast stats: ${last ? JSON.stringify(Splicegate.brief(last)) : lastErr}\n${this.diagnostics()}`,
        );
      }
      await sleep(150);
    }
  }

  static brief(s: Stats): Record<StatName, number> {
    const out: Partial<Record<StatName, number>> = {};
    for (const n of STAT_NAMES) out[n] = s[n];
    return out as Record<StatName, number>;
  }

  /** Send `signal` and wait (bounded) for exit; returns the exit code (null if killed by a signal). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20000): Promise<number | null> {
    const e = await this.stopInfo(signal, timeoutMs);
    return e.code;
  }

  async stopInfo(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20000): Promise<ExitInfo> {
    if (!this.proc.running && this.proc.exitInfo) return this.proc.exitInfo;
    this.proc.signal(signal);
    const e = await this.proc.waitExit(timeoutMs);
    if (e) return e;
    this.proc.signal('SIGKILL');
    const k = await this.proc.waitExit(5000);
    throw new Error(`splicegate did not exit within ${timeoutMs} ms of ${signal} (SIGKILLed: ${JSON.stringify(k)})\n${this.diagnostics()}`);
  }

  get stdout(): string {
    return this.proc.stdout;
  }

  get stderr(): string {
    return this.proc.stderr;
  }

  diagnostics(maxChars = 6000): string {
    return `${this.proc.diagnostics(maxChars)}\n--- config ---\n${this.configText}`;
  }

  /** Stats (best effort) + output, for assertion messages. */
  async fullDiagnostics(): Promise<string> {
    let s = '';
    try {
      s = JSON.stringify(Splicegate.brief(await this.stats()));
    } catch (e) {
      s = `(stats unavailable: ${e instanceof Error ? e.message.split('\n')[0] : String(e)})`;
    }
    return `stats: ${s}\n${this.diagnostics()}`;
  }

  /** Stop (if running) and remove the temp config. */
  async dispose(): Promise<void> {
    if (this.proc.running) await this.proc.stop('SIGTERM', 3000);
    fs.rmSync(this.tmpDir, { recursive: true, force: true });
  }
}
