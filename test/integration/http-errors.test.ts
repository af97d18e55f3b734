// The HTTP listener's refusals in the namespace lab, with raw requests from the client namespace:
// request smuggling vectors (CL+TE, duplicate Content-Length, obs-fold, bare LF, a bad chunk size)
// -> 400 and the connection closed; a head that never completes -> 408; a 100 KB header -> 431.
// Each refusal carries x-splicegate-error and its counter. The listener also runs with
// cluster.upstream_port_override, which wins over the header's port (Envoy's order).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab } from '../lab/lab';
import { counter, Splicegate, Stats } from '../lab/splicegate';
import { withDiagnostics } from '../lab/harness';
import { httpRaw, type RawResult } from '../lab/http';

const LISTENER = `${ADDR.gwCli4}:9001`;
const SERVER_PORT = 8080;
// The header's port is replaced by upstream_port_override (SERVER_PORT): any port routes to A.
const ROUTE = `x-envoy-original-dst-host: ${ADDR.server4}:9\\r\\n`;

function d(after: Stats, before: Stats, name: string): number {
  return counter(after, name) - counter(before, name);
}

/** Refused with `status` and x-splicegate-error `reason`, then closed by the proxy (not left open). */
function assertRefused(r: RawResult, status: number, reason: string, what: string): void {
  assert.equal(r.connected, true, `${what}: ${JSON.stringify(r)}`);
  assert.equal(r.status, status, `${what}: ${JSON.stringify(r)}`);
  assert.equal(r.headers['x-splicegate-error'], reason, `${what}: ${JSON.stringify(r.headers)}`);
  assert.equal(r.headers['connection'], 'close', `${what}: the refusal does not say the connection closes`);
  assert.ok(r.closeKind === 'end' || r.closeKind === 'reset', `${what}: the connection was not closed (${String(r.closeKind)})`);
}

describe('HTTP listener: malformed requests and head limits', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'httperr' });
    await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:${SERVER_PORT}`, '--id', 'A']);
    sg = await Splicegate.start(lab, {
      listeners: [
        {
          name: 'gw',
          address: LISTENER,
          mode: 'http',
          http: { trusted_sources: [`${ADDR.client4}/32`], request_head_timeout: '1s', max_request_head_bytes: 65536 },
        },
      ],
      cluster: { upstream_port_override: SERVER_PORT },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('a well-formed request is answered (the control for the cases below), on upstream_port_override, not the header\'s port', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const r = await httpRaw(lab, { target: LISTENER, send: `GET /ok HTTP/1.1\\r\\nHost: a\\r\\n${ROUTE}Connection: close\\r\\n\\r\\n` });
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.equal(r.closeKind, 'end', 'a complete exchange ends with FIN');
      const body = JSON.parse(r.body) as { id: string; local: string };
      assert.equal(body.id, 'A');
      assert.equal(body.local, `${ADDR.server4}:${SERVER_PORT}`);
    }),
  );

  // [name, request, refused from the head alone (nothing may be sent upstream)]
  const smuggling: Array<[string, string, boolean]> = [
    ['Content-Length with Transfer-Encoding', `POST / HTTP/1.1\\r\\nHost: a\\r\\n${ROUTE}Content-Length: 4\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n`, true],
    ['two Content-Length headers', `POST / HTTP/1.1\\r\\nHost: a\\r\\n${ROUTE}Content-Length: 4\\r\\nContent-Length: 5\\r\\n\\r\\nabcde`, true],
    ['obs-fold (a header line continued with a space)', `GET / HTTP/1.1\\r\\nHost: a\\r\\n${ROUTE}X-Folded: one\\r\\n two\\r\\n\\r\\n`, true],
    ['bare LF line ends', `GET / HTTP/1.1\\nHost: a\\n${ROUTE.replace('\\r\\n', '\\n')}\\n`, true],
    // The head is valid and may already be on its way upstream; the body's framing is not.
    ['an invalid chunk size', `POST / HTTP/1.1\\r\\nHost: a\\r\\n${ROUTE}Transfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\nhello\\r\\n0\\r\\n\\r\\n`, false],
  ];
  for (const [name, send, headError] of smuggling) {
    it(`smuggling: ${name} -> 400 and the connection closed`, { timeout: 30000 }, () =>
      withDiagnostics(lab, sg, async () => {
        if (!sg) throw new Error('no splicegate');
        const s0 = await sg.stats();
        const r = await httpRaw(lab, { target: LISTENER, send });
        assertRefused(r, 400, 'malformed', name);
        const s1 = await sg.waitStats((s) => d(s, s0, 'http_rq_malformed') >= 1, 5000, 'http_rq_malformed += 1');
        assert.equal(d(s1, s0, 'http_rq_malformed'), 1);
        if (headError) assert.equal(d(s1, s0, 'upstream_rq_total'), 0, 'a request with a refused head was sent upstream');
      }),
    );
  }

  it('a head that never completes -> 408 after request_head_timeout (1s)', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const r = await httpRaw(lab, { target: LISTENER, send: `GET /slow HTTP/1.1\\r\\nHost: a\\r\\n${ROUTE}`, waitMs: 8000 });
      assertRefused(r, 408, 'head_timeout', 'slow head');
      // Not before the configured timeout; the upper bound is the client's generous wait.
      assert.ok(r.closedAfterMs !== null && r.closedAfterMs >= 900, `closed after ${String(r.closedAfterMs)} ms, before the 1s timeout`);
      const s1 = await sg.waitStats((s) => d(s, s0, 'http_rq_head_timeout') >= 1, 5000, 'http_rq_head_timeout += 1');
      assert.equal(d(s1, s0, 'http_rq_head_timeout'), 1);
      assert.equal(d(s1, s0, 'upstream_rq_total'), 0);
    }),
  );

  it('a 100 KB header (over max_request_head_bytes 65536) -> 431, and nothing is connected', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const r = await httpRaw(lab, { target: LISTENER, send: `GET /big HTTP/1.1\\r\\nHost: a\\r\\n${ROUTE}\\r\\n`, padHeaderBytes: 100 * 1024 });
      assertRefused(r, 431, 'head_too_large', '100 KB header');
      const s1 = await sg.waitStats((s) => d(s, s0, 'http_rq_head_too_large') >= 1, 5000, 'http_rq_head_too_large += 1');
      assert.equal(d(s1, s0, 'http_rq_head_too_large'), 1);
      assert.equal(d(s1, s0, 'upstream_rq_total'), 0);
      assert.equal(d(s1, s0, 'upstream_cx_total'), 0);
    }),
  );

  it('after all of the above the listener still serves', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const r = await httpRaw(lab, { target: LISTENER, send: `GET /still HTTP/1.1\\r\\nHost: a\\r\\n${ROUTE}Connection: close\\r\\n\\r\\n` });
      assert.equal(r.status, 200, JSON.stringify(r));
    }),
  );
});
