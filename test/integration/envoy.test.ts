// `splicegate run --envoy examples/envoy-original-dst.yaml`: the seed article's Envoy config, run
// unchanged in the namespace lab, routes as the article shows. A client's curl to port 80 of the
// server, redirected by iptables to port 9000, reaches the server through the original_dst relay;
// a curl to port 9001 naming the server in x-envoy-original-dst-host reaches it through the HTTP
// listener (Envoy's ORIGINAL_DST cluster with use_http_header).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { counter, Splicegate, Stats } from '../lab/splicegate';
import { ipOf, withDiagnostics } from '../lab/harness';
import { curl, echoBody } from '../lab/http';

const EXAMPLE = join(__dirname, '..', '..', '..', 'examples', 'envoy-original-dst.yaml');
const HEADER = 'x-envoy-original-dst-host';

function d(after: Stats, before: Stats, name: string): number {
  return counter(after, name) - counter(before, name);
}

describe('the seed Envoy config under splicegate run --envoy', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let server: ServerHandle;
  let envoyFile: string;

  before(async () => {
    lab = await Lab.create({ name: 'envoy' });
    server = await lab.startServer('http-echo', ['--listen', `${ADDR.server4}:80`, '--id', 'teapot']);
    // The article's rule sends port 80 to Envoy's 9000; here in the gateway, for the lab client.
    await lab.redirect({ dport: 80, toPort: 9000, family: 4 });
    // The example as shipped: its listeners (0.0.0.0:9000, 0.0.0.0:9001) and admin (127.0.0.1:9901).
    // A copy, so the reload test can edit it; the same text as the shipped example.
    envoyFile = join(lab.tmpDir(), 'envoy.yaml');
    copyFileSync(EXAMPLE, envoyFile);
    sg = await Splicegate.start(lab, { listeners: [], envoyFile });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('an iptables-redirected curl to port 80 reaches the server through the original_dst listener (9000)', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const r = await curl(lab, [`http://${ADDR.server4}/`]);
      assert.equal(r.status, 200, JSON.stringify(r));
      const body = echoBody(r);
      assert.equal(body.id, 'teapot');
      assert.equal(ipOf(body.remote), ADDR.gwSrv4, 'the server is reached from the gateway (relayed), not from the client (routed)');
      const s1 = await sg.waitStats((s) => s.upstream_cx_total - s0.upstream_cx_total >= 1, 5000, 'upstream_cx_total += 1');
      assert.equal(s1.downstream_cx_total - s0.downstream_cx_total, 1);
      assert.equal(d(s1, s0, 'upstream_rq_total'), 0, 'a TCP relay, not an HTTP request');
    }),
  );

  it('curl -H "x-envoy-original-dst-host: <server>:80" to port 9001 reaches the server, which never sees the header', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const conns = server.proc.eventsNamed('conn').length;
      const r = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:80`, `http://${ADDR.gwCli4}:9001/`]);
      assert.equal(r.status, 200, JSON.stringify(r));
      const body = echoBody(r);
      assert.equal(body.id, 'teapot');
      assert.equal(ipOf(body.remote), ADDR.gwSrv4);
      assert.equal(body.headers[HEADER], undefined, 'the routing header is stripped');
      assert.ok(server.proc.eventsNamed('conn').length > conns, 'the server got a connection');
      const s1 = await sg.waitStats((s) => d(s, s0, 'upstream_rq_total') >= 1, 5000, 'upstream_rq_total += 1');
      assert.equal(d(s1, s0, 'upstream_rq_total'), 1);
      assert.equal(d(s1, s0, 'original_dst_header_untrusted'), 0, 'Envoy honours the header from every client; so does the converted listener');
    }),
  );

  it('POST /reload converts the Envoy file again: a header-routing listener moved to 9002 serves there', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      writeFileSync(envoyFile, readFileSync(EXAMPLE, 'utf8').replace('port_value: 9001', 'port_value: 9002'));
      const r = await lab.admin('/reload', { address: sg.adminAddress, method: 'POST', timeoutMs: 30000 });
      assert.equal(r.status, 200, `POST /reload: ${r.status} ${r.error ?? ''} ${r.body}`);
      const moved = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:80`, `http://${ADDR.gwCli4}:9002/`]);
      assert.equal(moved.status, 200, JSON.stringify(moved));
      assert.equal(echoBody(moved).id, 'teapot');
      const old = await curl(lab, ['-H', `${HEADER}: ${ADDR.server4}:80`, `http://${ADDR.gwCli4}:9001/`], 3);
      assert.equal(old.code, 7, `9001 was removed by the reload, so the connect is refused: ${JSON.stringify(old)}`);
    }),
  );
});
