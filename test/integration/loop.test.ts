// Connections that must not be relayed: no original destination, and loops back to splicegate.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ADDR, Lab, ServerHandle } from '../lab/lab';
import { cliPath } from '../lab/paths';
import { Splicegate } from '../lab/splicegate';
import { connectMany, probe } from '../lab/clients';
import { delta, withDiagnostics } from '../lab/harness';

describe('no original destination / loops', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let srv: ServerHandle;

  before(async () => {
    lab = await Lab.create({ name: 'loop' });
    srv = await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'S']);
    // Only the server's port is redirected, so a direct dial of the listener is not.
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, { listeners: [{ name: 'egress', address: '0.0.0.0:15001' }] });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('a direct (not redirected) connection to the listener is closed and counted in no_original_dst', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const p = await probe(lab, { target: `${ADDR.gwCli4}:15001`, send: 'hello\\n', waitMs: 5000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', `not reset within 5 s: ${JSON.stringify(p)}`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 1000, `closed after ${p.closedAfterMs} ms`);
      assert.equal(p.bytes, 0, 'nothing relayed back');
      const s1 = await sg.waitStats((s) => delta(s, s0, 'no_original_dst') >= 1, 3000, 'no_original_dst += 1');
      assert.equal(delta(s1, s0, 'no_original_dst'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0, 'no upstream connection');
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
    }),
  );

  it('a redirected connection whose original destination is the listener itself is rejected as a loop', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      // The gateway's other address on the listener port: REDIRECT sends it to the listener,
      // and the original destination (10.10.2.1:15001) is splicegate's own listener.
      await lab.redirect({ daddr: ADDR.gwSrv4, dport: 15001, toPort: 15001, family: 4 });
      const s0 = await sg.stats();
      const p = await probe(lab, { target: `${ADDR.gwSrv4}:15001`, send: 'hello\\n', waitMs: 5000 });
      assert.equal(p.connected, true, JSON.stringify(p));
      assert.equal(p.closeKind, 'reset', `not reset within 5 s: ${JSON.stringify(p)}`);
      assert.ok(p.closedAfterMs !== null && p.closedAfterMs < 1000, `closed after ${p.closedAfterMs} ms`);
      assert.equal(p.bytes, 0, 'nothing relayed back');
      const s1 = await sg.waitStats((s) => delta(s, s0, 'loop_rejected') >= 1, 3000, 'loop_rejected += 1');
      assert.equal(delta(s1, s0, 'loop_rejected'), 1);
      assert.equal(delta(s1, s0, 'upstream_cx_total'), 0, 'no upstream connection');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 1, 'only the probe was accepted (no self-connection)');
    }),
  );

  it('neither was relayed to the server, while a normal redirected connection is', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      assert.equal(srv.proc.eventsNamed('conn').length, 0, 'server saw no connection from the rejected probes');
      const r = await connectMany(lab, { target: '10.10.2.2:8080', n: 1, expectId: 'S', expectLocal: '10.10.2.2:8080' });
      assert.equal(r.ok, 1, JSON.stringify(r));
      assert.deepEqual(r.remotes, { [ADDR.gwSrv4]: 1 });
      await srv.proc.waitForEvents((e) => e['event'] === 'conn', 1, 3000, 'server conn');
      assert.equal(srv.proc.eventsNamed('conn').length, 1);
    }),
  );

  // README, Safety: if the mark cannot be set, splicegate refuses to start rather than risk a loop.
  it('without CAP_NET_ADMIN, cluster.upstream_mark stops the start (exit 1, SO_MARK named); no worker is said to have died while draining', { timeout: 30000 }, async () => {
    const NOBODY = 65534;
    // Readable by nobody (the lab's own directory is 0700).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sg-nomark-'));
    try {
      fs.chmodSync(dir, 0o755);
      const file = path.join(dir, 'mark.yaml');
      const text = Splicegate.buildConfig({
        workers: 2,
        admin: '127.0.0.1:9903',
        listeners: [{ name: 'marked', address: '127.0.0.1:15099' }],
        cluster: { upstream_mark: 0x100 },
      });
      fs.writeFileSync(file, text, { mode: 0o644 });
      const args = [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--inh-caps=-all', process.execPath, cliPath, 'run', '--config', file];
      const proc = lab.start('gw', 'setpriv', args, { stdin: 'ignore', label: 'splicegate without CAP_NET_ADMIN' });
      const exit = await proc.waitExit(20000);
      assert.deepEqual(exit, { code: 1, signal: null }, proc.diagnostics());
      assert.match(proc.stderr, /^splicegate: setsockopt SO_MARK for cluster\.upstream_mark \(needs CAP_NET_ADMIN\): setsockopt failed: EPERM/m, proc.stderr);
      // The workers never started: a line saying one died while draining sends the reader after a
      // crash that did not happen (the failure itself is the line above).
      assert.doesNotMatch(proc.stderr, /worker died while draining/, proc.stderr);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
