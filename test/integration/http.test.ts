// The HTTP listener (listeners[].mode: http, docs/HTTP.md) in the namespace lab with real clients
// (curl, wrk, a WebSocket client) and real servers: routing by x-envoy-original-dst-host from a
// trusted client, the original destination for everyone else, the destination policy, CONNECT to
// a TLS server with certificate verification, Upgrade to WebSocket, the upstream keep-alive
// pool, and the loop check (a header naming a listener of splicegate's own). Parse errors and
// head limits are in http-errors.test.ts.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { counter, Splicegate, Stats } from '../lab/splicegate';
import { delta, ipOf, withDiagnostics } from '../lab/harness';
import { curl, echoBody, httpRaw, makeTestCa, wrk, wsEcho, type TestCa } from '../lab/http';

const HEADER = 'x-envoy-original-dst-host';
const TRUSTED = `${ADDR.gwCli4}:9001`; // trusts the lab client
const UNTRUSTED = `${ADDR.gwCli4}:9002`; // trusts only a range the client is not in

function d(after: Stats, before: Stats, name: string): number {
  return counter(after, name) - counter(before, name);
}

describe('HTTP listener: routing, CONNECT, Upgrade, keep-alive pool', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let a: ServerHandle;
  let b: ServerHandle;
  let pooled: ServerHandle;
  let closer: ServerHandle;
  let ca: TestCa;

  before(async () => {
    lab = await Lab.create({ name: 'http' });
    ca = makeTestCa(lab.tmpDir(), ADDR.server4);
    a = await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:8080`, '--id', 'A']);
    b = await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:8081`, '--id', 'B']);
    await lab.startServer('http-echo', ['--listen', `[${ADDR.server6}]:8080`, '--id', 'A6']);
    await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:8082`, '--id', 'W', '--ws']);
    await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:8443`, '--id', 'T', '--cert', ca.certPath, '--key', ca.keyPath]);
    pooled = await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:8083`, '--id', 'P']);
    // Closes a keep-alive connection 1 s after its last response.
    closer = await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:8084`, '--id', 'K', '--keep-alive-ms', '1000']);
    // The untrusted listener's original destination: the client dials B, the gateway redirects.
    await lab.redirect({ dport: 8081, toPort: 9002, family: 4 });
    sg = await Splicegate.start(lab, {
      // One worker: the idle pool is per worker, so "a new client gets a pooled connection"
      // holds whichever worker accepts it.
      workers: 1,
      listeners: [
        { name: 'trusted', address: TRUSTED, mode: 'http', http: { trusted_sources: [`${ADDR.client4}/32`] } },
        { name: 'untrusted', address: UNTRUSTED, mode: 'http', http: { trusted_sources: ['192.0.2.0/24'] } },
      ],
      cluster: { http_pool: { max_idle_per_host: 16, idle_timeout: '30s' } },
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it("the seed's example: a trusted client's header routes the request, and the server never sees the header", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const r = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:8080`, `http://${TRUSTED}/seed?x=1`]);
      assert.equal(r.status, 200, JSON.stringify(r));
      const body = echoBody(r);
      assert.equal(body.id, 'A');
      assert.equal(body.url, '/seed?x=1');
      assert.equal(body.method, 'GET');
      assert.equal(ipOf(body.remote), ADDR.gwSrv4, 'the server is reached from the gateway');
      assert.equal(body.headers[HEADER], undefined, `the routing header reached the server: ${JSON.stringify(body.headers)}`);
      assert.equal(body.headers['user-agent']?.startsWith('curl/'), true, 'the other headers pass through');
      const s1 = await sg.waitStats((s) => d(s, s0, 'upstream_rq_total') >= 1, 5000, 'upstream_rq_total += 1');
      assert.equal(d(s1, s0, 'upstream_rq_total'), 1);
      assert.equal(d(s1, s0, 'original_dst_header_untrusted'), 0);
      assert.equal(delta(s1, s0, 'no_original_dst'), 0);
    }),
  );

  it('an IPv6 destination in the header ([v6]:port) is routed over IPv6', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const r = await curl(lab, ['-H', `${HEADER}: [${ADDR.server6}]:8080`, `http://${TRUSTED}/`]);
      assert.equal(r.status, 200, JSON.stringify(r));
      const body = echoBody(r);
      assert.equal(body.id, 'A6');
      assert.equal(ipOf(body.remote), `[${ADDR.gwSrv6}]`);
    }),
  );

  it("an untrusted client's header is ignored, counted and stripped: the request goes to the original destination", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const aRequests = a.proc.eventsNamed('conn').length;
      // The client dials B (redirected to the untrusted listener) and names A in the header.
      const r = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:8080`, `http://${ADDR.server4}:8081/`]);
      assert.equal(r.status, 200, JSON.stringify(r));
      const body = echoBody(r);
      assert.equal(body.id, 'B', 'the original destination, not the header, chose the server');
      assert.equal(body.headers[HEADER], undefined, 'an untrusted header is stripped too');
      assert.equal(a.proc.eventsNamed('conn').length, aRequests, 'A got no connection');
      const s1 = await sg.waitStats((s) => d(s, s0, 'original_dst_header_untrusted') >= 1, 5000, 'original_dst_header_untrusted += 1');
      assert.equal(d(s1, s0, 'original_dst_header_untrusted'), 1);
      assert.ok(b.proc.eventsNamed('conn').length >= 1);
    }),
  );

  it('no usable destination (untrusted header, not redirected) is a 503 no_destination, and nothing is connected', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const r = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:8080`, `http://${UNTRUSTED}/`]);
      assert.equal(r.status, 503, JSON.stringify(r));
      assert.equal(r.headers['x-splicegate-error'], 'no_destination');
      // A trusted client without the header, connecting directly, has no destination either.
      const none = await curl(lab, [`http://${TRUSTED}/`]);
      assert.equal(none.status, 503, JSON.stringify(none));
      assert.equal(none.headers['x-splicegate-error'], 'no_destination');
      const s1 = await sg.waitStats((s) => d(s, s0, 'http_rq_no_destination') >= 2, 5000, 'http_rq_no_destination += 2');
      assert.equal(d(s1, s0, 'http_rq_no_destination'), 2);
      assert.equal(d(s1, s0, 'original_dst_header_untrusted'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0);
    }),
  );

  it('a header that is not IP:PORT is counted as invalid and ignored', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      for (const bad of ['example.com:80', `${ADDR.server4}`, `${ADDR.server4}:99999`, `${ADDR.server6}:8080`]) {
        const r = await curl(lab, ['-H', `${HEADER}: ${bad}`, `http://${TRUSTED}/`]);
        assert.equal(r.status, 503, `${bad}: ${JSON.stringify(r)}`);
        assert.equal(r.headers['x-splicegate-error'], 'no_destination', bad);
      }
      const s1 = await sg.waitStats((s) => d(s, s0, 'original_dst_host_invalid') >= 4, 5000, 'original_dst_host_invalid += 4');
      assert.equal(d(s1, s0, 'original_dst_host_invalid'), 4);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0);
    }),
  );

  it("the destination policy judges the header's destination: 403 policy_denied, never connected", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const r = await curl(lab, ['-H', `${HEADER}: 169.254.169.254:80`, `http://${TRUSTED}/latest/meta-data/`]);
      assert.equal(r.status, 403, JSON.stringify(r));
      assert.equal(r.headers['x-splicegate-error'], 'policy_denied');
      const s1 = await sg.waitStats((s) => d(s, s0, 'http_rq_policy_denied') >= 1, 5000, 'http_rq_policy_denied += 1');
      assert.equal(d(s1, s0, 'http_rq_policy_denied'), 1);
      assert.equal(d(s1, s0, 'policy_denied'), 1, 'counted by the destination policy like any denied destination');
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0);
      // The same for a CONNECT target.
      const c = await httpRaw(lab, { target: TRUSTED, send: 'CONNECT 169.254.169.254:443 HTTP/1.1\\r\\nHost: 169.254.169.254:443\\r\\n\\r\\n' });
      assert.equal(c.status, 403, JSON.stringify(c));
      assert.equal(c.headers['x-splicegate-error'], 'policy_denied');
    }),
  );

  it("a header naming splicegate's own listener is a 508 loop_rejected: no connection goes out", { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const r = await curl(lab, ['-H', `${HEADER}: ${UNTRUSTED}`, `http://${TRUSTED}/loop`]);
      assert.equal(r.status, 508, JSON.stringify(r));
      assert.equal(r.headers['x-splicegate-error'], 'loop_rejected');
      const s1 = await sg.waitStats((s) => d(s, s0, 'loop_rejected') >= 1, 5000, 'loop_rejected += 1');
      assert.equal(d(s1, s0, 'loop_rejected'), 1);
      assert.equal(d(s1, s0, 'upstream_cx_total'), 0);
      assert.equal(d(s1, s0, 'downstream_cx_total'), 1, 'a connection came back into splicegate');
    }),
  );

  it('CONNECT tunnels TLS end to end: curl -p -x verifies the server certificate through it; an untrusted client gets 403 connect_untrusted', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const r = await curl(lab, ['-p', '-x', `http://${TRUSTED}`, '--cacert', ca.caPath, `https://${ADDR.server4}:8443/tls`]);
      assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
      assert.equal(r.statusLines.length, 2, `expected the proxy's CONNECT response, then the origin's: ${JSON.stringify(r.statusLines)}`);
      assert.match(r.statusLines[0] ?? '', /^HTTP\/1\.1 200/);
      assert.equal(r.status, 200);
      const body = echoBody(r);
      assert.equal(body.id, 'T');
      assert.equal(body.url, '/tls');
      assert.equal(ipOf(body.remote), ADDR.gwSrv4);
      // The certificate is checked, not skipped: the same request without the CA fails.
      const untrustedCa = await curl(lab, ['-p', '-x', `http://${TRUSTED}`, `https://${ADDR.server4}:8443/tls`]);
      assert.equal(untrustedCa.code, 60, `curl should refuse the lab certificate without --cacert: ${untrustedCa.stderr}`);
      // A CONNECT chooses the destination as the routing header does: through the listener that
      // does not trust this client, the tunnel is refused and nothing connects upstream.
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const refused = await httpRaw(lab, { target: UNTRUSTED, send: `CONNECT ${ADDR.server4}:8443 HTTP/1.1\\r\\nHost: ${ADDR.server4}:8443\\r\\n\\r\\n` });
      assert.equal(refused.status, 403, JSON.stringify(refused));
      assert.equal(refused.headers['x-splicegate-error'], 'connect_untrusted');
      const s1 = await sg.waitStats((s) => d(s, s0, 'http_rq_connect_untrusted') >= 1, 5000, 'http_rq_connect_untrusted += 1');
      assert.equal(d(s1, s0, 'http_rq_connect_untrusted'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0);
    }),
  );

  it('a WebSocket upgrade is spliced after 101: messages echo both ways, without the routing header', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const r = await wsEcho(lab, { url: `ws://${TRUSTED}/chat`, header: `${HEADER}: ${ADDR.server4}:8082`, count: 20, size: 3000 });
      assert.equal(r.error, null, JSON.stringify(r));
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.echoed, 20);
      const hello = r.hello as { id?: string; headers?: Record<string, string> } | null;
      assert.equal(hello?.id, 'W');
      assert.equal(hello?.headers?.[HEADER], undefined, 'the routing header reached the WebSocket server');
      assert.equal(hello?.headers?.['upgrade']?.toLowerCase(), 'websocket');
    }),
  );

  it('keep-alive pool: wrk -c8 through the listener uses at most 8 upstream connections, and reuses them', { timeout: 60000 }, (t) =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const w = await wrk(lab, { url: `http://${TRUSTED}/pool`, connections: 8, durationS: 2, header: `${HEADER}: ${ADDR.server4}:8083` });
      assert.equal(w.non2xx, 0, w.output);
      assert.equal(w.socketErrors, 0, w.output);
      assert.ok(w.requests > 8, `wrk made only ${w.requests} requests:\n${w.output}`);
      const s1 = await sg.waitStats((s) => d(s, s0, 'upstream_rq_total') >= w.requests, 10000, `upstream_rq_total += ${w.requests}`);
      const accepted = pooled.proc.eventsNamed('conn').length;
      assert.ok(accepted >= 1 && accepted <= 8, `the server accepted ${accepted} connections for ${w.requests} requests over 8 client connections`);
      assert.ok(d(s1, s0, 'upstream_cx_reuse') > 0, 'upstream_cx_reuse did not move');
      t.diagnostic(`${w.requests} requests over 8 client connections; ${accepted} upstream connections; upstream_cx_reuse +${d(s1, s0, 'upstream_cx_reuse')}`);
      assert.ok(d(s1, s0, 'upstream_cx_reuse') >= w.requests - accepted, `reuses ${d(s1, s0, 'upstream_cx_reuse')} < requests ${w.requests} - connections ${accepted}`);
      // Reused across client connections too: a new client gets a pooled connection.
      const before = pooled.proc.eventsNamed('conn').length;
      const r = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:8083`, `http://${TRUSTED}/again`]);
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.ok(echoBody(r).seq > 1, 'the new client was served on a connection that had served earlier requests');
      assert.equal(pooled.proc.eventsNamed('conn').length, before, 'a new upstream connection was opened');
    }),
  );

  it('a pooled connection the server closed is not used: the next request (a POST) succeeds on a new one', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const first = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:8084`, `http://${TRUSTED}/one`]);
      assert.equal(first.status, 200, JSON.stringify(first));
      const conn = echoBody(first).conn;
      // The server closes that connection after 1 s idle; wait for it to have done so.
      await closer.proc.waitForEvents((e) => e['event'] === 'close' && e['n'] === conn, 1, 10000, `server close of connection ${conn}`);
      // A POST may not be retried: had the proxy written it to the closed connection, it would fail.
      const second = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:8084`, '--data', 'x=1', `http://${TRUSTED}/two`]);
      assert.equal(second.status, 200, JSON.stringify(second));
      const body = echoBody(second);
      assert.equal(body.method, 'POST');
      assert.equal(body.bodyBytes, 3);
      assert.notEqual(body.conn, conn, 'served on the connection the server had closed');
      assert.equal(body.seq, 1);
      assert.equal(closer.proc.eventsNamed('client-error').length, 0);
    }),
  );
});
