// What the kernel says about splicegate's listening sockets and what its supervisor logged: the
// observable side of "one socket per listener, owned by the process, shared by the workers".

import { Lab } from './lab';
import { Splicegate } from './splicegate';
import { sleep } from './util';

export interface ListenSocketView {
  /** LISTEN sockets on the port in the gateway namespace. */
  sockets: number;
  /** Every (pid, fd) holding one of them: the main thread's fd plus one dup per live worker. */
  holders: Array<{ pid: number; fd: number }>;
  raw: string;
}

export async function listenSockets(lab: Lab, port: number): Promise<ListenSocketView> {
  const raw = await lab.execOk('gw', 'ss', ['-Hltnp', `sport = :${port}`]);
  const lines = raw.split('\n').filter((l) => l.trim() !== '');
  const holders = [...raw.matchAll(/pid=(\d+),fd=(\d+)/g)].map((m) => ({ pid: Number(m[1]), fd: Number(m[2]) }));
  return { sockets: lines.length, holders, raw };
}

/** Polls (bounded) until pred holds for the port's listening sockets; returns the last view. */
export async function waitListenSockets(
  lab: Lab,
  port: number,
  pred: (v: ListenSocketView) => boolean,
  timeoutMs: number,
  what: string,
): Promise<ListenSocketView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await listenSockets(lab, port);
    if (pred(v)) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ss: ${v.raw}`);
    await sleep(50);
  }
}

/** Waits (bounded) until splicegate's stderr has a line matching re; returns that line. */
export async function waitForLog(sg: Splicegate, re: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = sg.proc.stderr.split('\n').find((l) => re.test(l));
    if (line !== undefined) return line;
    if (Date.now() >= deadline || (!sg.proc.running && sg.proc.exitInfo)) {
      throw new Error(`no log line matching ${re} within ${timeoutMs} ms\n${sg.diagnostics()}`);
    }
    await sleep(25);
  }
}

/** Index of the first stderr line matching re (-1 if none): to check the order of events. */
export function logIndex(sg: Splicegate, re: RegExp): number {
  return sg.proc.stderr.split('\n').findIndex((l) => re.test(l));
}
