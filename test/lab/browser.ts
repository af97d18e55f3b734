// Headless Chromium inside the lab's gateway namespace, where the admin endpoint listens on
// loopback. The namespace has only the lab's links, and the flags below turn off Chromium's own
// background requests, so the browser reaches nothing but the page under test.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { Lab } from './lab';

export const CHROMIUM = process.env.SPLICEGATE_CHROMIUM ?? 'chromium';

const FLAGS = [
  '--headless',
  // The lab runs as root, which Chromium's sandbox refuses; the page is our own.
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-extensions',
  '--disable-dev-shm-usage',
  '--hide-scrollbars',
];

export interface BrowserRun {
  stdout: string;
  stderr: string;
}

/**
 * Loads url and lets the page run for virtualTimeMs of virtual time (timers advance, and virtual
 * time waits while requests are pending, so N seconds means the page's N-second worth of polling,
 * however slow the machine), then dumps the DOM.
 */
async function run(lab: Lab, url: string, virtualTimeMs: number, extra: string[], timeoutMs: number): Promise<BrowserRun> {
  const profile = fs.mkdtempSync(path.join(lab.tmpDir(), 'chromium-'));
  const args = [...FLAGS, `--user-data-dir=${profile}`, `--virtual-time-budget=${virtualTimeMs}`, ...extra, url];
  const r = await lab.exec('gw', CHROMIUM, args, { timeoutMs });
  if (r.code !== 0) throw new Error(`${CHROMIUM} exited ${r.code}/${r.signal}: ${r.stderr.slice(-2000)}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** The DOM after the page ran for virtualTimeMs (document.documentElement.outerHTML). */
export async function dumpDom(lab: Lab, url: string, virtualTimeMs: number, timeoutMs = 60000): Promise<string> {
  const { stdout } = await run(lab, url, virtualTimeMs, ['--dump-dom'], timeoutMs);
  if (!/<\/html>\s*$/.test(stdout)) throw new Error(`no DOM from ${CHROMIUM}: ${stdout.slice(0, 500)}`);
  return stdout;
}

/**
 * A live page in headless Chromium, driven over the DevTools protocol on a pipe (fds 3 and 4,
 * `--remote-debugging-pipe`: no port to open). Real time, unlike dumpDom: for waiting until the page
 * shows something that happens after it loaded.
 */
export class BrowserPage {
  private nextId = 1;
  private buffer = '';
  private stderr = '';
  private readonly pending = new Map<number, { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  private sessionId = '';

  private constructor(
    private readonly child: ChildProcess,
    private readonly toBrowser: Writable,
  ) {}

  static async open(lab: Lab, url: string, size: { width: number; height: number }): Promise<BrowserPage> {
    const profile = fs.mkdtempSync(path.join(lab.tmpDir(), 'chromium-'));
    const args = ['netns', 'exec', lab.ns.gw, CHROMIUM, ...FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-pipe', `--window-size=${size.width},${size.height}`, 'about:blank'];
    const child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    const toBrowser = child.stdio[3] as Writable;
    const fromBrowser = child.stdio[4] as Readable;
    const page = new BrowserPage(child, toBrowser);
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => (page.stderr = (page.stderr + d).slice(-4000)));
    fromBrowser.setEncoding('utf8');
    fromBrowser.on('data', (d: string) => page.receive(d));
    child.on('close', () => page.failAll(new Error(`${CHROMIUM} exited: ${page.stderr}`)));
    toBrowser.on('error', () => undefined);
    try {
      const { targetId } = (await page.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
      const { sessionId } = (await page.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
      page.sessionId = sessionId;
      await page.send('Page.navigate', { url });
      return page;
    } catch (err) {
      await page.close();
      throw err;
    }
  }

  private receive(data: string): void {
    this.buffer += data;
    for (let end = this.buffer.indexOf('\0'); end >= 0; end = this.buffer.indexOf('\0')) {
      const message = JSON.parse(this.buffer.slice(0, end)) as { id?: number; result?: Record<string, unknown>; error?: { message: string } };
      this.buffer = this.buffer.slice(end + 1);
      const waiter = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!waiter || message.id === undefined) continue;
      this.pending.delete(message.id);
      if (message.error) waiter.reject(new Error(message.error.message));
      else waiter.resolve(message.result ?? {});
    }
  }

  private failAll(err: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(err);
    this.pending.clear();
  }

  private send(method: string, params: Record<string, unknown> = {}, timeoutMs = 30000): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    const message: Record<string, unknown> = { id, method, params };
    if (this.sessionId !== '' && !method.startsWith('Target.') && !method.startsWith('Browser.')) message.sessionId = this.sessionId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`DevTools ${method}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.toBrowser.write(JSON.stringify(message) + '\0');
    });
  }

  /** Evaluates a JS expression in the page and returns its (JSON-serialisable) value. */
  async evaluate<T>(expression: string): Promise<T> {
    const r = (await this.send('Runtime.evaluate', { expression, returnByValue: true })) as {
      result?: { value?: T };
      exceptionDetails?: { text?: string };
    };
    if (r.exceptionDetails) throw new Error(`page: ${r.exceptionDetails.text ?? 'exception'} in ${expression}`);
    return r.result?.value as T;
  }

  /** A PNG of the viewport. */
  async screenshot(): Promise<Buffer> {
    const { data } = (await this.send('Page.captureScreenshot', { format: 'png' })) as { data: string };
    return Buffer.from(data, 'base64');
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const closed = new Promise<void>((r) => this.child.once('close', () => r()));
    await this.send('Browser.close', {}, 5000).catch(() => undefined);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await closed;
    clearTimeout(timer);
  }
}
