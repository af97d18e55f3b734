// Resource faults: an upstream that stops reading (memory stays bounded by the configured pipe and
// buffer sizes, back-pressure reaches the client) and fd exhaustion (accept pauses, nothing is
// dropped silently, the proxy recovers and leaks no fd).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../lab/lab';
import { LabProcess } from '../lab/process';
import { Splicegate } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { withDiagnostics } from '../lab/harness';
import { clientScript, serverScript } from '../lab/paths';
import { waitForLog } from '../lab/listen-sockets';
import { acceptQueue, fdCount, mib, MiB, nofileLimit, rssBytes, stat, tcpQueues } from '../lab/resources';
import { isJsonObject, parseJsonObject, waitFor } from '../lab/util';

const KiB = 1024;

// ---------------------------------------------------------------------------------------------
// Upstream that stops reading

const STALL_PORT = 8090;
const PIPE_SIZE = 256 * KiB;
const COPY_BUFFER = 64 * KiB;
const CONNS = 4;
const PUSH_BYTES = 64 * MiB; // per connection: 256 MiB in all
// What a Node process may hold per socket beyond the kernel queues: the readable side's high-water
// mark plus one 64 KiB libuv read (stall server), one 64 KiB chunk in flight (push client).
const NODE_SLACK = 192 * KiB;
// RSS noise of an idle Node process with worker threads over a few seconds (GC, JIT, admin
// requests): generous, yet far below what buffering the pushed data in user space would add.
const RSS_SLACK = 48 * MiB;

interface Progress {
  handed: number[];
  ms: number;
}

function progressEvents(proc: LabProcess): Progress[] {
  return proc.eventsNamed('progress').flatMap((e) => {
    const h = e['handed'];
    const ms = e['ms'];
    if (!Array.isArray(h) || typeof ms !== 'number') return [];
    return [{ handed: h.map(Number), ms }];
  });
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** The client's progress once it has not moved for `quietMs` (its writes are blocked). */
function waitStalled(push: LabProcess, quietMs: number, timeoutMs: number): Promise<Progress> {
  return waitFor(
    () => {
      const ev = progressEvents(push);
      const last = ev[ev.length - 1];
      if (!last || sum(last.handed) === 0) return undefined;
      const window = ev.filter((p) => p.ms >= last.ms - quietMs);
      const first = window[0];
      if (!first || last.ms - first.ms < quietMs - 300) return undefined;
      return window.every((p) => sum(p.handed) === sum(last.handed)) ? last : undefined;
    },
    { timeoutMs, intervalMs: 200, what: `client writes to stall for ${quietMs} ms`, diagnostics: () => push.diagnostics(2000) },
  );
}

function stallCase(relayMode: 'auto' | 'copy'): void {
  describe(`upstream that stops reading (relay_mode ${relayMode})`, () => {
    let lab: Lab;
    let sg: Splicegate | undefined;
    let server: LabProcess;

    before(async () => {
      lab = await Lab.create({ name: `stall${relayMode}` });
      server = lab.start('srv', 'node', [serverScript('stall'), '--listen', `10.10.2.2:${STALL_PORT}`], { label: 'server:stall' });
      await server.waitForLine((l) => l.startsWith('READY '), 10000, 'READY');
      await lab.redirect({ dport: STALL_PORT, toPort: 15001, family: 4 });
      sg = await Splicegate.start(lab, {
        listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
        extra: { tuning: { relay_mode: relayMode, pipe_size: PIPE_SIZE, copy_buffer_size: COPY_BUFFER } },
      });
    });

    after(async () => {
      await sg?.dispose();
      await lab?.destroy();
    });

    it(`${CONNS} clients pushing ${PUSH_BYTES / MiB} MiB each: the proxy holds at most its pipes and buffers, the clients block, then all of it arrives`, { timeout: 120000 }, (t) =>
      withDiagnostics(lab, sg, async () => {
        if (!sg) throw new Error('no splicegate');
        const pid = sg.proc.pid;
        const s0 = await sg.stats();
        const rss0 = rssBytes(pid);

        const push = lab.startClient('push', ['--target', `10.10.2.2:${STALL_PORT}`, '--n', String(CONNS), '--bytes', String(PUSH_BYTES), '--timeout-ms', '100000']);
        await server.waitForEvents((e) => e['event'] === 'conn', CONNS, 15000, 'every connection reached the server');
        const stalled = await waitStalled(push, 2000, 60000);

        // ---- while: nothing moves
        const s1 = await sg.stats();
        const rss1 = rssBytes(pid);
        const clientQ = await tcpQueues(lab, 'cli', `dport = :${STALL_PORT}`);
        const gwDown = await tcpQueues(lab, 'gw', 'sport = :15001');
        const gwUp = await tcpQueues(lab, 'gw', `dport = :${STALL_PORT}`);
        const serverQ = await tcpQueues(lab, 'srv', `sport = :${STALL_PORT}`);
        const handed = sum(stalled.handed);
        const inKernel = sum(clientQ.map((q) => q.sendQ)) + sum(gwDown.map((q) => q.recvQ)) + sum(gwUp.map((q) => q.sendQ)) + sum(serverQ.map((q) => q.recvQ));
        const unaccounted = handed - inKernel;
        const perConnBound = 2 * (PIPE_SIZE + COPY_BUFFER) + NODE_SLACK;
        t.diagnostic(
          `handed per conn ${stalled.handed.map(mib).join(', ')}; kernel queues ${mib(inKernel)} ` +
            `(client send ${mib(sum(clientQ.map((q) => q.sendQ)))}, proxy recv ${mib(sum(gwDown.map((q) => q.recvQ)))}, ` +
            `proxy send ${mib(sum(gwUp.map((q) => q.sendQ)))}, server recv ${mib(sum(serverQ.map((q) => q.recvQ)))}); ` +
            `held in processes ${mib(unaccounted)} (bound ${mib(CONNS * perConnBound)}); ` +
            `RSS ${mib(rss0)} -> ${mib(rss1)}; pipes_in_use ${stat(s0, 'pipes_in_use')} -> ${stat(s1, 'pipes_in_use')}`,
        );
        assert.ok(sg.proc.running, 'splicegate is still running');
        assert.equal(clientQ.length, CONNS, `client sockets: ${JSON.stringify(clientQ)}`);
        assert.equal(gwDown.length, CONNS, `proxy's client-side sockets: ${JSON.stringify(gwDown)}`);
        for (const [i, h] of stalled.handed.entries()) assert.ok(h < PUSH_BYTES, `connection ${i} is blocked: handed ${h} of ${PUSH_BYTES}`);
        // Back-pressure reaches the client: its own send queue fills, and so does the proxy's
        // receive queue from it (the proxy stops reading instead of buffering).
        for (const q of clientQ) assert.ok(q.sendQ > 0, `client send queue filled: ${JSON.stringify(q)}`);
        for (const q of gwDown) assert.ok(q.recvQ > 0, `proxy stopped reading from the client: ${JSON.stringify(q)}`);
        // Everything the clients handed to their kernels sits in a kernel socket queue, except
        // at most the proxy's pipes and copy buffers (and the two Node fixtures' read/write slack).
        assert.ok(unaccounted <= CONNS * perConnBound, `held outside kernel queues: ${mib(unaccounted)} > ${mib(CONNS * perConnBound)}`);
        assert.ok(
          rss1 - rss0 <= CONNS * 2 * (PIPE_SIZE + COPY_BUFFER) + RSS_SLACK,
          `RSS grew ${mib(rss1 - rss0)} while ${mib(handed)} were pushed (bound ${mib(CONNS * 2 * (PIPE_SIZE + COPY_BUFFER) + RSS_SLACK)})`,
        );
        assert.ok(stat(s1, 'pipes_in_use') <= 2 * CONNS, `pipes_in_use ${stat(s1, 'pipes_in_use')} <= ${2 * CONNS}`);

        // ---- after: the server reads; every byte arrives intact and the proxy lets go of it all
        server.write('read\n');
        const exit = await push.waitExit(100000);
        assert.deepEqual(exit, { code: 0, signal: null }, push.diagnostics());
        const result = push.eventsNamed('result').pop();
        assert.ok(result && result['ok'] === true, `push result: ${JSON.stringify(result)}`);
        const conns = result['conns'];
        assert.ok(Array.isArray(conns) && conns.length === CONNS);
        const sentHashes = conns.map((c) => (isJsonObject(c) ? String(c['sha256']) : '')).sort();
        const done = await server.waitForEvents((e) => e['event'] === 'done', CONNS, 15000, 'server read every connection to its end');
        assert.deepEqual(done.map((d) => d['bytes']), Array<number>(CONNS).fill(PUSH_BYTES));
        assert.deepEqual(done.map((d) => String(d['sha256'])).sort(), sentHashes, 'the server got exactly what was sent');
        assert.equal(server.eventsNamed('error').length, 0, JSON.stringify(server.eventsNamed('error')));

        const s2 = await sg.waitStats((s) => s.downstream_cx_active === 0 && s.upstream_cx_active === 0 && stat(s, 'pipes_in_use') === 0, 10000, 'connections closed, pipes returned');
        const rss2 = rssBytes(pid);
        t.diagnostic(`after: RSS ${mib(rss2)}, pipes_in_use ${stat(s2, 'pipes_in_use')}, pipes_idle ${stat(s2, 'pipes_idle')}`);
        assert.ok(rss2 - rss0 <= CONNS * 2 * (PIPE_SIZE + COPY_BUFFER) + RSS_SLACK, `RSS after ${mib(rss2)} vs before ${mib(rss0)}`);
      }),
    );
  });
}

stallCase('auto');
stallCase('copy');

// ---------------------------------------------------------------------------------------------
// fd exhaustion

const SG_NOFILE = 512;
const IDENT_PORT = 8080;

type Counts = Record<string, number>;

function lastStatus(proc: LabProcess): Counts | undefined {
  const e = proc.eventsNamed('status').pop();
  const c = e?.['counts'];
  if (!isJsonObject(c)) return undefined;
  const out: Counts = {};
  for (const [k, v] of Object.entries(c)) out[k] = Number(v);
  return out;
}

const count = (c: Counts | undefined, k: string): number => c?.[k] ?? 0;
/** The proxy's out-of-fds warnings (src/proxy/fd-warning.ts): one per process, however often accepting pauses. */
const fdWarnings = (proxy: Splicegate): string[] => proxy.stderr.split('\n').filter((l) => / warn out of file descriptors: /.test(l));

/** fd count once it has stayed the same over two reads (the process is idle). */
async function steadyFdCount(pid: number): Promise<number> {
  let prev = -1;
  return waitFor(
    () => {
      const n = fdCount(pid);
      const same = n === prev;
      prev = n;
      return same ? n : undefined;
    },
    { timeoutMs: 10000, intervalMs: 300, what: 'a steady fd count' },
  );
}

/**
 * Which resource runs out first depends on the parity of the fds left once the proxy is up: with an
 * even number every relayed connection gets both its fds and then accept4 fails (EMFILE); with an
 * odd number one accept4 gets the last fd and that connection's upstream socket() fails (the
 * worker's spare fd, or a wait for the next free fd, serves it). Both happen in production; each
 * case starts splicegate with the limit that yields its parity. The parity is where each case
 * starts, not a guarantee: the two workers share the fd table (one's spare fd may go to the other's
 * accept4), and so does the admin server. Whatever the order, no client is reset.
 */
type Headroom = 'even' | 'odd';

describe('fd exhaustion', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'fdexhaust' });
    await lab.startServer('identity', ['--listen', `10.10.2.2:${IDENT_PORT}`, '--id', 'S', '--quiet'], { nofile: 20000 });
    await lab.redirect({ dport: IDENT_PORT, toPort: 15001, family: 4 });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  async function startWith(headroom: Headroom): Promise<{ sg: Splicegate; limit: number; base: number }> {
    for (const limit of [SG_NOFILE, SG_NOFILE + 1]) {
      await sg?.dispose();
      sg = await Splicegate.start(lab, {
        listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
        nofile: limit,
        // No connection bound below the fd limit: the fd limit itself is what this test runs into.
        // A client accepted without an fd for its upstream waits for one within connect_timeout:
        // longer than this test holds the proxy out of fds.
        cluster: { max_downstream_connections: 100000, connect_timeout: '120s' },
      });
      assert.equal(nofileLimit(sg.proc.pid), limit, 'splicegate runs with the low open-files limit');
      await sg.stats(); // the admin path has opened what it opens
      const base = await steadyFdCount(sg.proc.pid);
      if ((limit - base) % 2 === (headroom === 'even' ? 0 : 1)) return { sg, limit, base };
    }
    throw new Error(`cannot get ${headroom} fd headroom: the baseline fd count moves between starts`);
  }

  for (const headroom of ['even', 'odd'] as const) {
    const what = headroom === 'even' ? 'accept4 runs out of fds first' : 'accept4 gets the last fd, the upstream socket does not';
    it(`more connections than fds (${what}): accept pauses, none is dropped silently or reset, the rest waits, and the proxy recovers without leaking`, { timeout: 150000 }, (t) =>
      withDiagnostics(lab, sg, async () => {
        const started = await startWith(headroom);
        const { limit, base } = started;
        const proxy = started.sg;
        const pid = proxy.proc.pid;
        const s0 = await proxy.stats();
        // Each relayed connection takes two fds, so this is more than the proxy can hold.
        const n = Math.ceil(limit / 2) + 100;
        const client = lab.startClient('hold-pending', ['--target', `10.10.2.2:${IDENT_PORT}`, '--n', String(n), '--speak', 'server'], { nofile: 20000 });

        // ---- exhausted: every connection is through the handshake, the proxy's fds are used up
        // and no more connections get relayed.
        let prev = -1;
        const held = await waitFor(
          () => {
            const c = lastStatus(client);
            if (!c || count(c, 'connecting') > 0) return undefined;
            const steady = count(c, 'relayed') === prev;
            prev = count(c, 'relayed');
            return steady && fdCount(pid) >= limit - 16 ? c : undefined;
          },
          { timeoutMs: 60000, intervalMs: 1000, what: 'the proxy to run out of fds and the clients to settle', diagnostics: () => `${JSON.stringify(lastStatus(client))} fds ${fdCount(pid)}` },
        );
        const fdsFull = fdCount(pid);
        const backlog = await acceptQueue(lab, 'gw', 15001);
        t.diagnostic(`limit ${limit}, baseline fds ${base}, ${n} connections -> ${JSON.stringify(held)}; proxy fds ${fdsFull}; accept queue ${backlog}`);
        assert.ok(proxy.proc.running, 'splicegate survived running out of fds');
        assert.equal(count(held, 'eof'), 0, `connections ended with a clean EOF before any data (dropped silently): ${JSON.stringify(held)}`);
        assert.equal(count(held, 'error') + count(held, 'refused') + count(held, 'dropped') + count(held, 'reset'), 0, `unexpected states ${JSON.stringify(held)}`);
        const relayed = count(held, 'relayed');
        const waiting = count(held, 'waiting');
        assert.ok(relayed >= (limit - base) / 2 - 8, `the fd budget is used for relaying: ${relayed} relayed`);
        assert.equal(relayed + waiting, n);
        // Those that wait sit in the listen backlog, or were accepted and wait for an fd for their
        // upstream socket (checked below: the admin server has no fd for /stats now).
        assert.ok(backlog <= waiting, `waiting ${waiting}, accept queue ${backlog}`);
        // Observed, not required: the admin server shares the process's fds.
        const admin = await proxy.adminGet('/ready');
        t.diagnostic(`admin /ready while out of fds: ${admin.status} ${admin.error ?? ''}`);

        // ---- recovery: the relayed connections close, the waiting ones are accepted and relayed.
        client.write('release-relayed\n');
        const recovered = await waitFor(
          () => {
            const c = lastStatus(client);
            return c && count(c, 'waiting') === 0 && count(c, 'released') === relayed ? c : undefined;
          },
          { timeoutMs: 30000, intervalMs: 200, what: 'every waiting connection to be served', diagnostics: () => JSON.stringify(lastStatus(client)) },
        );
        t.diagnostic(`after releasing the relayed ones: ${JSON.stringify(recovered)}`);
        assert.equal(count(recovered, 'eof'), 0, `dropped silently: ${JSON.stringify(recovered)}`);
        const servedLate = count(recovered, 'relayed');
        assert.equal(count(recovered, 'reset'), 0, `reset: ${JSON.stringify(recovered)}`);
        assert.equal(servedLate, waiting, `every connection that waited is relayed now: ${JSON.stringify(recovered)}`);
        const s2 = await proxy.waitStats((s) => s.downstream_cx_active === servedLate, 10000, `downstream_cx_active == ${servedLate}`);
        const fdWaits = stat(s2, 'upstream_cx_fd_wait') - stat(s0, 'upstream_cx_fd_wait');
        t.diagnostic(`accepted clients that waited for an upstream fd: ${fdWaits}`);
        assert.ok(waiting <= backlog + fdWaits, `waiting ${waiting}: accept queue ${backlog} + waited for an fd ${fdWaits}`);
        assert.ok(stat(s2, 'downstream_cx_accept_paused') > stat(s0, 'downstream_cx_accept_paused'), `downstream_cx_accept_paused rose: ${stat(s0, 'downstream_cx_accept_paused')} -> ${stat(s2, 'downstream_cx_accept_paused')}`);
        // Said once in the log (the counter watch reads every second), not once per pause.
        await waitFor(() => (fdWarnings(proxy).length > 0 ? true : undefined), {
          timeoutMs: 10000,
          intervalMs: 200,
          what: 'the out-of-fds warning in the log',
          diagnostics: () => proxy.stderr.slice(-2000),
        });

        client.write('release\n');
        await client.waitForLine((l) => parseJsonObject(l)?.['event'] === 'released', 30000, 'released');
        await proxy.waitStats((s) => s.downstream_cx_active === 0 && s.upstream_cx_active === 0, 15000, 'every connection closed');
        const fdsAfter = await waitFor(() => (fdCount(pid) <= base ? fdCount(pid) : undefined), {
          timeoutMs: 15000,
          intervalMs: 200,
          what: `the fd count to return to its baseline ${base}`,
          diagnostics: () => `fds now ${fdCount(pid)}`,
        });

        // ---- and it serves new connections as before
        const r = await connectMany(lab, { target: `10.10.2.2:${IDENT_PORT}`, n: 100, concurrency: 100, expectId: 'S', timeoutMs: 20000 });
        assert.equal(r.ok, 100, `new connections relay again: ${JSON.stringify(r.errors)}`);
        await proxy.waitStats((s) => s.downstream_cx_active === 0, 10000, 'new connections closed');
        const fdsFinal = await steadyFdCount(pid);
        t.diagnostic(`fds: baseline ${base}, exhausted ${fdsFull}, after release ${fdsAfter}, after 100 more connections ${fdsFinal}`);
        assert.ok(fdsFinal <= base, `no fd leaked: ${fdsFinal} > baseline ${base}`);
        const warnings = fdWarnings(proxy);
        assert.equal(warnings.length, 1, `one out-of-fds warning for ${stat(s2, 'downstream_cx_accept_paused') - stat(s0, 'downstream_cx_accept_paused')} pauses: ${warnings.join('\n')}`);
        assert.match(warnings[0] ?? '', new RegExp(` nofile=${limit} `));
      }),
    );
  }
});

describe('fd exhaustion: a worker that dies while the process is out of fds', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'fddeath' });
    await lab.startServer('identity', ['--listen', `10.10.2.2:${IDENT_PORT}`, '--id', 'S', '--quiet'], { nofile: 20000 });
    await lab.redirect({ dport: IDENT_PORT, toPort: 15001, family: 4 });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('the process survives its replacement thread failing to start (EMFILE); the worker is back once fds free up, and nothing leaks', { timeout: 150000 }, (t) =>
    withDiagnostics(lab, sg, async () => {
      const limit = SG_NOFILE;
      sg = await Splicegate.start(lab, {
        listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
        nofile: limit,
        cluster: { max_downstream_connections: 100000, connect_timeout: '120s' },
        env: { SPLICEGATE_TEST_HOOKS: '1' },
      });
      const proxy = sg;
      const pid = proxy.proc.pid;
      // Opened before the fds run out: the only way to reach the admin endpoint while they are.
      const admin = lab.start('gw', 'node', [clientScript('admin-keepalive'), '--target', '127.0.0.1:9901'], { label: 'admin-keepalive' });
      await admin.waitForLine((l) => l === 'READY', 10000, 'admin connection');
      await proxy.stats();
      const base = await steadyFdCount(pid);
      const n = Math.ceil(limit / 2) + 50;
      const client = lab.startClient('hold-pending', ['--target', `10.10.2.2:${IDENT_PORT}`, '--n', String(n), '--speak', 'server'], { nofile: 20000 });
      await waitFor(() => (fdCount(pid) >= limit - 2 && count(lastStatus(client), 'connecting') === 0 ? true : undefined), {
        timeoutMs: 60000,
        intervalMs: 200,
        what: 'the proxy to run out of fds',
        diagnostics: () => `${JSON.stringify(lastStatus(client))} fds ${fdCount(pid)}`,
      });
      // Worker 0 dies now: its replacement thread cannot get the fds a thread needs to start.
      admin.write('POST /debug/crash-worker?id=0\n');
      const crashed = await admin.waitForEvents((e) => e['event'] === 'response', 1, 10000, 'crash-worker answered');
      assert.equal(crashed[0]?.['status'], 202, JSON.stringify(crashed));
      await waitForLog(proxy, /worker died; restarting worker=0 generation=0 /, 15000);
      // Its replacement cannot start: either the thread itself (Node needs fds for its loop and to
      // read the worker's module) or the worker's core (epoll_create1). Past the five tries after
      // which a worker that keeps dying on its own is left down.
      await waitForLog(proxy, /worker thread failed to start|worker died; restarting worker=0 generation=\d+ reason="[^"]*EMFILE/, 15000);
      const failedStarts = (): number => proxy.stderr.split('\n').filter((l) => /worker thread failed to start|worker died; restarting worker=0 /.test(l)).length;
      await waitFor(() => (failedStarts() >= 6 || !proxy.proc.running ? true : undefined), {
        timeoutMs: 30000,
        intervalMs: 200,
        what: 'more failed starts than a worker that keeps dying on its own is given',
        diagnostics: () => proxy.stderr.slice(-2000),
      });
      assert.ok(proxy.proc.running, `splicegate survived a worker thread failing to start:\n${proxy.stderr.slice(-3000)}`);
      // The killed worker's loop is the one orphan; its replacements, which never started, left none.
      const orphanLines = proxy.stderr.split('\n').filter((l) => /orphaned worker loops relay what they had/.test(l));
      assert.equal(orphanLines.length, 1, orphanLines.join('\n'));

      // ---- the pressure goes: worker 0 listens again, /ready says so, the process serves
      client.write('release\n');
      await client.waitForLine((l) => parseJsonObject(l)?.['event'] === 'released', 60000, 'released');
      const relisten = await waitForLog(proxy, /worker listening worker=0 generation=[1-9]\d* /, 30000);
      t.diagnostic(`worker 0 back: ${relisten}`);
      const ready = await waitFor(async () => {
        const r = await proxy.adminGet('/ready');
        return r.status === 200 ? r : undefined;
      }, { timeoutMs: 20000, intervalMs: 200, what: '/ready 200 with both workers' });
      assert.match(ready.body, /ready/);
      const info = JSON.parse((await proxy.adminGet('/server_info')).body) as { workers: { configured: number; alive: number } };
      assert.equal(info.workers.alive, 2, JSON.stringify(info.workers));
      const r = await connectMany(lab, { target: `10.10.2.2:${IDENT_PORT}`, n: 100, concurrency: 50, expectId: 'S', timeoutMs: 20000 });
      assert.equal(r.ok, 100, `new connections relay again: ${JSON.stringify(r.errors)}`);
      await proxy.waitStats((s) => s.downstream_cx_active === 0 && stat(s, 'workers_orphaned') === 0, 30000, 'idle, the orphaned loop ended');
      admin.write('GET /ready\n');
      await admin.waitForEvents((e) => e['event'] === 'response', 2, 10000, 'the kept admin connection still answers');
      await admin.stop('SIGTERM', 2000);
      const fdsFinal = await waitFor(() => (fdCount(pid) <= base ? fdCount(pid) : undefined), {
        timeoutMs: 20000,
        intervalMs: 300,
        what: `the fd count to return to its baseline ${base}`,
        diagnostics: () => `fds now ${fdCount(pid)}`,
      });
      t.diagnostic(`fds: baseline ${base}, final ${fdsFinal}`);
    }),
  );
});
