// Typed wrappers around the fixture clients (test/fixtures/clients/*.js), which run inside the
// client namespace.

import { Lab, RunClientOptions } from './lab';
import { LabProcess } from './process';
import { JsonObject, parseJsonObject } from './util';

function need<T>(o: JsonObject, keys: string[], what: string, proc: LabProcess): T {
  for (const k of keys) {
    if (!(k in o)) throw new Error(`${what}: result lacks "${k}": ${JSON.stringify(o)}\n${proc.diagnostics()}`);
  }
  return o as unknown as T;
}

export interface ConnectManyResult {
  n: number;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  mismatches: JsonObject[];
  maxOpen: number;
  openTogether?: number;
  /** Remote (peer) IPs the server reported, with counts. */
  remotes: Record<string, number>;
  ms: number;
}

export interface ConnectManyOptions {
  target: string;
  n: number;
  concurrency?: number;
  together?: boolean;
  expectId?: string;
  expectLocal?: string;
  timeoutMs?: number;
  nofile?: number;
}

export async function connectMany(lab: Lab, o: ConnectManyOptions): Promise<ConnectManyResult & { proc: LabProcess }> {
  const args = ['--target', o.target, '--n', String(o.n), '--timeout-ms', String(o.timeoutMs ?? 20000)];
  if (o.concurrency !== undefined) args.push('--concurrency', String(o.concurrency));
  if (o.together) args.push('--together');
  if (o.expectId !== undefined) args.push('--expect-id', o.expectId);
  if (o.expectLocal !== undefined) args.push('--expect-local', o.expectLocal);
  const run: RunClientOptions = { timeoutMs: (o.timeoutMs ?? 20000) * 3 + 10000 };
  if (o.nofile !== undefined) run.nofile = o.nofile;
  const { result, proc } = await lab.runClient('connect-many', args, run);
  return { ...need<ConnectManyResult>(result, ['n', 'ok', 'failed', 'errors', 'remotes'], 'connect-many', proc), proc };
}

export interface ProbeResult {
  connected: boolean;
  connectError: string | null;
  connectMs: number | null;
  /** 'line': ended by the probe at the first complete line (untilLine). */
  closeKind: 'end' | 'close' | 'reset' | 'error' | 'timeout' | 'line' | null;
  closedAfterMs: number | null;
  bytes: number;
  firstLine: string | null;
  error?: string;
}

export async function probe(
  lab: Lab,
  o: { target: string; send?: string; sendHex?: string; waitMs?: number; untilLine?: boolean },
): Promise<ProbeResult & { proc: LabProcess }> {
  const args = ['--target', o.target, '--wait-ms', String(o.waitMs ?? 5000)];
  if (o.untilLine) args.push('--until-line');
  if (o.sendHex !== undefined) args.push('--send-hex', o.sendHex);
  if (o.send !== undefined) args.push('--send', o.send);
  const { result, proc } = await lab.runClient('probe', args, { timeoutMs: (o.waitMs ?? 5000) + 15000 });
  return { ...need<ProbeResult>(result, ['connected', 'closeKind', 'closedAfterMs', 'bytes'], 'probe', proc), proc };
}

export interface TransferResult {
  ok: boolean;
  sentBytes: number;
  sentSha256: string;
  recvBytes: number;
  recvSha256: string;
  ms: number;
  error?: string;
}

export interface TransferOptions {
  target: string;
  send: number;
  recv: number;
  rateBytesPerSec?: number;
  timeoutMs?: number;
}

function transferArgs(o: TransferOptions): string[] {
  const args = ['--target', o.target, '--send', String(o.send), '--recv', String(o.recv), '--timeout-ms', String(o.timeoutMs ?? 120000)];
  if (o.rateBytesPerSec) args.push('--rate-bytes-per-sec', String(o.rateBytesPerSec));
  return args;
}

/** Start a transfer client without waiting (for drain tests); use finishTransfer() to collect. */
export function startTransfer(lab: Lab, o: TransferOptions): LabProcess {
  return lab.startClient('transfer', transferArgs(o));
}

export async function finishTransfer(proc: LabProcess, timeoutMs: number): Promise<TransferResult> {
  const exit = await proc.waitExit(timeoutMs);
  if (!exit) {
    await proc.stop('SIGKILL', 1000);
    throw new Error(`transfer did not finish within ${timeoutMs} ms\n${proc.diagnostics()}`);
  }
  const result = proc.eventsNamed('result').pop();
  if (!result) throw new Error(`transfer printed no result\n${proc.diagnostics()}`);
  return need<TransferResult>(result, ['ok'], 'transfer', proc);
}

export async function transfer(lab: Lab, o: TransferOptions): Promise<TransferResult & { proc: LabProcess }> {
  const proc = startTransfer(lab, o);
  const r = await finishTransfer(proc, (o.timeoutMs ?? 120000) + 15000);
  return { ...r, proc };
}

export interface HalfCloseResult {
  ok: boolean;
  problems: string[];
  sentBytes: number | null;
  sentSha256: string | null;
  server: { bytes: number; sha256: string; replyBytes: number; replySha256: string } | null;
  replyBytes: number;
  replySha256: string;
  eofAfterMs: number | null;
  error?: string;
}

export async function halfClose(lab: Lab, o: { target: string; send: number; timeoutMs?: number }): Promise<HalfCloseResult & { proc: LabProcess }> {
  const t = o.timeoutMs ?? 30000;
  const { result, proc } = await lab.runClient('half-close', ['--target', o.target, '--send', String(o.send), '--timeout-ms', String(t)], {
    timeoutMs: t + 15000,
  });
  return { ...need<HalfCloseResult>(result, ['ok'], 'half-close', proc), proc };
}

export interface HeldInfo {
  n: number;
  ok: number;
  stillOpen: number;
  failed: number;
  errors: Record<string, number>;
  ms: number;
}

export interface ReleasedInfo {
  openAtRelease: number;
  droppedWhileHeld: number;
  /** Of the dropped ones, those the peer reset rather than ended. */
  droppedByReset: number;
  closed: number;
  ms: number;
}

/** The `hold` client: opens n connections, verifies each with a round-trip, holds until release(). */
export class HoldClient {
  readonly proc: LabProcess;

  constructor(lab: Lab, o: { target: string; n: number; concurrency?: number; nofile?: number; timeoutMs?: number }) {
    const args = ['--target', o.target, '--n', String(o.n), '--concurrency', String(o.concurrency ?? 256), '--timeout-ms', String(o.timeoutMs ?? 30000)];
    const run: RunClientOptions = {};
    if (o.nofile !== undefined) run.nofile = o.nofile;
    this.proc = lab.startClient('hold', args, run);
  }

  async waitHeld(timeoutMs: number): Promise<HeldInfo> {
    const line = await this.proc.waitForLine((l) => parseJsonObject(l)?.['event'] === 'held', timeoutMs, 'HELD');
    const o = parseJsonObject(line);
    if (!o) throw new Error('unreachable');
    return need<HeldInfo>(o, ['ok', 'stillOpen', 'failed'], 'hold', this.proc);
  }

  async release(timeoutMs: number): Promise<ReleasedInfo> {
    this.proc.write('release\n');
    const line = await this.proc.waitForLine((l) => parseJsonObject(l)?.['event'] === 'released', timeoutMs, 'released');
    const o = parseJsonObject(line);
    if (!o) throw new Error('unreachable');
    return need<ReleasedInfo>(o, ['openAtRelease', 'droppedWhileHeld', 'droppedByReset', 'closed'], 'hold', this.proc);
  }
}
