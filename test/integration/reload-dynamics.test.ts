// Reload edge cases under held connections: a SIGHUP storm whose files flip the policy and the
// worker count, SIGTERM while a reload is still applying, and reloads under keep-alive load on the
// HTTP listener (each connection's last response says so, so the client sends nothing into its end).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { ADDR, Lab } from '../lab/lab';
import { counter, Splicegate, type SplicegateOptions } from '../lab/splicegate';
import { HoldClient, probe } from '../lab/clients';
import { withDiagnostics } from '../lab/harness';
import { waitForLog } from '../lab/listen-sockets';
import { startWrk, stopWrk } from '../lab/http-load';

const PORT = 15001;
const HOLD = `${ADDR.server4}:8081`;
const ECHO = `${ADDR.server4}:8090`;
const HTTP_LISTENER = `${ADDR.gwCli4}:9001`;

function options(o: { workers?: number; deny?: boolean; drain?: string } = {}): SplicegateOptions {
  return {
    workers: o.workers ?? 2,
    listeners: [{ name: 'egress', address: `0.0.0.0:${PORT}` }],
    drain_timeout: o.drain ?? '10s',
    extra: {
      policy: {
        default: 'allow',
        rules: o.deny ? [{ name: 'no-hold', action: 'deny', cidrs: [`${ADDR.server4}/32`], ports: ['8081'] }] : [],
      },
    },
  };
}

describe('reload dynamics', () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.create({ name: 'reldyn' });
    await lab.startServer('hold', ['--listen', HOLD]);
    await lab.startServer('http-echo', ['--listen', ECHO, '--id', 'E']);
    await lab.redirect({ dport: [8081], toPort: PORT, family: 4 });
  });

  after(async () => {
    await lab?.destroy();
  });

  it('a SIGHUP storm (policy flipping, worker count changing) keeps the process up and the held connections flowing, applies the last file, and leaves no generation behind', { timeout: 60000 }, async () => {
    const sg = await Splicegate.start(lab, options());
    try {
      await withDiagnostics(lab, sg, async () => {
        const hold = new HoldClient(lab, { target: HOLD, n: 4 });
        assert.equal((await hold.waitHeld(15000)).ok, 4);
        // Back to back: signals may coalesce and reloads queue; whatever runs last reads the last file.
        for (let i = 0; i < 8; i++) {
          // Written aside and renamed, as a config manager should: a reload never reads half a file.
          fs.writeFileSync(`${sg.configPath}.new`, Splicegate.buildConfig(options({ workers: 1 + (i % 3), deny: i % 2 === 1 })));
          fs.renameSync(`${sg.configPath}.new`, sg.configPath);
          sg.proc.signal('SIGHUP');
        }
        // The last file (i = 7) has 2 workers and denies the held destination.
        const s = await sg.waitStats(
          (x) => x.raw['config_generations_live'] === 2 && Number(x.raw['config_reloads']) >= 1,
          30000,
          'the intermediate generations retired; generation 1 still holds its connections',
        );
        assert.equal(s.raw['config_reload_failures'], 0);
        assert.equal(s.raw['config_generation'], 1 + Number(s.raw['config_reloads']));
        assert.equal(s.raw['downstream_cx_active'], 4, 'the held connections are still relayed');
        const ready = await sg.adminGet('/ready?format=json');
        assert.equal(ready.status, 200, ready.body);
        const denied = await probe(lab, { target: HOLD, send: 'x\n', waitMs: 3000 });
        assert.equal(denied.closeKind, 'reset', `a new connection is refused under the last file's policy: ${denied.closeKind}`);
        assert.equal(denied.bytes, 0);
        const released = await hold.release(10000);
        assert.equal(released.openAtRelease, 4, JSON.stringify(released));
        assert.equal(released.droppedWhileHeld, 0, JSON.stringify(released));
        const end = await sg.waitStats((x) => x.raw['config_generations_live'] === 1, 15000, 'generation 1 retired once its connections closed');
        assert.equal(end.raw['downstream_cx_active'], 0);
      });
    } finally {
      await sg.dispose();
    }
  });

  it('SIGTERM while a reload is applying: the process drains both generations and exits 0; held connections end with a reset at drain_timeout', { timeout: 60000 }, async () => {
    const sg = await Splicegate.start(lab, options({ drain: '2s' }));
    try {
      await withDiagnostics(lab, sg, async () => {
        const hold = new HoldClient(lab, { target: HOLD, n: 2 });
        assert.equal((await hold.waitHeld(15000)).ok, 2);
        fs.writeFileSync(sg.configPath, Splicegate.buildConfig(options({ workers: 3, drain: '2s' })));
        sg.proc.signal('SIGHUP');
        await waitForLog(sg, /reload requested/, 10000);
        sg.proc.signal('SIGTERM');
        const exit = await sg.proc.waitExit(20000);
        assert.deepEqual(exit, { code: 0, signal: null }, sg.proc.diagnostics());
        const released = await hold.release(10000);
        assert.equal(released.droppedByReset, 2, JSON.stringify(released));
      });
    } finally {
      await sg.dispose();
    }
  });

  it('reloads under keep-alive load on the HTTP listener: no socket error, every response 2xx (the last response of a draining connection says connection: close)', { timeout: 120000 }, async (t) => {
    const sg = await Splicegate.start(lab, {
      workers: 2,
      listeners: [{ name: 'http', address: HTTP_LISTENER, mode: 'http', http: { trusted_sources: [`${ADDR.client4}/32`] } }],
      drain_timeout: '60s',
    });
    try {
      await withDiagnostics(lab, sg, async () => {
        const wrk = startWrk(lab, { url: `http://${HTTP_LISTENER}/r`, connections: 16, seconds: 600, headers: [`x-envoy-original-dst-host: ${ECHO}`] });
        let last = await sg.waitStats((x) => counter(x, 'http_rq_total') >= 1000, 20000, 'wrk running through the listener');
        for (let i = 0; i < 5; i++) {
          const r = await lab.admin('/reload', { address: sg.adminAddress, method: 'POST', timeoutMs: 30000 });
          assert.equal(r.status, 200, `reload ${i + 1}: ${r.status} ${r.body}`);
          // Requests flow on the new generation before the next reload.
          const floor = counter(last, 'http_rq_total') + 1000;
          last = await sg.waitStats((x) => counter(x, 'http_rq_total') >= floor, 20000, `requests after reload ${i + 1}`);
        }
        const w = await stopWrk(wrk, 20000);
        t.diagnostic(`${w.requests} requests over 16 connections across 5 reloads; errors ${JSON.stringify(w.errors)}`);
        assert.ok(w.requests >= 5000, `wrk made only ${w.requests} requests`);
        assert.deepEqual(w.errors, { connect: 0, read: 0, write: 0, status: 0, timeout: 0 });
        assert.ok(sg.proc.running);
      });
    } finally {
      await sg.dispose();
    }
  });
});
