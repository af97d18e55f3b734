// perf as a child process for bench/profile.ts: a `perf record -e cpu-clock -g` of some CPUs whose
// sampling is switched on and off around a piece of work through perf's control fd (so the window
// is exactly the work's, with no sleep), and `perf script` of the result in the fields that
// bench/lib/perf-attribution.ts parses.

import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { sleep } from '../../test/lab/util';

/** A `perf record` on the proxy CPU, started with its events off and switched by its control fd. */
export class PerfRecording {
  private readonly proc: ChildProcess;
  private readonly ctl: Writable;
  private readonly acks: string[] = [];
  private ackWaiter: (() => void) | null = null;
  private stderr = '';
  private readonly exited: Promise<number | null>;

  constructor(
    /** CPUs sampled (taskset list). */
    sampledCpus: string,
    /** CPUs perf itself runs on: elsewhere, so that on the sampled CPU only its interrupt remains. */
    ownCpus: string,
    readonly file: string,
    freq: number,
  ) {
    this.proc = spawn('taskset', ['-c', ownCpus, 'perf', 'record', '-e', 'cpu-clock', '-F', String(freq), '-C', sampledCpus, '-g', '-D', '-1', '--control', 'fd:3,4', '-o', file, '-q'], {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
    });
    this.ctl = this.proc.stdio[3] as Writable;
    const ack = this.proc.stdio[4] as Readable;
    ack.setEncoding('utf8');
    ack.on('data', (d: string) => {
      // perf writes "ack\n" with its terminating NUL.
      for (const line of d.split(/[\n\0]/).filter(Boolean)) this.acks.push(line);
      this.ackWaiter?.();
    });
    this.proc.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code) => resolve(code));
      // Not started at all (no taskset or perf): say so at the next command instead of waiting.
      this.proc.on('error', (e) => {
        this.stderr += `${e.message}\n`;
        resolve(null);
        this.ackWaiter?.();
      });
    });
    // A write to a perf that has gone fails here; command() reports it from the exit status.
    this.ctl.on('error', () => undefined);
  }

  /** Sends a control command and waits (bounded: a liveness limit) for perf's "ack". */
  private async command(cmd: 'enable' | 'disable'): Promise<void> {
    this.ctl.write(`${cmd}\n`);
    const deadline = Date.now() + 15000;
    while (this.acks.length === 0) {
      if (this.proc.exitCode !== null || this.proc.pid === undefined) throw new Error(`perf record exited (${this.proc.exitCode}) before acknowledging ${cmd}: ${this.stderr.trim()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`perf record did not acknowledge ${cmd} within 15 s: ${this.stderr.trim()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.ackWaiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.ackWaiter = null;
    }
    const a = this.acks.shift();
    if (a !== 'ack') throw new Error(`perf record answered ${JSON.stringify(a)} to ${cmd}`);
  }

  /** Samples while `body` runs; returns its result once perf has written its file. */
  async around<T>(body: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      await this.command('enable');
      try {
        result = await body();
      } finally {
        await this.command('disable');
      }
    } finally {
      this.proc.kill('SIGINT');
      const code = await Promise.race([this.exited, sleep(20000).then(() => 'timeout' as const)]);
      if (code === 'timeout') {
        this.proc.kill('SIGKILL');
        throw new Error('perf record did not finish within 20 s of SIGINT');
      }
    }
    if (!fs.existsSync(this.file)) throw new Error(`perf record wrote no ${this.file}: ${this.stderr.trim()}`);
    return result;
  }
}

/** `perf script` of a recording: the fields perf-attribution.ts parses. */
export async function perfScript(file: string): Promise<string> {
  const p = spawn('perf', ['script', '-i', file, '-F', 'comm,pid,tid,cpu,time,period,event,ip,sym,dso', '--no-inline'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  p.stdout.on('data', (d: Buffer) => out.push(d));
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await Promise.race([new Promise<number | null>((resolve) => p.on('exit', (c) => resolve(c))), sleep(120000).then(() => 'timeout' as const)]);
  if (code === 'timeout') {
    p.kill('SIGKILL');
    throw new Error('perf script took more than 120 s');
  }
  // Let the pipes drain after exit.
  await new Promise<void>((resolve) => (p.stdout.readableEnded ? resolve() : p.stdout.on('end', () => resolve())));
  if (code !== 0) throw new Error(`perf script exited ${code}: ${err.trim().slice(0, 2000)}`);
  return Buffer.concat(out).toString('utf8');
}
