// Fuzz target (Jazzer.js): the admin server's request handling, from raw bytes on a connection
// through Node's HTTP parser to the URL/query handling and routing of src/admin/admin-server.ts.
// The real server object is driven in process over an in-memory socket: no port, no network.
//
// For every input: nothing escapes the server (an exception out of the request listener stops
// the whole proxy), every input that holds a request gets an answer starting with a status line,
// every request that reached the listener is answered, and the server closes the connection
// once the client has sent EOF. Each violation is thrown as a FuzzFinding with a stable code, so
// test/fuzz/known-findings.json can name one that is known and not yet fixed (see scripts/fuzz.sh).

import http = require('node:http');
import { Duplex } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { startAdminServer, type AdminState } from '../../src/admin/admin-server';
import type { Logger } from '../../src/util/logger';
import { FuzzFinding, isKnown } from './known-findings';

/**
 * A liveness bound, generous: the fake state below answers at once and an exchange takes about
 * 1 ms, but the first /latency or /stats/prometheus request starts the latency merge pool (worker
 * threads), which takes seconds on a loaded two-core machine.
 */
const ANSWER_WITHIN_MS = 10_000;

const state: AdminState = {
  readiness: () => ({ ready: true, detail: 'ready', generation: { number: 2, source: '/etc/splicegate.yaml', loadedAt: '2026-01-01T00:00:00.000Z' } }),
  reload: () => Promise.resolve({ status: 422, body: { ok: false, problems: [{ path: 'workers', message: 'bad' }] } }),
  counters: () => Promise.resolve({ cx_total: 3, cx_active: 1 }),
  hosts: () => Promise.resolve([{ address: '10.0.0.7:443', stats: { cx_total: 3 }, state: 'active' as const }]),
  latency: { collect: () => Promise.resolve([]) },
  crashWorker: (id: number) => id === 0,
  // Every name answered, so that the fuzzer's requests reach the routes behind the Host check.
  allowedHosts: () => ['*'],
};
const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** An in-memory connection: what the client sends is pushed in, what the server writes is kept. */
class FakeSocket extends Duplex {
  readonly written: Buffer[] = [];
  readonly remoteAddress = '127.0.0.1';
  readonly remotePort = 40000;
  readonly localAddress = '127.0.0.1';
  readonly localPort = 9901;
  constructor() {
    super({ allowHalfOpen: true });
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.written.push(Buffer.from(chunk));
    done();
  }
  // The parts of net.Socket the HTTP server calls.
  setTimeout(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  // What the server calls to close after a response that ends the connection (net.Socket's: end,
  // then destroy once written). Without it the server falls back to end(), which leaves pipelined
  // bytes it will never read in this half-open stream, and it never closes.
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }
}

/**
 * The http.Server that startAdminServer builds, captured at createServer and never bound: its
 * listen() reports success without a socket. Everything else is the production code as it is.
 */
let server: Promise<http.Server> | undefined;
function adminServer(): Promise<http.Server> {
  server ??= (async () => {
    const realCreateServer = http.createServer;
    let captured: http.Server | undefined;
    http.createServer = ((...args: Parameters<typeof http.createServer>) => {
      const s = realCreateServer(...args);
      s.listen = ((...listenArgs: unknown[]) => {
        const done = listenArgs.find((a): a is () => void => typeof a === 'function');
        process.nextTick(() => {
          s.emit('listening');
          done?.();
        });
        return s;
      }) as typeof s.listen;
      captured = s;
      return s;
    }) as typeof http.createServer;
    try {
      await startAdminServer({ host: '127.0.0.1', port: 9901, text: '127.0.0.1:9901' } as Parameters<typeof startAdminServer>[0], state, quiet);
    } finally {
      http.createServer = realCreateServer;
    }
    if (!captured) throw new Error('startAdminServer no longer calls http.createServer: update the fuzz target');
    return captured;
  })();
  return server;
}

/** Errors that escape the server's handlers land here (as they would kill the real process). */
let escaped: unknown[] = [];
process.on('uncaughtException', (err) => escaped.push(err));
process.on('unhandledRejection', (err) => escaped.push(err));

function codeOf(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? err.name : typeof err;
}

async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + ANSWER_WITHIN_MS;
  while (escaped.length === 0 && !done()) {
    if (Date.now() > deadline) throw new FuzzFinding('admin-request', 'HANG', `${what} within ${ANSWER_WITHIN_MS} ms`);
    await nextTurn();
  }
}

/** One exchange; returns the violation found, if any. */
async function exchange(input: Buffer): Promise<FuzzFinding | undefined> {
  const srv = await adminServer();
  const socket = new FakeSocket();
  let closed = false;
  let closedByServer = false;
  socket.on('close', () => (closed = true));
  socket.on('error', () => {}); // the server destroys with an error on a parse failure: expected
  const requests: Array<{ req: http.IncomingMessage; res: http.ServerResponse }> = [];
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => requests.push({ req, res });
  srv.prependListener('request', onRequest);
  escaped = [];
  try {
    srv.emit('connection', socket);
    socket.push(input);
    // Let every request that input holds be answered, then half-close as a client would.
    // Settled: the server has read all input and finished every response, for two turns in a row
    // (a finished response lets it resume a paused, pipelined connection on the next turn).
    let settledTurns = 0;
    await until('requests answered', () => {
      // A request whose declared body has not all arrived waits for the client, not the server:
      // that is settled too (the client's EOF below then abandons it).
      const settled = closed || (socket.readableLength === 0 && requests.every((r) => r.res.writableEnded || r.res.destroyed || !r.req.complete));
      settledTurns = settled ? settledTurns + 1 : 0;
      return settledTurns >= 2;
    });
    closedByServer = closed;
    if (escaped.length === 0) socket.push(null);
    await until('connection closed after client EOF', () => closed);
  } finally {
    srv.removeListener('request', onRequest);
    socket.destroy();
  }

  const method = /^[\r\n]*([A-Za-z-]{1,16})[ /]/.exec(input.toString('latin1'))?.[1]?.toUpperCase() ?? '';
  if (escaped.length > 0) {
    const err = escaped[0];
    return new FuzzFinding('admin-request', `THREW:${codeOf(err)}`, `escaped the admin server: ${err instanceof Error ? err.stack : String(err)}`);
  }
  const output = Buffer.concat(socket.written).toString('latin1');
  if (output !== '' && !/^HTTP\/1\.1 [1-5]\d\d /.test(output)) {
    return new FuzzFinding('admin-request', 'BAD_STATUS_LINE', `answer does not start with a status line: ${JSON.stringify(output.slice(0, 80))}`);
  }
  if (output === '' && /[^\r\n]/.test(input.toString('latin1'))) {
    return new FuzzFinding('admin-request', `NO_STATUS:${method || 'OTHER'}`, 'the connection closed without any answer');
  }
  // "Answered" = the handler ended its response. A connection the server closed on a client error
  // (a malformed later request) leaves nobody to answer, as on a real socket.
  // A request the client abandoned mid-body (EOF before its declared length) needs no answer.
  const unanswered = closedByServer ? 0 : requests.filter((r) => !r.res.writableEnded && r.req.complete).length;
  if (unanswered > 0) return new FuzzFinding('admin-request', 'UNANSWERED', `${unanswered} request(s) reached the listener and got no answer (the handler never ended the response)`);
  return undefined;
}

export async function fuzz(data: Buffer): Promise<void> {
  const finding = await exchange(data);
  if (finding && !isKnown(finding)) throw finding;
}
