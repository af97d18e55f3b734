// A tracked child process started inside a lab namespace, with captured output, line waiting and
// bounded stop.

import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { appendBounded, JsonObject, parseJsonObject, tail } from './util';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const MAX_CAPTURE = 4 * 1024 * 1024;
const MAX_LINES = 200_000;

export class LabProcess {
  readonly child: ChildProcess;
  readonly label: string;
  readonly pid: number;
  /** Captured stdout / stderr (tail, bounded). */
  stdout = '';
  stderr = '';
  /** Complete stdout lines seen so far. */
  readonly lines: string[] = [];
  exitInfo: ExitInfo | null = null;
  readonly exited: Promise<ExitInfo>;
  private partial = '';
  private readonly emitter = new EventEmitter();

  constructor(child: ChildProcess, label: string) {
    this.child = child;
    this.label = label;
    if (child.pid === undefined) throw new Error(`lab: failed to spawn ${label}`);
    this.pid = child.pid;
    this.emitter.setMaxListeners(0);
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => this.onStdout(d));
    child.stderr?.on('data', (d: string) => {
      this.stderr = appendBounded(this.stderr, d, MAX_CAPTURE);
    });
    this.exited = new Promise<ExitInfo>((resolve) => {
      child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.partial) this.pushLine(this.partial);
        this.partial = '';
        this.exitInfo = { code, signal };
        this.emitter.emit('exit');
        resolve(this.exitInfo);
      });
    });
    child.on('error', (e) => {
      this.stderr = appendBounded(this.stderr, `\n[spawn error] ${e.message}\n`, MAX_CAPTURE);
    });
  }

  private onStdout(d: string): void {
    this.stdout = appendBounded(this.stdout, d, MAX_CAPTURE);
    const parts = (this.partial + d).split('\n');
    this.partial = parts.pop() ?? '';
    for (const p of parts) this.pushLine(p);
  }

  private pushLine(line: string): void {
    if (this.lines.length < MAX_LINES) this.lines.push(line);
    this.emitter.emit('line', line);
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  /** Stdout lines that are JSON objects. */
  events(): JsonObject[] {
    const out: JsonObject[] = [];
    for (const l of this.lines) {
      const o = parseJsonObject(l);
      if (o) out.push(o);
    }
    return out;
  }

  /** JSON events whose "event" field equals `name`. */
  eventsNamed(name: string): JsonObject[] {
    return this.events().filter((e) => e['event'] === name);
  }

  /** Resolve with the first stdout line (from index `from`) satisfying `pred`. */
  waitForLine(pred: (line: string) => boolean, timeoutMs: number, what: string, from = 0): Promise<string> {
    for (let i = from; i < this.lines.length; i++) {
      const l = this.lines[i];
      if (l !== undefined && pred(l)) return Promise.resolve(l);
    }
    return new Promise<string>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        this.emitter.removeListener('line', onLine);
        this.emitter.removeListener('exit', onExit);
      };
      const onLine = (l: string): void => {
        if (pred(l)) {
          cleanup();
          resolve(l);
        }
      };
      const onExit = (): void => {
        cleanup();
        reject(new Error(`${this.label} exited (${JSON.stringify(this.exitInfo)}) before ${what}\n${this.diagnostics()}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} from ${this.label}\n${this.diagnostics()}`));
      }, timeoutMs);
      this.emitter.on('line', onLine);
      this.emitter.on('exit', onExit);
      if (this.exitInfo) onExit();
    });
  }

  /** Resolve when `count` JSON events satisfy `pred`. */
  async waitForEvents(pred: (e: JsonObject) => boolean, count: number, timeoutMs: number, what: string): Promise<JsonObject[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.events().filter(pred);
      if (got.length >= count) return got;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (have ${got.length}/${count}) from ${this.label}\n${this.diagnostics()}`);
      }
      if (!this.running) throw new Error(`${this.label} exited before ${what} (have ${got.length}/${count})\n${this.diagnostics()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(left, 200));
        function done(): void {
          clearTimeout(t);
          resolve();
        }
        this.emitter.once('line', done);
        this.emitter.once('exit', done);
      });
    }
  }

  write(text: string): void {
    this.child.stdin?.write(text);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) {
      try {
        process.kill(this.pid, sig);
      } catch {
        // already gone
      }
    }
  }

  /** Wait for exit up to timeoutMs; null if still running. */
  async waitExit(timeoutMs: number): Promise<ExitInfo | null> {
    if (this.exitInfo) return this.exitInfo;
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, t]);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** SIGTERM (or `sig`), then SIGKILL after graceMs. */
  async stop(sig: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<ExitInfo> {
    if (this.exitInfo) return this.exitInfo;
    this.signal(sig);
    const e = await this.waitExit(graceMs);
    if (e) return e;
    this.signal('SIGKILL');
    const k = await this.waitExit(5000);
    return k ?? { code: null, signal: 'SIGKILL' };
  }

  diagnostics(maxChars = 3000): string {
    return [
      `--- ${this.label} (pid ${this.pid}, exit ${JSON.stringify(this.exitInfo)}) ---`,
      `stdout (tail): ${tail(this.stdout, maxChars)}`,
      `stderr (tail): ${tail(this.stderr, maxChars)}`,
    ].join('\n');
  }
}
