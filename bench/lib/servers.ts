// The servers in the server namespace, pinned to the load CPUs: nginx (small file, 1 MiB file,
// /whoami), iperf3 -s, and the idle-connection echo server.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LabProcess } from '../../test/lab/process';
import { sleep } from '../../test/lab/util';
import { type BenchEnv, pinned, SERVER_PORTS } from './contenders';

export const SMALL_FILE_BYTES = 1024;
export const MID_FILE_BYTES = 24 * 1024;
export const BIG_FILE_BYTES = 1 << 20;

export class Servers {
  nginx: LabProcess | null = null;
  iperf: LabProcess | null = null;
  idle: LabProcess | null = null;
  nginxConf = '';

  constructor(private readonly env: BenchEnv) {}

  private startPinned(label: string, cmd: string, args: string[]): LabProcess {
    const p = pinned(this.env, this.env.loadCpus, cmd, args);
    return this.env.lab.start('srv', p.cmd, p.args, { nofile: this.env.nofile, stdin: 'ignore', label });
  }

  private async waitListening(proc: LabProcess, port: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!proc.running) throw new Error(`${proc.label} exited before listening on ${port}\n${proc.diagnostics()}`);
      const r = await this.env.lab.exec('srv', 'ss', ['-Hltn', `sport = :${port}`], { timeoutMs: 5000 });
      if (r.code === 0 && r.stdout.trim().length > 0) return;
      if (Date.now() >= deadline) throw new Error(`${proc.label} not listening on ${port} after ${timeoutMs} ms\n${proc.diagnostics()}`);
      await sleep(100);
    }
  }

  async start(): Promise<void> {
    await this.startNginx();
    await this.startIperf();
    await this.startIdle();
  }

  private async startNginx(): Promise<void> {
    const dir = path.join(this.env.tmpDir, 'nginx');
    const www = path.join(dir, 'www');
    fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
    fs.mkdirSync(www, { recursive: true });
    fs.writeFileSync(path.join(www, 'small'), Buffer.alloc(SMALL_FILE_BYTES, 'a'));
    const big = Buffer.alloc(BIG_FILE_BYTES);
    for (let i = 0; i < big.length; i++) big[i] = (i * 131 + 7) & 0xff;
    fs.writeFileSync(path.join(www, '1m'), big);
    // A body just over one 16 KiB read: what is left after the read that carries the head is
    // below the HTTP listener's splice threshold (the http-24k workload measures that threshold).
    fs.writeFileSync(path.join(www, '24k'), big.subarray(0, MID_FILE_BYTES));
    const tmp = path.join(dir, 'tmp');
    this.nginxConf = [
      'user root;',
      'worker_processes 1;',
      'worker_rlimit_nofile 20000;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      'error_log stderr warn;',
      'events { worker_connections 10000; multi_accept on; }',
      'http {',
      '  access_log off;',
      '  sendfile on;',
      '  tcp_nopush on;',
      '  tcp_nodelay on;',
      '  keepalive_timeout 300s;',
      '  keepalive_requests 100000000;',
      '  default_type application/octet-stream;',
      `  client_body_temp_path ${tmp}/body;`,
      `  proxy_temp_path ${tmp}/proxy;`,
      `  fastcgi_temp_path ${tmp}/fastcgi;`,
      `  uwsgi_temp_path ${tmp}/uwsgi;`,
      `  scgi_temp_path ${tmp}/scgi;`,
      '  server {',
      `    listen ${SERVER_PORTS.http} backlog=4096;`,
      `    root ${www};`,
      '    location = /whoami { return 200 "$server_addr:$server_port $remote_addr\\n"; }',
      '  }',
      '}',
      '',
    ].join('\n');
    const conf = path.join(dir, 'nginx.conf');
    fs.writeFileSync(conf, this.nginxConf);
    // master_process off: one process, so the PID we hold is the one serving.
    this.nginx = this.startPinned('nginx', 'nginx', ['-p', dir, '-c', conf, '-g', 'daemon off; master_process off;']);
    await this.waitListening(this.nginx, SERVER_PORTS.http, 10000);
  }

  async startIperf(): Promise<void> {
    this.iperf = this.startPinned('iperf3-server', 'iperf3', ['-s', '-p', String(SERVER_PORTS.iperf), '--rcv-timeout', '10000']);
    await this.waitListening(this.iperf, SERVER_PORTS.iperf, 10000);
  }

  /** After a failed iperf3 client run the server may still be busy with it: start a fresh one. */
  async restartIperf(): Promise<void> {
    if (this.iperf) await this.iperf.stop('SIGKILL', 2000);
    await this.startIperf();
  }

  private async startIdle(): Promise<void> {
    const script = path.join(this.env.repoRoot, 'dist', 'bench', 'idle-conns.js');
    this.idle = this.startPinned('idle-server', process.execPath, [script, 'server', String(SERVER_PORTS.idle)]);
    await this.idle.waitForLine((l) => l.trim() === 'READY', 10000, 'READY');
  }

  pids(): number[] {
    return [this.nginx, this.iperf, this.idle].filter((p): p is LabProcess => p !== null && p.running).map((p) => p.pid);
  }
}
