// Socket activation: systemd-socket-activate (systemd's own launcher for the sd_listen_fds
// protocol) binds the sockets in the lab's gateway namespace, waits for the first connection,
// then execs splicegate with LISTEN_FDS set. That first connection, queued before splicegate
// existed, is relayed; the listening socket afterwards is the very socket the launcher bound (same
// inode, at the passed fd number: no second bind); a listener without a passed socket binds its
// own; a passed socket no listener wants is reported and closed; a named socket bound elsewhere
// than its listener stops the start with exit 1.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab } from '../lab/lab';
import { Splicegate, type SplicegateOptions } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { delta, withDiagnostics } from '../lab/harness';
import { listenSockets, waitListenSockets } from '../lab/listen-sockets';
import { cliPath } from '../lab/paths';

/** The inode of the one LISTEN socket on the port, as `ss -e` reports it. */
async function listenInode(lab: Lab, port: number): Promise<string> {
  const raw = await lab.execOk('gw', 'ss', ['-Hltne', `sport = :${port}`]);
  const inodes = [...raw.matchAll(/ino:(\d+)/g)].map((m) => m[1]);
  assert.equal(inodes.length, 1, raw);
  return inodes[0] as string;
}

describe('socket activation (LISTEN_FDS)', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'sockact' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'A', '--quiet']);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    await lab.redirect({ dport: 8081, toPort: 15002, family: 4 });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('takes over the passed sockets by name and by address, serves the connection that started it, binds nothing twice', { timeout: 90000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const options: SplicegateOptions = {
        workers: 2,
        listeners: [
          { name: 'egress', address: '0.0.0.0:15001' },
          { name: 'second', address: '0.0.0.0:15002' },
          { name: 'own', address: '0.0.0.0:15003' },
        ],
        // fd 3 "egress" (by name), fd 4 the unit's default name (by address), fd 5 nobody's.
        launcher: ['systemd-socket-activate', '-l', '0.0.0.0:15001', '-l', '0.0.0.0:15002', '-l', '127.0.0.1:15099', '--fdname=egress:splicegate.socket:stray'],
        readyTimeoutMs: 60000,
      };
      const starting = Splicegate.start(lab, options);
      starting.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
      // The launcher alone holds the sockets until a connection arrives.
      const bound = await waitListenSockets(lab, 15001, (v) => v.sockets === 1 && v.holders.length === 1, 20000, 'the launcher listening on 15001');
      await waitListenSockets(lab, 15099, (v) => v.sockets === 1, 20000, 'the launcher listening on 15099');
      const launcherPid = bound.holders[0]?.pid;
      assert.equal(bound.holders[0]?.fd, 3, bound.raw);
      const inodes = { 15001: await listenInode(lab, 15001), 15002: await listenInode(lab, 15002) };
      assert.equal((await listenSockets(lab, 15003)).sockets, 0, 'nothing on the unpassed listener yet');

      // This connection makes the launcher exec splicegate; it waits in the passed socket's queue.
      const first = await connectMany(lab, { target: '10.10.2.2:8080', n: 1, expectId: 'A', timeoutMs: 30000 });
      assert.equal(first.ok, 1, JSON.stringify(first.errors));
      sg = await starting;

      // Same process (the launcher exec'd it), same sockets, at the passed fd numbers.
      for (const [port, fd] of [
        [15001, 3],
        [15002, 4],
      ] as const) {
        const v = await listenSockets(lab, port);
        assert.equal(v.sockets, 1, v.raw);
        assert.equal(await listenInode(lab, port), inodes[port], `port ${port}: the launcher's socket, not a new one`);
        assert.ok(v.holders.every((h) => h.pid === launcherPid), v.raw);
        assert.ok(v.holders.some((h) => h.fd === fd), `main thread holds fd ${fd}: ${v.raw}`);
        assert.equal(v.holders.length, 3, `main fd plus one dup per worker: ${v.raw}`);
      }
      const own = await listenSockets(lab, 15003);
      assert.equal(own.sockets, 1, own.raw);
      // Bound by splicegate itself (nothing listened there before the exec).
      assert.ok(own.holders.length === 3 && own.holders.every((h) => h.pid === launcherPid), own.raw);
      assert.equal((await listenSockets(lab, 15099)).sockets, 0, 'the stray passed socket is closed');

      const log = sg.proc.stderr;
      assert.match(log, /listener socket passed by the service manager listener=egress fd=3 matched_by=name/);
      assert.match(log, /listener socket passed by the service manager listener=second fd=4 matched_by=address/);
      assert.match(log, /no socket passed for listener: it binds its own listener=own address=0\.0\.0\.0:15003/);
      assert.match(log, /passed socket not used by any listener: closed fd=5 name=stray reason="?no listener on 127\.0\.0\.1:15099/);

      // Traffic through both passed sockets.
      const before = await sg.stats();
      const r1 = await connectMany(lab, { target: '10.10.2.2:8080', n: 30, concurrency: 6, expectId: 'A' });
      assert.equal(r1.ok, 30, JSON.stringify(r1.errors));
      const after = await sg.waitStats((s) => delta(s, before, 'downstream_cx_total') >= 30, 10000, '30 connections counted');
      assert.equal(delta(after, before, 'downstream_cx_total'), 30);
    }),
  );

  it('a passed socket named like a listener but bound elsewhere stops the start (exit 1, naming both)', { timeout: 60000 }, async () => {
    const file = path.join(lab.tmpDir(), 'mismatch.yaml');
    fs.writeFileSync(file, Splicegate.buildConfig({ workers: 1, admin: '127.0.0.1:9903', listeners: [{ name: 'egress', address: '0.0.0.0:15011' }] }));
    const proc = lab.start('gw', 'systemd-socket-activate', ['-l', '127.0.0.1:15012', '--fdname=egress', process.execPath, cliPath, 'run', '--config', file], {
      stdin: 'ignore',
      label: 'mismatched splicegate',
    });
    await waitListenSockets(lab, 15012, (v) => v.sockets === 1, 20000, 'the launcher listening on 15012');
    await lab.execOk('gw', process.execPath, ['-e', "require('net').connect(15012, '127.0.0.1').on('connect', function () { this.destroy(); }).on('error', () => {})"]);
    const exit = await proc.waitExit(30000);
    assert.deepEqual(exit, { code: 1, signal: null }, proc.diagnostics());
    assert.match(proc.stderr, /egress 0\.0\.0\.0:15011 \(passed fd 3\): bound to 127\.0\.0\.1:15012/, proc.stderr);
    assert.equal((await listenSockets(lab, 15011)).sockets, 0, 'nothing bound instead');
  });
});
