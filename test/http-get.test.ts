// src/util/http-get.ts: the CLI's GET to an operator-given URL (report --admin).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { httpGet } from '../src/util/http-get';

async function listening(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

test('a server that trickles its answer is cut at the deadline, with the deadline named', { timeout: 15000 }, async () => {
  const server = createServer((_req, res) => {
    res.writeHead(200);
    const timer = setInterval(() => res.write('x'), 50);
    res.on('close', () => clearInterval(timer));
  });
  const port = await listening(server);
  try {
    await assert.rejects(httpGet(new URL(`http://127.0.0.1:${port}/`), 500), /no complete answer within 500 ms/);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('any status comes back with its body; a closed port names the cause', { timeout: 15000 }, async () => {
  const server = createServer((_req, res) => {
    res.writeHead(503);
    res.end('not ready\n');
  });
  const port = await listening(server);
  assert.deepEqual(await httpGet(new URL(`http://127.0.0.1:${port}/ready`), 5000), { status: 503, body: 'not ready\n' });
  server.close();
  await new Promise((resolve) => server.once('close', resolve));
  await assert.rejects(httpGet(new URL(`http://127.0.0.1:${port}/`), 5000), /ECONNREFUSED/);
});
