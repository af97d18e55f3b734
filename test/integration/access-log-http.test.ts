// The access log of a `mode: http` listener in the namespace lab: one `request` line per request
// (curl with the routing header), each with method, status, destination and destination_source;
// a policy-denied request's line has status 403 and error policy_denied; a CONNECT tunnel's has
// destination_source connect. The number of lines equals http_rq_total (every request here has a
// complete head, and no connection is refused at accept).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ADDR, Lab } from '../lab/lab';
import { counter, Splicegate } from '../lab/splicegate';
import { started, withDiagnostics } from '../lab/harness';
import { curl } from '../lab/http';
import { waitFor } from '../lab/util';
import { ACCESS_REQUEST_LINE_KEYS, readJsonLines, type AccessRequestLine } from '../lab/jsonl';

const HEADER = 'x-envoy-original-dst-host';
const LISTENER = `${ADDR.gwCli4}:9001`;
const SERVER = `${ADDR.server4}:8080`;
const DENIED = `${ADDR.server4}:8081`;

type RequestLine = AccessRequestLine;

function readLines(file: string): RequestLine[] {
  return readJsonLines<RequestLine>(file, ACCESS_REQUEST_LINE_KEYS);
}

describe('access log: HTTP listener requests', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let file: string;

  before(async () => {
    lab = await Lab.create({ name: 'aclhttp' });
    await lab.startServer('http-echo', ['--listen', SERVER, '--id', 'A']);
    await lab.startServer('http-echo', ['--listen', DENIED, '--id', 'D']);
    file = path.join(fs.mkdtempSync(path.join(lab.tmpDir(), 'access-')), 'access.log');
    sg = await Splicegate.start(lab, {
      workers: 2,
      listeners: [{ name: 'web', address: LISTENER, mode: 'http', http: { trusted_sources: [`${ADDR.client4}/32`] } }],
      extra: {
        policy: { default: 'allow', rules: [{ name: 'no-8081', action: 'deny', cidrs: [`${ADDR.server4}/32`], ports: ['8081'] }] },
        access_log: { path: file, format: 'json', sample: 1 },
      },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  /** Waits until every connection closed and the file holds one line per request head read. */
  async function linesMatchingRequests(): Promise<RequestLine[]> {
    const proxy = sg;
    if (!proxy) throw new Error('no splicegate');
    return waitFor(
      async () => {
        const s = await proxy.stats();
        if (s.downstream_cx_active !== 0) return undefined;
        const lines = readLines(file);
        return lines.length === counter(s, 'http_rq_total') ? lines : undefined;
      },
      { timeoutMs: 10000, what: 'one line per request (http_rq_total)', diagnostics: () => proxy.diagnostics() },
    );
  }

  it('N requests with the header, a denied one and a CONNECT tunnel: one request line each, with method, status, error, destination_source', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const N = 4;
      for (let i = 0; i < N; ++i) {
        const r = await curl(lab, ['-H', `${HEADER}: ${SERVER}`, `http://${LISTENER}/r${i}`]);
        assert.equal(r.status, 200, JSON.stringify(r));
      }
      const denied = await curl(lab, ['-X', 'POST', '-d', 'x', '-H', `${HEADER}: ${DENIED}`, `http://${LISTENER}/no`]);
      assert.equal(denied.status, 403, JSON.stringify(denied));
      const tunnel = await curl(lab, ['-p', '-x', `http://${LISTENER}`, `http://${SERVER}/tunnelled`]);
      assert.equal(tunnel.status, 200, JSON.stringify(tunnel));

      const lines = await linesMatchingRequests();
      assert.equal(lines.length, N + 2, JSON.stringify(lines));
      for (const l of lines) {
        assert.equal(l.type, 'request');
        assert.equal(l.listener, 'web');
        assert.match(l.client ?? '', new RegExp(`^${ADDR.client4.replace(/\./g, '\\.')}:\\d+$`));
      }
      const gets = lines.filter((l) => l.method === 'GET');
      assert.equal(gets.length, N, JSON.stringify(lines));
      for (const l of gets) {
        assert.equal(l.status, 200);
        assert.equal(l.error, null);
        assert.equal(l.destination, SERVER);
        assert.equal(l.destination_source, 'header');
        assert.equal(l.policy, 'allow');
        assert.equal(l.rule, 'default');
        assert.equal(l.close_reason, 'completed');
        assert.equal(l.refusal, null);
        assert.ok(l.bytes_sent > 0 && l.bytes_received > 0, JSON.stringify(l));
        // connect_ms is 0 only for a request served on a pooled upstream connection (no connect);
        // otherwise it and ttfb_ms are measured (microsecond resolution: a connect and a response take time).
        assert.ok(typeof l.connect_ms === 'number' && l.connect_ms >= 0, `connect_ms ${l.connect_ms}`);
        assert.ok(typeof l.ttfb_ms === 'number' && l.ttfb_ms > 0, `ttfb_ms ${l.ttfb_ms}`);
      }
      const reuses = counter(await started(sg).stats(), 'upstream_cx_reuse');
      assert.equal(gets.filter((l) => l.connect_ms === 0).length, reuses, `one connect_ms of 0 per pooled reuse: ${JSON.stringify(gets)}`);
      assert.ok(reuses < N, `at least one GET opened its upstream connection: ${reuses} reuses`);
      const post = lines.find((l) => l.method === 'POST');
      assert.ok(post, JSON.stringify(lines));
      assert.equal(post.status, 403);
      assert.equal(post.error, 'policy_denied');
      assert.equal(post.destination, DENIED);
      assert.equal(post.destination_source, 'header');
      assert.equal(post.policy, 'deny');
      assert.equal(post.rule, 'no-8081');
      assert.equal(post.close_reason, 'refused');
      assert.equal(post.refusal, 'policy_denied');
      assert.equal(post.connect_ms, null);
      const connect = lines.find((l) => l.method === 'CONNECT');
      assert.ok(connect, JSON.stringify(lines));
      assert.equal(connect.status, 200);
      assert.equal(connect.error, null);
      assert.equal(connect.destination, SERVER);
      assert.equal(connect.destination_source, 'connect');
      assert.equal(connect.close_reason, 'completed');
      assert.ok(typeof connect.connect_ms === 'number' && connect.connect_ms > 0, `CONNECT connect_ms ${connect.connect_ms}`);
      assert.ok(connect.bytes_sent > 0 && connect.bytes_received > 0, JSON.stringify(connect));
      const s = await sg?.stats();
      assert.ok(s);
      assert.equal(counter(s, 'access_log_dropped'), 0);
    }),
  );
});
