// Idle relayed connections for the memory-per-connection measurement.
//
//   node dist/bench/idle-conns.js server PORT
//     Accepts connections, echoes what it reads, keeps them open. Prints READY, then
//     {"active":N} lines (at most every 200 ms, when the count changed).
//   node dist/bench/idle-conns.js client HOST:PORT N [CONCURRENCY] [TIMEOUT_MS]
//     Opens N connections (CONCURRENCY at once), verifies each with one echo round trip through
//     the proxy, prints {"event":"held","ok":N,"failed":F,"ms":T}; on a line "release" on stdin
//     (or stdin EOF) ends them all, waits for them to close and prints {"event":"released",...}.
// Needs a raised `ulimit -n`.

import * as net from 'node:net';
import * as readline from 'node:readline';

function emit(o: Record<string, number | string | Record<string, number>>): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

function server(port: number): void {
  let active = 0;
  let dirty = false;
  const srv = net.createServer({ allowHalfOpen: true }, (sock) => {
    active += 1;
    dirty = true;
    sock.on('data', (d) => sock.write(d));
    sock.on('end', () => sock.end());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      active -= 1;
      dirty = true;
    });
  });
  srv.listen({ port, host: '0.0.0.0', backlog: 4096 }, () => process.stdout.write('READY\n'));
  setInterval(() => {
    if (!dirty) return;
    dirty = false;
    emit({ active });
  }, 200);
  process.on('SIGTERM', () => process.exit(0));
}

function connectOne(host: string, port: number, i: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, allowHalfOpen: true });
    const msg = Buffer.from(`h${i}\n`);
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('TIMEOUT'));
    }, timeoutMs);
    const onError = (e: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    };
    sock.once('error', onError);
    sock.once('connect', () => sock.write(msg));
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (got.length < msg.length) return;
      clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('error', onError);
      sock.on('error', () => undefined);
      if (!got.equals(msg)) {
        sock.destroy();
        reject(new Error('ECHO_MISMATCH'));
        return;
      }
      resolve(sock);
    };
    sock.on('data', onData);
  });
}

async function client(target: string, n: number, concurrency: number, timeoutMs: number): Promise<void> {
  const m = /^(.+):(\d+)$/.exec(target);
  if (!m || m[1] === undefined || m[2] === undefined) throw new Error(`bad target ${target}`);
  const host = m[1];
  const port = Number(m[2]);
  const t0 = Date.now();
  const socks: net.Socket[] = [];
  const errors: Record<string, number> = {};
  let next = 0;
  const workerLoop = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      try {
        socks.push(await connectOne(host, port, i, timeoutMs));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
        errors[code] = (errors[code] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, workerLoop));
  const failed = n - socks.length;
  emit({ event: 'held', ok: socks.length, failed, ms: Date.now() - t0, errors });

  await new Promise<void>((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (l) => {
      if (l.trim() === 'release') resolve();
    });
    rl.on('close', () => resolve());
  });
  const t1 = Date.now();
  await Promise.all(
    socks.map(
      (s) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            s.destroy();
            resolve();
          }, timeoutMs);
          s.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          s.resume();
          s.end();
        }),
    ),
  );
  emit({ event: 'released', ms: Date.now() - t1 });
  process.exit(0);
}

const [mode, a, b, c, d] = process.argv.slice(2);
if (mode === 'server' && a !== undefined) {
  server(Number(a));
} else if (mode === 'client' && a !== undefined && b !== undefined) {
  client(a, Number(b), Number(c ?? 256), Number(d ?? 30000)).catch((e: unknown) => {
    process.stderr.write(`idle-conns: ${String(e)}\n`);
    process.exit(1);
  });
} else {
  process.stderr.write('usage: idle-conns server PORT | client HOST:PORT N [CONCURRENCY] [TIMEOUT_MS]\n');
  process.exit(2);
}
