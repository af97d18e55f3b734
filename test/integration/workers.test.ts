// Supervision: a worker thread that dies is restarted while the others keep serving on the same
// listening sockets (owned by the process, so nothing queued is lost); a worker that keeps dying
// is backed off and given up; nothing is restarted once draining began.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../lab/lab';
import { Splicegate, type SplicegateOptions } from '../lab/splicegate';
import { connectMany, HoldClient, probe } from '../lab/clients';
import { withDiagnostics } from '../lab/harness';
import { listenSockets, logIndex, waitForLog, waitListenSockets } from '../lab/listen-sockets';
import type { JsonObject } from '../lab/util';

const PORT = 15001;
const TARGET = '10.10.2.2:8080';
const HOLD_TARGET = '10.10.2.2:8081';

function options(extra: Partial<SplicegateOptions> = {}): SplicegateOptions {
  return {
    workers: 2,
    listeners: [{ name: 'egress', address: `0.0.0.0:${PORT}` }],
    env: { SPLICEGATE_TEST_HOOKS: '1' },
    ...extra,
  };
}

async function crash(sg: Splicegate, id: number): Promise<void> {
  const r = await sg.adminPost(`/debug/crash-worker?id=${id}`);
  assert.equal(r.status, 202, `crash-worker ${id}: ${r.status} ${r.body}`);
}

interface StreamConnection {
  t0: number;
  t1: number;
  ok: boolean;
  phase?: string;
  code?: string;
}

const CONCURRENCY = 16;

function logTime(line: string): number {
  const t = Date.parse(line.split(' ')[0] ?? '');
  assert.ok(Number.isFinite(t), `log line without a timestamp: ${line}`);
  return t;
}

describe('worker supervision', () => {
  let lab: Lab;

  /**
   * Kills worker 0 while a stream of new connections runs, until its replacement has served a
   * while. Connections that worker 0 was relaying are reset (an abnormal end); every other one,
   * above all those started while it was down, must succeed, and none may fail to connect.
   */
  async function crashUnderStream(sg: Splicegate, workers: number): Promise<void> {
    const stream = lab.startClient('stream', ['--target', TARGET, '--concurrency', String(CONCURRENCY), '--expect-id', 'A']);
    try {
      const served = (e: JsonObject): boolean => e['event'] === 'cx' && e['ok'] === true;
      await stream.waitForEvents(served, 200, 30000, '200 connections of the stream');
      await crash(sg, 0);
      // The slot went dead (the thread ended: no part of worker 0 accepts after this)...
      const tDied = logTime(await waitForLog(sg, /worker died; restarting worker=0 generation=0 /, 15000));
      // ...and a new generation listens again.
      const tBack = logTime(await waitForLog(sg, /worker listening worker=0 generation=1 /, 15000));
      assert.ok(tDied <= tBack, 'worker 0 was reported dead before its replacement listened');
      await stream.waitForEvents((e) => served(e) && Number(e['t0']) > tBack, 200, 30000, '200 connections after the restart');
      stream.write('stop\n');
      assert.ok(await stream.waitExit(30000), 'stream stopped');
      const cxs = stream.eventsNamed('cx') as unknown as StreamConnection[];
      const failed = cxs.filter((c) => !c.ok);
      const brief = JSON.stringify({ tDied, tBack, failed: failed.slice(0, 20) });
      // Refused or unanswered: nothing was listening (or a queue was lost). A reset during connect
      // is a connection the killed worker had just accepted.
      const notListening = failed.filter((c) => c.code === 'ECONNREFUSED' || c.code === 'CONNECT_TIMEOUT');
      assert.deepEqual(notListening, [], `connects refused: ${brief}`);
      assert.deepEqual(failed.filter((c) => c.t0 >= tDied), [], `connections started after worker 0 died failed: ${brief}`);
      assert.ok(failed.length <= CONCURRENCY, `more failures than connections open at the crash: ${brief}`);
      // Served although open while worker 0 was down: by the other worker, or (one worker) queued
      // on the process's socket until the replacement accepted them.
      const acrossDowntime = cxs.filter((c) => c.ok && c.t0 < tBack && c.t1 > tDied);
      assert.ok(acrossDowntime.length > 0, `no connection was open while worker 0 was down (${workers} workers): ${brief}`);
      assert.ok(cxs.length >= 400, `stream too short: ${cxs.length}`);
    } finally {
      if (stream.running) await stream.stop('SIGKILL', 1000);
    }
  }

  before(async () => {
    lab = await Lab.create({ name: 'workers' });
    await lab.startServer('identity', ['--listen', TARGET, '--id', 'A', '--quiet']);
    await lab.startServer('hold', ['--listen', HOLD_TARGET]);
    await lab.redirect({ dport: [8080, 8081], toPort: PORT, family: 4 });
  });

  after(async () => {
    await lab?.destroy();
  });

  for (const workers of [2, 1]) {
    it(`${workers} worker(s), one killed under a steady stream of new connections: only what it was relaying fails, nothing queued is lost`, { timeout: 90000 }, async () => {
      const sg = await Splicegate.start(lab, options({ workers }));
      try {
        await withDiagnostics(lab, sg, async () => {
          // One listening socket, held by the main thread and by one dup per worker.
          const before = await listenSockets(lab, PORT);
          assert.equal(before.sockets, 1, before.raw);
          assert.equal(before.holders.length, 1 + workers, before.raw);
          await crashUnderStream(sg, workers);
          // The dead worker kept no fd of the socket; the replacement holds one; still one socket.
          const after = await waitListenSockets(lab, PORT, (v) => v.holders.length === 1 + workers, 10000, 'main + one dup per worker');
          assert.equal(after.sockets, 1, after.raw);
          await sg.waitReady(10000);
        });
      } finally {
        await sg.dispose();
      }
    });
  }

  it('a worker that keeps dying after it listens is restarted with growing delays, then left down', { timeout: 90000 }, async () => {
    const sg = await Splicegate.start(lab, options());
    try {
      await withDiagnostics(lab, sg, async () => {
        const delays = [100, 250, 500, 1000];
        for (let generation = 0; generation < 5; generation++) {
          await waitForLog(sg, new RegExp(`worker listening worker=0 generation=${generation} `), 20000);
          await crash(sg, 0);
          if (generation < delays.length) {
            await waitForLog(
              sg,
              new RegExp(`worker died; restarting worker=0 generation=${generation} .*failures=${generation + 1} restart_in_ms=${delays[generation]}$`),
              15000,
            );
          }
        }
        await waitForLog(sg, /worker keeps dying; not restarting it worker=0 failures=5 /, 15000);
        assert.equal(logIndex(sg, /worker listening worker=0 generation=5 /), -1, 'no sixth generation');
        // The other worker still serves on the shared socket, which only it now holds with main.
        const r = await connectMany(lab, { target: TARGET, n: 40, concurrency: 8, expectId: 'A' });
        assert.equal(r.ok, 40, JSON.stringify(r.errors));
        const v = await waitListenSockets(lab, PORT, (x) => x.holders.length === 2, 10000, 'main + 1 worker dup');
        assert.equal(v.sockets, 1, v.raw);
        const ready = await sg.adminGet('/ready');
        assert.equal(ready.status, 503, ready.body);
        assert.match(ready.body, /1\/2 workers listening/);
        // The dashboard's header: 4 relaunches (generations 1..4), one of two workers alive.
        const info = JSON.parse((await sg.adminGet('/server_info')).body) as { workers: unknown; state: string };
        assert.deepEqual(info.workers, { configured: 2, alive: 1, restarts: 4 });
        assert.equal(info.state, 'starting');
      });
    } finally {
      await sg.dispose();
    }
  });

  it('a dead worker\'s connections live on in its orphaned loop; a drain waits for it, a second signal resets them and the process exits 0', { timeout: 90000 }, async () => {
    // drain_timeout (which also bounds the orphan) far longer than the test: only the signal cuts.
    const sg = await Splicegate.start(lab, options({ workers: 1, drain_timeout: '60s' }));
    let hold: HoldClient | undefined;
    try {
      await withDiagnostics(lab, sg, async () => {
        hold = new HoldClient(lab, { target: HOLD_TARGET, n: 4, concurrency: 4 });
        assert.equal((await hold.waitHeld(15000)).stillOpen, 4);
        await crash(sg, 0);
        await waitForLog(sg, /worker died; restarting worker=0 generation=0 /, 15000);
        await waitForLog(sg, /worker listening worker=0 generation=1 /, 15000);
        // The only worker died, yet its 4 connections are still relayed, by its orphaned loop.
        const s = await sg.waitStats((x) => x.raw['workers_orphaned'] === 1, 10000, 'one orphan');
        assert.equal(s.downstream_cx_active, 4, 'the orphan holds the 4 connections');
        sg.proc.signal('SIGTERM');
        await waitForLog(sg, /draining signal=SIGTERM/, 10000);
        // The drain waits for the orphan's connections as for any worker's: it does not exit.
        await sg.waitStats((x) => x.raw['listeners_active'] === 0 && x.raw['workers_orphaned'] === 1, 10000, 'draining, orphan still there');
        assert.equal(sg.proc.running, true, 'exited while the orphan still relayed');
        sg.proc.signal('SIGTERM');
        const exit = await sg.proc.waitExit(15000);
        assert.deepEqual(exit, { code: 0, signal: null });
        await waitForLog(sg, /second signal: closing active connections now/, 1000);
        const rel = await hold.release(10000);
        // Open until the second signal cut them, then reset (not a FIN: the streams did not end).
        assert.equal(rel.droppedWhileHeld, 4, JSON.stringify(rel));
        assert.equal(rel.droppedByReset, 4, JSON.stringify(rel));
      });
    } finally {
      await sg.dispose();
    }
  });

  it('a worker that dies during drain is not restarted: nothing listens again', { timeout: 90000 }, async () => {
    const sg = await Splicegate.start(lab, options({ drain_timeout: '20s' }));
    let hold: HoldClient | undefined;
    try {
      await withDiagnostics(lab, sg, async () => {
        // Open connections keep the drain going while the worker dies.
        hold = new HoldClient(lab, { target: HOLD_TARGET, n: 8, concurrency: 8 });
        const held = await hold.waitHeld(15000);
        assert.equal(held.stillOpen, 8);
        sg.proc.signal('SIGTERM');
        // Draining: the listening socket is closed (main's fd and every worker's dup).
        await waitListenSockets(lab, PORT, (v) => v.sockets === 0, 10000, 'no listening socket while draining');
        await crash(sg, 0);
        await waitForLog(sg, /worker died while draining; not restarting it worker=0 /, 15000);
        const late = await probe(lab, { target: TARGET, send: 'hi\n', waitMs: 1000 });
        assert.equal(late.connected, false, `a connection during drain was accepted: ${JSON.stringify(late)}`);
        assert.equal((await listenSockets(lab, PORT)).sockets, 0);
        assert.equal(logIndex(sg, /worker listening worker=0 generation=1 /), -1, 'worker 0 was restarted during drain');
        await hold.release(10000);
        const exit = await sg.proc.waitExit(30000);
        assert.deepEqual(exit, { code: 0, signal: null });
      });
    } finally {
      await sg.dispose();
    }
  });
});
