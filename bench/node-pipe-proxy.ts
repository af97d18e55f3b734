// The "naive Node.js proxy" contender: net.Server + socket.pipe() both ways, one fixed upstream
// per listening port. Node cannot read SO_ORIGINAL_DST, so the benchmark gives it one REDIRECT
// rule per destination port, each to its own listening port ("port mapping"), and every mapping
// goes to the single lab server. It is a floor to compare against, not a feature-equal proxy: it
// never honours the original destination address.
//
//   node dist/bench/node-pipe-proxy.js LISTEN_PORT=UPSTREAM_HOST:UPSTREAM_PORT ...
// Prints "READY" once every port listens; exits 0 on SIGTERM/SIGINT.

import * as net from 'node:net';

interface Mapping {
  port: number;
  host: string;
  upstreamPort: number;
}

function parseMapping(text: string): Mapping {
  const m = /^(\d+)=(.+):(\d+)$/.exec(text);
  if (!m || m[1] === undefined || m[2] === undefined || m[3] === undefined) {
    throw new Error(`expected LISTEN_PORT=HOST:PORT, got ${JSON.stringify(text)}`);
  }
  return { port: Number(m[1]), host: m[2], upstreamPort: Number(m[3]) };
}

function relay(down: net.Socket, map: Mapping): void {
  const up = net.connect({ host: map.host, port: map.upstreamPort });
  down.setNoDelay(true);
  up.setNoDelay(true);
  const kill = (): void => {
    down.destroy();
    up.destroy();
  };
  down.on('error', kill);
  up.on('error', kill);
  down.pipe(up);
  up.pipe(down);
}

function main(): void {
  const maps = process.argv.slice(2).map(parseMapping);
  if (maps.length === 0) throw new Error('usage: node-pipe-proxy LISTEN_PORT=HOST:PORT ...');
  const servers: net.Server[] = [];
  let listening = 0;
  for (const map of maps) {
    const server = net.createServer((sock) => relay(sock, map));
    server.on('error', (e) => {
      process.stderr.write(`node-pipe-proxy: port ${map.port}: ${e.message}\n`);
      process.exit(1);
    });
    server.listen({ port: map.port, host: '0.0.0.0', backlog: 4096 }, () => {
      listening += 1;
      if (listening === maps.length) process.stdout.write('READY\n');
    });
    servers.push(server);
  }
  const stop = (): void => {
    for (const s of servers) s.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
