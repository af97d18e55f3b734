// Listening sockets belong to the process: a second splicegate with the same config cannot join
// them (no SO_REUSEPORT) and exits 1 naming the address, while the first keeps all the traffic.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab } from '../lab/lab';
import { Splicegate, type SplicegateOptions } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { delta, withDiagnostics } from '../lab/harness';
import { listenSockets } from '../lab/listen-sockets';
import { cliPath } from '../lab/paths';

describe('listening sockets', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  const config: SplicegateOptions = {
    workers: 2,
    listeners: [
      { name: 'egress', address: '0.0.0.0:15001' },
      { name: 'egress6', address: '[::]:15006' },
    ],
  };

  before(async () => {
    lab = await Lab.create({ name: 'listeners' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'A', '--quiet']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    sg = await Splicegate.start(lab, config);
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  for (const [what, listeners, address] of [
    ['the same config', config.listeners, '0.0.0.0:15001'],
    ['only the IPv6 listener', [{ name: 'other', address: '[::]:15006' }], '[::]:15006'],
  ] as const) {
    it(`a second instance with ${what} fails with EADDRINUSE naming ${address}, exit 1; the first keeps the traffic`, { timeout: 60000 }, () =>
      withDiagnostics(lab, sg, async () => {
        if (!sg) throw new Error('no splicegate');
        // Its own admin port, so that the listener is the only thing the two share.
        const text = Splicegate.buildConfig({ ...config, listeners: [...listeners], admin: '127.0.0.1:9902' });
        const file = path.join(lab.tmpDir(), `second-${listeners.length}.yaml`);
        fs.writeFileSync(file, text);
        const second = lab.start('gw', process.execPath, [cliPath, 'run', '--config', file], { stdin: 'ignore', label: 'second splicegate' });
        const exit = await second.waitExit(20000);
        assert.deepEqual(exit, { code: 1, signal: null }, second.diagnostics());
        assert.ok(second.stderr.includes('EADDRINUSE'), second.stderr);
        assert.ok(second.stderr.includes(address), second.stderr);
        assert.doesNotMatch(second.stderr, /worker listening/, 'no worker of the second instance started');

        // Still one socket per listener, held only by the first instance (main + 2 worker dups).
        for (const port of [15001, 15006]) {
          const v = await listenSockets(lab, port);
          assert.equal(v.sockets, 1, v.raw);
          assert.equal(v.holders.length, 3, v.raw);
          assert.ok(v.holders.every((h) => h.pid === v.holders[0]?.pid), v.raw);
        }
        const before = await sg.stats();
        const r = await connectMany(lab, { target: '10.10.2.2:8080', n: 40, concurrency: 8, expectId: 'A' });
        assert.equal(r.ok, 40, JSON.stringify(r.errors));
        const afterStats = await sg.waitStats((s) => delta(s, before, 'downstream_cx_total') >= 40, 10000, 'first instance counted all 40');
        assert.equal(delta(afterStats, before, 'downstream_cx_total'), 40);
      }),
    );
  }
});
