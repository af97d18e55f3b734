// HTTP load through the lab: nginx serving a small file in the server namespace, and wrk in the
// client namespace, whose exact summary (bench/lib/wrk-report.lua) is parsed rather than its text.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseWrk, type WrkResult } from '../../bench/lib/parse';
import type { Lab } from './lab';
import { repoRoot } from './paths';
import type { LabProcess } from './process';
import { sleep } from './util';

export const SMALL_FILE_BYTES = 1024;

/** nginx (one process, no master) on `listen` ("10.10.2.2:80") in the server namespace; GET /small. */
export async function startNginx(lab: Lab, listen: string): Promise<LabProcess> {
  const dir = fs.mkdtempSync(path.join(lab.tmpDir(), 'nginx-'));
  const www = path.join(dir, 'www');
  const tmp = path.join(dir, 'tmp');
  fs.mkdirSync(www);
  fs.mkdirSync(tmp);
  fs.writeFileSync(path.join(www, 'small'), Buffer.alloc(SMALL_FILE_BYTES, 'a'));
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(
    conf,
    [
      'user root;',
      'worker_processes 1;',
      'worker_rlimit_nofile 20000;',
      `pid ${dir}/nginx.pid;`,
      'error_log stderr warn;',
      'events { worker_connections 8192; multi_accept on; }',
      'http {',
      '  access_log off;',
      '  keepalive_timeout 300s;',
      '  keepalive_requests 100000000;',
      '  default_type application/octet-stream;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${tmp}/${t};`),
      `  server { listen ${listen} backlog=4096; root ${www}; }`,
      '}',
      '',
    ].join('\n'),
  );
  const proc = lab.start('srv', 'nginx', ['-p', dir, '-c', conf, '-g', 'daemon off; master_process off;'], { stdin: 'ignore', label: 'nginx' });
  const port = listen.replace(/^.*:/, '');
  const deadline = Date.now() + 10000;
  for (;;) {
    if (!proc.running) throw new Error(`nginx exited before listening\n${proc.diagnostics()}`);
    const r = await lab.exec('srv', 'ss', ['-Hltn', `sport = :${port}`]);
    if (r.stdout.trim() !== '') return proc;
    if (Date.now() > deadline) throw new Error(`nginx not listening on ${listen} after 10 s\n${proc.diagnostics()}`);
    await sleep(50);
  }
}

export interface WrkOptions {
  url: string;
  connections: number;
  seconds: number;
  /** Extra request headers, e.g. "Connection: close". */
  headers?: string[];
  /** wrk's per-request timeout (counted as an error): a liveness bound, generous on a shared machine. */
  timeoutS?: number;
}

/** Starts wrk in the client namespace; finishWrk() waits for it and parses its summary. */
export function startWrk(lab: Lab, o: WrkOptions): LabProcess {
  const args = ['-t1', `-c${o.connections}`, `-d${o.seconds}s`, `-T${o.timeoutS ?? 10}s`, '-s', path.join(repoRoot, 'bench', 'lib', 'wrk-report.lua')];
  for (const h of o.headers ?? []) args.push('-H', h);
  args.push(o.url);
  return lab.start('cli', 'wrk', args, { stdin: 'ignore', nofile: 4096, label: `wrk ${o.headers?.join(' ') ?? 'keep-alive'}` });
}

export async function finishWrk(proc: LabProcess, timeoutMs: number): Promise<WrkResult> {
  const exit = await proc.waitExit(timeoutMs);
  if (!exit) {
    await proc.stop('SIGKILL', 1000);
    throw new Error(`wrk did not finish within ${timeoutMs} ms\n${proc.diagnostics()}`);
  }
  if (exit.code !== 0) throw new Error(`wrk exited ${JSON.stringify(exit)}\n${proc.diagnostics()}`);
  return parseWrk(proc.stdout);
}

/** Ends a wrk run early (SIGINT: wrk stops its connections and prints its summary) and parses it. */
export async function stopWrk(proc: LabProcess, timeoutMs: number): Promise<WrkResult> {
  proc.signal('SIGINT');
  return finishWrk(proc, timeoutMs);
}
