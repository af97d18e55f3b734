// What a process holds, read from outside it: resident memory and open fds from /proc, a stat by
// name from a /stats body, and TCP queue sizes from `ss` inside a lab namespace. Used by the
// resource fault tests and the soak run.

import * as fs from 'node:fs';
import type { Lab, Ns } from './lab';
import type { Stats } from './splicegate';

/** VmRSS in bytes; throws if the process is gone (a crash must not read as "small"). */
export function rssBytes(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(text);
  if (!m) throw new Error(`/proc/${pid}/status has no VmRSS`);
  return Number(m[1]) * 1024;
}

/** Open file descriptors of a process (entries of /proc/<pid>/fd). */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The process's RLIMIT_NOFILE soft limit, from /proc/<pid>/limits. */
export function nofileLimit(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/limits`, 'utf8');
  const m = /^Max open files\s+(\d+)/m.exec(text);
  if (!m) throw new Error(`/proc/${pid}/limits has no "Max open files"`);
  return Number(m[1]);
}

/** Any numeric field of a parsed /stats?format=json body (the flat form the admin server writes). */
export function stat(s: Stats, name: string): number {
  const v = s.raw[name];
  if (typeof v !== 'number') throw new Error(`stats: no numeric "${name}" in ${JSON.stringify(s.raw).slice(0, 500)}`);
  return v;
}

export interface TcpQueue {
  local: string;
  peer: string;
  /** Bytes received and not yet read by the owner. */
  recvQ: number;
  /** Bytes written by the owner and not yet acknowledged by the peer. */
  sendQ: number;
}

/**
 * Established TCP sockets in namespace `ns` matching an `ss` filter (e.g. "dport = :8090"), with
 * their queues. `ss -tnH` columns: State Recv-Q Send-Q Local Peer.
 */
export async function tcpQueues(lab: Lab, ns: Ns, filter: string): Promise<TcpQueue[]> {
  const out = await lab.execOk(ns, 'ss', ['-tnH', 'state', 'established', ...filter.split(' ')]);
  const rows: TcpQueue[] = [];
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    // With a `state` filter ss omits the State column.
    const [recvQ, sendQ, local, peer] = f;
    rows.push({ local: local ?? '', peer: peer ?? '', recvQ: Number(recvQ), sendQ: Number(sendQ) });
  }
  return rows;
}

export const MiB = 1024 * 1024;

export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

/** Connections waiting in the accept queue of the TCP listener on `port` in namespace `ns`. */
export async function acceptQueue(lab: Lab, ns: Ns, port: number): Promise<number> {
  // For a listening socket ss shows the accept queue's length as Recv-Q.
  const out = await lab.execOk(ns, 'ss', ['-ltnH', `sport = :${port}`]);
  let total = 0;
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 4) total += Number(f[1]);
  }
  return total;
}
