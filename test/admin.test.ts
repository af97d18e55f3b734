// The admin server on its own (no data plane): malformed and oversized requests are answered and
// counted, never thrown; connections over the cap are refused at accept.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { ADMIN_LIMITS, startAdminServer, type AdminServer, type AdminState } from '../src/admin/admin-server';
import { AdminStats } from '../src/admin/admin-stats';
import { createLogger } from '../src/util/logger';

const silent = createLogger('error', () => undefined);
const ANY_PORT = { host: '127.0.0.1', port: 0, family: 4, text: '127.0.0.1:0' } as const;

/** An admin state that is ready and has nothing to report, but for what `over` replaces. */
function quiet(over: Partial<AdminState> = {}): AdminState {
  return {
    readiness: () => ({ ready: true, detail: 'ready' }),
    counters: async () => ({}),
    hosts: async () => [],
    latency: { collect: async () => [] },
    allowedHosts: () => ['localhost'],
    ...over,
  };
}

/** Send raw bytes, read until the server closes (or `untilStatus` sees a full status line). */
async function raw(port: number, bytes: string | Buffer, opts: { end?: boolean } = {}): Promise<{ status: number; text: string }> {
  const sock = connect({ host: '127.0.0.1', port });
  await once(sock, 'connect');
  let text = '';
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => (text += d));
  sock.on('error', () => undefined);
  sock.write(bytes);
  if (opts.end !== false) sock.end();
  await new Promise((r) => sock.on('close', r));
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(text);
  return { status: m ? Number(m[1]) : 0, text };
}

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}

describe('admin server: malformed input', () => {
  let admin: AdminServer;
  const stats = new AdminStats();

  before(async () => {
    admin = await startAdminServer(
      ANY_PORT,
      quiet({
        counters: async () => ({ downstream_cx_total: 7 }),
      }),
      silent,
      stats,
    );
  });

  after(() => admin.close());

  it('the request line "GET http://[ HTTP/1.1" gets 400, is counted, and the server keeps answering', { timeout: 15000 }, async () => {
    const before = stats.snapshot();
    const r = await raw(admin.port, 'GET http://[ HTTP/1.1\r\nHost: localhost\r\n\r\n');
    assert.equal(r.status, 400, r.text);
    const after = stats.snapshot();
    assert.equal(after.admin_rq_bad - before.admin_rq_bad, 1);
    assert.equal(after.admin_rq_total - before.admin_rq_total, 1);
    const ok = await get(admin.port, '/ready');
    assert.equal(ok.status, 200);
  });

  it('CONNECT and raw Upgrade requests get 405 (no route), are counted, and the server keeps answering', { timeout: 15000 }, async () => {
    const before = stats.snapshot();
    const connectReq = await raw(admin.port, 'CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\r\n');
    assert.equal(connectReq.status, 405, connectReq.text);
    const upgrade = await raw(admin.port, 'GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    assert.equal(upgrade.status, 405, upgrade.text);
    assert.equal(stats.snapshot().admin_rq_bad - before.admin_rq_bad, 2);
    assert.equal((await get(admin.port, '/ready')).status, 200);
  });

  it('/stats shows the admin counters beside the data plane counters', { timeout: 15000 }, async () => {
    const r = await get(admin.port, '/stats?format=json');
    const values = JSON.parse(r.body) as Record<string, number>;
    assert.equal(values['downstream_cx_total'], 7);
    for (const name of ['admin_rq_total', 'admin_rq_bad', 'admin_rq_too_large', 'admin_rq_refused', 'admin_rq_timeout', 'admin_cx_overflow', 'admin_cx_pipeline_overflow', 'admin_cx_active']) {
      assert.equal(typeof values[name], 'number', `${name} in ${r.body}`);
    }
    assert.equal(values['admin_rq_total'], stats.snapshot().admin_rq_total - 0, 'the snapshot the reply was built from');
    const prom = await get(admin.port, '/stats/prometheus');
    assert.match(prom.body, /\n# TYPE splicegate_admin_rq_bad_total counter\nsplicegate_admin_rq_bad_total \d+\n/);
    assert.match(prom.body, /\n# TYPE splicegate_admin_cx_active gauge\n/);
  });

  it('garbage, bad targets and bad header lines get 400, each counted', { timeout: 15000 }, async () => {
    const inputs = [
      '\x00\x01\x02 junk\r\n\r\n',
      'GET  HTTP/1.1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost x\r\n\r\n',
      'GET http://[::1 HTTP/1.1\r\nHost: localhost\r\n\r\n',
      'GET / HTTP/9.9\r\nHost: localhost\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
    ];
    for (const input of inputs) {
      const before = stats.snapshot().admin_rq_bad;
      const r = await raw(admin.port, input);
      assert.equal(r.status, 400, `${JSON.stringify(input)} -> ${JSON.stringify(r.text)}`);
      assert.equal(stats.snapshot().admin_rq_bad - before, 1, JSON.stringify(input));
    }
    assert.equal((await get(admin.port, '/ready')).status, 200);
  });

  it('oversized headers get 431, oversized bodies 413 (declared or chunked), each counted', { timeout: 15000 }, async () => {
    const before = stats.snapshot().admin_rq_too_large;
    const bigHeader = await raw(admin.port, `GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(ADMIN_LIMITS.maxHeaderBytes + 10)}\r\n\r\n`);
    assert.equal(bigHeader.status, 431, bigHeader.text);
    const declared = await raw(admin.port, `POST /ready HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${ADMIN_LIMITS.maxBodyBytes + 1}\r\n\r\n`);
    assert.equal(declared.status, 413, declared.text);
    const chunk = 'b'.repeat(ADMIN_LIMITS.maxBodyBytes + 100);
    const chunked = await raw(
      admin.port,
      `POST /nowhere HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`,
    );
    assert.equal(chunked.status, 413, chunked.text);
    const small = await raw(admin.port, 'GET /ready HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n');
    assert.equal(small.status, 200, 'a body under the limit is read and ignored');
    assert.equal(stats.snapshot().admin_rq_too_large - before, 3);
    assert.equal((await get(admin.port, '/ready')).status, 200);
  });
});

describe('admin server: bounds', () => {
  let admin: AdminServer;
  const stats = new AdminStats();
  const limits = { ...ADMIN_LIMITS, maxConnections: 8, headersTimeoutMs: 500, requestTimeoutMs: 1000, timeoutCheckMs: 100 };

  before(async () => {
    admin = await startAdminServer(
      ANY_PORT,
      quiet(),
      silent,
      stats,
      limits,
    );
  });

  after(() => admin.close());

  it('connections over maxConnections are closed at once and counted; the held ones are cut at the header timeout', { timeout: 15000 }, async () => {
    const sockets: Socket[] = [];
    const closed: Array<Promise<unknown>> = [];
    for (let i = 0; i < 40; i++) {
      const s = connect({ host: '127.0.0.1', port: admin.port });
      s.on('error', () => undefined);
      s.resume(); // a paused socket never sees the server's FIN
      closed.push(new Promise((r) => s.on('close', r)));
      s.write('GET /ready HTTP/1.1\r\nHost: localhost\r\n');
      sockets.push(s);
    }
    // Condition, not a sleep: every connection was either held or dropped.
    await waitUntil(() => stats.snapshot().admin_cx_active + stats.snapshot().admin_cx_overflow >= 40, 10000, 'all 40 accepted or dropped');
    const snap = stats.snapshot();
    assert.equal(snap.admin_cx_active, limits.maxConnections);
    assert.equal(snap.admin_cx_overflow, 40 - limits.maxConnections);
    // Every one ends: dropped ones at once, held ones at headersTimeout (408).
    await Promise.all(closed);
    await waitUntil(() => stats.snapshot().admin_cx_active === 0, 5000, 'no admin connection left');
    assert.equal(stats.snapshot().admin_rq_timeout, limits.maxConnections);
    assert.equal((await get(admin.port, '/ready')).status, 200);
  });

  it('a connection that sends nothing is closed at the header timeout too', { timeout: 15000 }, async () => {
    const s = connect({ host: '127.0.0.1', port: admin.port });
    s.on('error', () => undefined);
    s.resume();
    const t0 = Date.now();
    await new Promise((r) => s.on('close', r));
    const ms = Date.now() - t0;
    assert.ok(ms < 5000, `silent connection held ${ms} ms`);
  });
});

async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('admin server: POST /logs/reopen', () => {
  it('reopens the access log when there is one (200), says so when there is none (404), and takes no GET', { timeout: 15000 }, async () => {
    let reopened = 0;
    let configured = true;
    const admin = await startAdminServer(
      ANY_PORT,
      quiet({
        reopenLogs: () => {
          if (configured) reopened += 1;
          return configured;
        },
      }),
      silent,
    );
    try {
      const post = (): Promise<Response> => fetch(`http://127.0.0.1:${admin.port}/logs/reopen`, { method: 'POST' });
      const r1 = await post();
      assert.equal(r1.status, 200);
      assert.equal(await r1.text(), 'access log reopened\n');
      assert.equal(reopened, 1);
      configured = false;
      const r2 = await post();
      assert.equal(r2.status, 404);
      assert.match(await r2.text(), /no access_log/);
      const g = await get(admin.port, '/logs/reopen');
      assert.equal(g.status, 405);
      assert.equal(reopened, 1);
    } finally {
      await admin.close();
    }
  });
});

describe('admin server: POSTs from web pages', () => {
  let admin: AdminServer;
  let reloads = 0;

  before(async () => {
    admin = await startAdminServer(
      ANY_PORT,
      quiet({
        reload: async () => {
          reloads += 1;
          return { status: 200, body: { ok: true } };
        },
      }),
      silent,
    );
  });

  after(() => admin.close());

  it('a POST with Origin or Sec-Fetch-Site (any page, even by DNS rebinding) is refused; curl-style POSTs and GETs are not', { timeout: 15000 }, async () => {
    const post = (headers: Record<string, string>): Promise<Response> => fetch(`http://127.0.0.1:${admin.port}/reload`, { method: 'POST', headers });
    const pages: Array<Record<string, string>> = [{ origin: 'http://evil.example' }, { origin: 'null' }, { origin: `http://127.0.0.1:${admin.port}` }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-origin' }];
    for (const headers of pages) {
      const r = await post(headers);
      assert.equal(r.status, 403, JSON.stringify(headers));
      assert.match(await r.text(), /from a web page refused/);
    }
    assert.equal(reloads, 0, 'no refused POST reached the handler');
    const ok = await post({});
    assert.equal(ok.status, 200, await ok.text());
    assert.equal(reloads, 1);
    // The dashboard's own requests are GETs with Origin-free same-origin fetches: unaffected.
    const stats = await fetch(`http://127.0.0.1:${admin.port}/stats?format=json`, { headers: { 'sec-fetch-site': 'same-origin' } });
    assert.equal(stats.status, 200);
    // Answers that echo the request stay text to a browser.
    const echo = await fetch(`http://127.0.0.1:${admin.port}/stats?format=%3Cscript%3E`);
    assert.equal(echo.status, 400);
    assert.equal(echo.headers.get('x-content-type-options'), 'nosniff');
  });
});

describe('admin server: the Host a request names (DNS rebinding)', () => {
  let admin: AdminServer;
  const stats = new AdminStats();
  let allowed: string[] = ['localhost'];
  let reloads = 0;

  before(async () => {
    admin = await startAdminServer(
      ANY_PORT,
      quiet({
        counters: async () => ({ downstream_cx_total: 5 }),
        allowedHosts: () => allowed,
        reload: async () => {
          reloads += 1;
          return { status: 200, body: { ok: true } };
        },
      }),
      silent,
      stats,
    );
  });

  after(() => admin.close());

  const request = (host: string | null, path = '/stats', method = 'GET', version = '1.1'): Promise<{ status: number; text: string }> =>
    raw(admin.port, `${method} ${path} HTTP/${version}\r\n${host === null ? '' : `Host: ${host}\r\n`}Content-Length: 0\r\nConnection: close\r\n\r\n`);

  it('a name outside admin.allowed_hosts gets 403 on every route, counted, and reaches no handler', { timeout: 15000 }, async () => {
    const before = stats.snapshot().admin_rq_refused;
    for (const [host, path, method] of [
      [`rebind.example:${admin.port}`, '/stats', 'GET'],
      ['rebind.example', '/server_info', 'GET'],
      ['localhost.rebind.example', '/', 'GET'],
      ['rebind.example', '/reload', 'POST'],
      ['', '/stats', 'GET'],
    ] as const) {
      const r = await request(host, path, method);
      assert.equal(r.status, 403, `${method} ${path} Host ${host}: ${r.text}`);
      assert.ok(r.text.includes(`host "${host.replace(/:\d+$/, '')}" is not in admin.allowed_hosts`), r.text);
      assert.doesNotMatch(r.text, /downstream_cx_total/);
    }
    assert.equal(stats.snapshot().admin_rq_refused - before, 5);
    assert.equal(reloads, 0, 'the refused POST reached no handler');
  });

  it('IP literals, the listed names in any case or with a trailing dot, and HTTP/1.0 without Host are answered', { timeout: 15000 }, async () => {
    for (const host of [`127.0.0.1:${admin.port}`, '10.1.2.3', `[::1]:${admin.port}`, '[2001:db8::7]', 'localhost', `LocalHost.:${admin.port}`]) {
      const r = await request(host);
      assert.equal(r.status, 200, `Host ${host}: ${r.text}`);
      assert.match(r.text, /downstream_cx_total: 5/);
    }
    const bare = await request(null, '/stats', 'GET', '1.0');
    assert.equal(bare.status, 200, bare.text);
  });

  it('the list in force is read per request (a reload changes it), and "*" answers every name', { timeout: 15000 }, async () => {
    assert.equal((await request('gw.corp.example')).status, 403);
    allowed = ['localhost', 'gw.corp.example'];
    assert.equal((await request('GW.corp.example:9901')).status, 200);
    assert.equal((await request('other.corp.example')).status, 403);
    allowed = ['*'];
    assert.equal((await request('other.corp.example')).status, 200);
    allowed = [];
    assert.equal((await request('localhost')).status, 403, 'an empty list answers IP addresses only');
    assert.equal((await request('127.0.0.1')).status, 200);
  });

  it('a Host that only starts like an IP literal is a name; two Host lines get 400; neither reaches a handler', { timeout: 15000 }, async () => {
    allowed = ['localhost'];
    const refusedBefore = stats.snapshot().admin_rq_refused;
    for (const host of ['[::1]rebind.example', '[::1]:80.rebind.example', '[127.0.0.1]']) {
      const r = await request(host);
      assert.equal(r.status, 403, `Host ${host}: ${r.text}`);
      assert.doesNotMatch(r.text, /downstream_cx_total/);
    }
    assert.equal(stats.snapshot().admin_rq_refused - refusedBefore, 3);
    // RFC 9112 3.2: more than one Host line is a 400. Node keeps the first and drops the others, so
    // which one was checked depended on their order.
    const badBefore = stats.snapshot().admin_rq_bad;
    for (const hosts of [['rebind.example', '127.0.0.1'], ['127.0.0.1', 'rebind.example'], ['localhost', 'localhost']]) {
      const r = await raw(admin.port, `POST /reload HTTP/1.1\r\n${hosts.map((h) => `Host: ${h}\r\n`).join('')}Content-Length: 0\r\n\r\n`);
      assert.equal(r.status, 400, `Host lines ${hosts.join(', ')}: ${r.text}`);
    }
    assert.equal(stats.snapshot().admin_rq_bad - badBefore, 3);
    assert.equal(reloads, 0, 'no POST reached the handler');
  });
  it('an absolute-form target is checked by its own authority (it stands in for Host); other target forms get 400', { timeout: 15000 }, async () => {
    allowed = ['localhost'];
    const refusedBefore = stats.snapshot().admin_rq_refused;
    const refused = await request('127.0.0.1', 'http://rebind.example/stats');
    assert.equal(refused.status, 403, refused.text);
    assert.ok(refused.text.includes('host "rebind.example" is not in admin.allowed_hosts'), refused.text);
    assert.doesNotMatch(refused.text, /downstream_cx_total/);
    assert.equal(stats.snapshot().admin_rq_refused - refusedBefore, 1);
    for (const [host, target] of [
      ['localhost', `http://127.0.0.1:${admin.port}/stats`],
      ['rebind.example', 'http://LOCALHOST./stats?format=text'],
      ['rebind.example', `HTTP://[::1]:${admin.port}/stats`],
    ] as const) {
      const r = await request(host, target);
      assert.equal(r.status, 200, `${target} with Host ${host}: ${r.text}`);
      assert.match(r.text, /downstream_cx_total: 5/);
    }
    // "//stats" is a path (an empty first segment), not a scheme-relative URL naming host "stats".
    const doubleSlash = await request('localhost', '//stats');
    assert.equal(doubleSlash.status, 404, doubleSlash.text);
    assert.match(doubleSlash.text, /not found: \/\/stats/);
    const badBefore = stats.snapshot().admin_rq_bad;
    for (const target of ['*', 'ftp://localhost/stats', 'stats', 'http://[/stats']) {
      const r = await request('localhost', target);
      assert.equal(r.status, 400, `${target}: ${r.text}`);
    }
    assert.equal(stats.snapshot().admin_rq_bad - badBefore, 4);
  });
});

describe('admin server: a client that half-closes right after its request', () => {
  let admin: AdminServer;

  before(async () => {
    // Handlers that answer later, as the real ones do (they ask every worker first).
    const later = <T>(value: T): Promise<T> => new Promise((resolve) => setTimeout(() => resolve(value), 50));
    admin = await startAdminServer(
      ANY_PORT,
      quiet({
        counters: () => later({ downstream_cx_total: 3 }),
        hosts: () => later([]),
        latency: { collect: () => later([]) },
        reload: () => later({ status: 200, body: { ok: true } }),
      }),
      silent,
    );
  });

  after(() => admin.close());

  it('still gets the answer of every route, those that await included, then the server closes', { timeout: 15000 }, async () => {
    // raw() ends its side after the request (nc -N, socat): the FIN arrives before the answer.
    for (const [method, path] of [['GET', '/stats'], ['GET', '/clusters'], ['GET', '/ready'], ['POST', '/reload']] as const) {
      const r = await raw(admin.port, `${method} ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n`);
      assert.equal(r.status, 200, `${method} ${path}: ${JSON.stringify(r.text)}`);
    }
    const stats = await raw(admin.port, 'GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n');
    assert.match(stats.text, /downstream_cx_total: 3/);
  });
});

describe('admin server: pipelined requests', () => {
  let admin: AdminServer;
  const stats = new AdminStats();
  const limits = { ...ADMIN_LIMITS, maxPipelined: 4 };
  let calls = 0;
  let inFlight = 0;
  let peak = 0;

  before(async () => {
    // A route that awaits the workers, as /stats does: each call is one round trip to every worker.
    const counters = async (): Promise<Record<string, number>> => {
      calls += 1;
      inFlight += 1;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, 20));
      inFlight -= 1;
      return { downstream_cx_total: calls };
    };
    admin = await startAdminServer(ANY_PORT, quiet({ counters }), silent, stats, limits);
  });

  after(() => admin.close());

  it('are answered one at a time and in order, each once', { timeout: 15000 }, async () => {
    calls = 0;
    peak = 0;
    const r = await raw(admin.port, 'GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(3) + 'GET /ready HTTP/1.1\r\nHost: localhost\r\n\r\n');
    const statuses = [...r.text.matchAll(/^HTTP\/1\.1 (\d{3}) /gm)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 200, 200, 200], r.text);
    assert.deepEqual([...r.text.matchAll(/downstream_cx_total: (\d+)/g)].map((m) => Number(m[1])), [1, 2, 3]);
    assert.equal(peak, 1, 'one handler at a time on a connection');
  });

  it('a flood of them on one connection (written at once, never read) runs one handler at a time, at most maxPipelined waiting, and closes it', { timeout: 15000 }, async () => {
    calls = 0;
    peak = 0;
    const before = stats.snapshot();
    const sock = connect({ host: '127.0.0.1', port: admin.port });
    sock.on('error', () => undefined);
    await once(sock, 'connect');
    const closed = new Promise((r) => sock.on('close', r));
    // 20,000 requests (800 KB) in one write: before, every one that was parsed started its handler
    // at once (7,000 awaiting the workers together), and the process grew by gigabytes.
    sock.write('GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(20000));
    await closed;
    await waitUntil(() => inFlight === 0, 5000, 'handlers to finish');
    assert.equal(peak, 1, `handlers in flight at once on one connection: ${peak}`);
    assert.ok(calls <= limits.maxPipelined + 1, `handlers run for one connection: ${calls}`);
    assert.equal(stats.snapshot().admin_cx_pipeline_overflow - before.admin_cx_pipeline_overflow, 1);
    assert.equal((await get(admin.port, '/ready')).status, 200);
  });
});
