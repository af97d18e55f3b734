// Runs inside the client namespace for bench/preconnect.ts: N sequential connections to one
// target, each sends a line and waits for the one-line reply; prints one JSON line with every
// connection's time from connect() to the reply, in microseconds.
//
//   node dist/bench/sequential-client.js HOST:PORT N PAUSE_MS

import * as net from 'node:net';

function once(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const sock = net.connect({ host, port });
    sock.setNoDelay(true);
    sock.on('connect', () => sock.write('hello\n'));
    sock.once('data', () => {
      resolve(Number(process.hrtime.bigint() - start) / 1000);
      sock.destroy();
    });
    sock.on('error', reject);
    sock.setTimeout(5000, () => reject(new Error('timeout')));
  });
}

async function main(): Promise<void> {
  const [target, countText, pauseText] = process.argv.slice(2);
  const m = /^(.+):(\d+)$/.exec(target ?? '');
  if (!m || m[1] === undefined || m[2] === undefined) throw new Error('usage: sequential-client HOST:PORT N PAUSE_MS');
  const count = Number(countText ?? 100);
  const pauseMs = Number(pauseText ?? 2);
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    times.push(await once(m[1], Number(m[2])));
    await new Promise((r) => setTimeout(r, pauseMs));
  }
  process.stdout.write(JSON.stringify({ times }) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
