// Reload's parts on their own (no namespaces, no workers): the listen-socket pool's leases, counter
// sums across generations with different counter names, the reloader's refusals and ordering, and
// the admin routes (POST /reload, /ready's generation). The end-to-end behaviour under load is
// test/integration/reload.test.ts.

import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAdminServer } from '../src/admin/admin-server';
import { ConfigError, formatProblems, loadConfigFile, parseConfigText } from '../src/config/load';
import type { SplicegateConfig } from '../src/config/types';
import { loadBinding, type ListenSocket, type NativeListenerOptions } from '../src/native/binding';
import { ListenSocketPool } from '../src/proxy/listen-sockets';
import { listenerChanges, Reloader, reloadResponse, type ReloadOutcome } from '../src/proxy/reload';
import type { ProxyRuntime } from '../src/proxy/runtime';
import { CounterAggregator } from '../src/stats/counters';
import type { GenerationInfo } from '../src/supervisor/generation';
import { createLogger } from '../src/util/logger';

const silent = createLogger('error', () => undefined);

/** A ListenSocket stand-in: counts opens and closes; "fails" on port 1 like a bind error. */
function fakeBinding(): { binding: { ListenSocket: new (o: NativeListenerOptions) => ListenSocket }; open: Map<number, string>; closed: string[] } {
  const open = new Map<number, string>();
  const closed: string[] = [];
  let nextFd = 100;
  class FakeSocket implements ListenSocket {
    fd: number;
    address: string;
    constructor(o: NativeListenerOptions) {
      if (o.port === 1) throw Object.assign(new Error('bind failed'), { code: 'EADDRINUSE' });
      this.fd = nextFd++;
      this.address = `${o.host}:${o.port}`;
      open.set(this.fd, this.address);
    }
    close(): void {
      if (this.fd < 0) return;
      open.delete(this.fd);
      closed.push(this.address);
      this.fd = -1;
    }
  }
  return { binding: { ListenSocket: FakeSocket }, open, closed };
}

function config(yaml: string): SplicegateConfig {
  return parseConfigText(yaml, 'test.yaml');
}

const listeners = (...lines: string[]): string => `listeners:\n${lines.map((l) => `  - ${l}\n`).join('')}`;

describe('ListenSocketPool', () => {
  it('a listener whose address is open shares its socket (any spelling); a socket closes with its last lease', () => {
    const { binding, open, closed } = fakeBinding();
    const pool = new ListenSocketPool(binding);
    const first = pool.lease(config(listeners('{ name: a, address: "[::]:15001" }', '{ name: b, address: "0.0.0.0:15002" }')).listeners);
    const fds = first.handoffs().map((h) => h.fd);
    const second = pool.lease(config(listeners('{ name: renamed, address: "[0:0::0]:15001" }', '{ name: c, address: "0.0.0.0:15003" }')).listeners);
    assert.equal(second.handoffs()[0]?.fd, fds[0], 'same socket (fd) for the kept address');
    assert.equal(second.handoffs()[0]?.options.name, 'renamed', "the new generation's listener options travel with the kept fd");
    assert.equal(open.size, 3);
    first.close();
    assert.deepEqual(closed, ['0.0.0.0:15002'], 'only the address no one leases any more closes');
    first.close();
    assert.deepEqual(closed, ['0.0.0.0:15002'], 'close() is idempotent');
    second.close();
    assert.equal(open.size, 0);
    assert.equal(pool.size, 0);
  });

  it('a lease that fails to open one socket closes the ones it opened and keeps the others', () => {
    const { binding, open, closed } = fakeBinding();
    const pool = new ListenSocketPool(binding);
    const running = pool.lease(config(listeners('{ name: a, address: "0.0.0.0:15001" }')).listeners);
    assert.throws(
      () => pool.lease(config(listeners('{ name: a, address: "0.0.0.0:15001" }', '{ name: b, address: "0.0.0.0:15002" }', '{ name: c, address: "0.0.0.0:1" }')).listeners),
      { code: 'EADDRINUSE' },
    );
    assert.deepEqual(closed, ['0.0.0.0:15002']);
    assert.deepEqual([...open.values()], ['0.0.0.0:15001'], 'the running lease keeps its socket');
    running.close();
  });

  it('a TCP and a UDP listener on one address are two sockets; a kept UDP listener keeps its socket', () => {
    const { binding, open, closed } = fakeBinding();
    const pool = new ListenSocketPool(binding);
    const tcpUdp = (extra = ''): string =>
      listeners('{ name: t, address: "0.0.0.0:15001", transparent: true }', '{ name: u, address: "0.0.0.0:15001", protocol: udp, transparent: true }') + extra;
    const first = pool.lease(config(tcpUdp()).listeners);
    const [tcp, udp] = first.handoffs();
    assert.notEqual(tcp?.fd, udp?.fd, 'two sockets');
    assert.equal(udp?.options.protocol, 'udp');
    assert.equal(tcp?.options.protocol, undefined, 'tcp is the default: not sent');
    const second = pool.lease(config(tcpUdp()).listeners);
    assert.deepEqual(second.handoffs().map((h) => h.fd), [tcp?.fd, udp?.fd], 'both kept');
    first.close();
    second.close();
    assert.equal(open.size, 0);
    assert.equal(closed.length, 2);
    const changes = listenerChanges(config(tcpUdp()), config(listeners('{ name: t, address: "0.0.0.0:15001", transparent: true }')));
    assert.deepEqual(changes, { added: [], removed: ['0.0.0.0:15001/udp'], kept: ['0.0.0.0:15001'] });
  });

  it('conflicts: a kept address may not change transparent or backlog', () => {
    const { binding } = fakeBinding();
    const pool = new ListenSocketPool(binding);
    pool.lease(config(listeners('{ name: a, address: "0.0.0.0:15001" }')).listeners);
    const next = config(listeners('{ name: b, address: "0.0.0.0:15002", backlog: 10 }', '{ name: a, address: "0.0.0.0:15001", transparent: true, backlog: 10 }'));
    assert.deepEqual(
      pool.conflicts(next.listeners).map((p) => p.path),
      ['listeners[1].transparent', 'listeners[1].backlog'],
    );
  });
});

describe('CounterAggregator across generations', () => {
  it('sums blocks by name, keeps retired totals of counters the live blocks no longer have, never retires gauges', () => {
    const base = ['downstream_cx_total', 'downstream_cx_active'];
    const agg = new CounterAggregator(base);
    const gen1 = [...base, 'policy.old.denied'];
    const gen2 = [...base, 'policy.new.denied'];
    const live1 = { names: gen1, values: Float64Array.from([10, 3, 4]) };
    const live2 = { names: gen2, values: Float64Array.from([5, 2, 1]) };
    assert.deepEqual(agg.sumBlocks([live1, live2]), { downstream_cx_total: 15, downstream_cx_active: 5, 'policy.old.denied': 4, 'policy.new.denied': 1 });
    agg.retire(live1.values, gen1);
    assert.deepEqual(agg.sumBlocks([live2]), { downstream_cx_total: 15, downstream_cx_active: 2, 'policy.old.denied': 4, 'policy.new.denied': 1 });
  });
});

interface FakeRuntime {
  runtime: ProxyRuntime;
  started: string[];
  draining: boolean;
  /** Resolves the generation being started (to hold a reload in flight). */
  gate: Promise<void>;
}

const INFO: GenerationInfo = { number: 1, source: 'test.yaml', loadedAt: '2026-01-01T00:00:00.000Z', workers: 1 };

/** The parts of ProxyRuntime the reloader uses, recording what it is asked to do. */
function fakeRuntime(initial: SplicegateConfig, gate: Promise<void> = Promise.resolve()): FakeRuntime {
  const state: FakeRuntime = { runtime: undefined as unknown as ProxyRuntime, started: [], draining: false, gate };
  let queue: Promise<unknown> = Promise.resolve();
  let active = { number: 1, config: initial, info: INFO };
  const fake = {
    get isDraining() {
      return state.draining;
    },
    get active() {
      return active;
    },
    exclusive<T>(fn: () => Promise<T>): Promise<T> {
      const run = queue.then(fn, fn);
      queue = run.catch(() => undefined);
      return run;
    },
    countReload: () => undefined,
    async startGeneration(config: SplicegateConfig, source: string) {
      state.started.push(`start ${config.workers}`);
      await state.gate;
      const number = active.number + 1;
      return { number, config, info: { ...INFO, number, source, workers: config.workers } };
    },
    activate(g: typeof active) {
      active = g;
      state.started.push(`activate ${g.number}`);
    },
    async retire(g: typeof active) {
      state.started.push(`retire ${g.number}`);
    },
  };
  state.runtime = fake as unknown as ProxyRuntime;
  return state;
}

describe('Reloader', () => {
  const dir = mkdtempSync(join(tmpdir(), 'splicegate-reload-'));
  const file = join(dir, 'splicegate.yaml');
  const write = (text: string): void => writeFileSync(file, text);
  const ONE = `workers: 1\n${listeners('{ name: a, address: "0.0.0.0:15001" }')}`;
  const pool = (): ListenSocketPool => new ListenSocketPool(fakeBinding().binding);

  it('an invalid file is refused with every problem and its path, as validate prints them; nothing starts', async () => {
    write(ONE);
    const fake = fakeRuntime(loadConfigFile(file));
    write('workers: 0\nlisteners:\n  - { name: a, address: "0.0.0.0:99999" }\nbogus: 1\n');
    const outcome = await new Reloader({ runtime: fake.runtime, pool: pool(), configPath: file, log: silent }).reload('test');
    assert.equal(outcome.ok, false);
    if (outcome.ok) return;
    assert.equal(outcome.reason, 'invalid');
    let expected = '';
    try {
      loadConfigFile(file);
    } catch (err) {
      if (err instanceof ConfigError) expected = formatProblems(err);
    }
    assert.equal(outcome.message, expected);
    assert.deepEqual(outcome.problems.map((p) => p.path).sort(), ['bogus', 'listeners[0].address', 'workers']);
    assert.deepEqual(fake.started, []);
    assert.equal(reloadResponse(outcome).status, 422);
  });

  it('moving the admin endpoint is refused (restart needed); so is a reload while draining or without a file', async () => {
    write(ONE);
    const fake = fakeRuntime(loadConfigFile(file));
    write(`admin: { address: "127.0.0.1:9902" }\n${ONE}`);
    const moved = await new Reloader({ runtime: fake.runtime, pool: pool(), configPath: file, log: silent }).reload('test');
    assert.equal(moved.ok === false && moved.problems[0]?.path, 'admin.address');
    const noFile = await new Reloader({ runtime: fake.runtime, pool: pool(), configPath: undefined, log: silent }).reload('test');
    assert.equal(noFile.ok === false && noFile.reason, 'refused');
    assert.equal(reloadResponse(noFile).status, 409);
    fake.draining = true;
    const draining = await new Reloader({ runtime: fake.runtime, pool: pool(), configPath: file, log: silent }).reload('test');
    assert.equal(draining.ok === false && draining.reason, 'refused');
    assert.deepEqual(fake.started, []);
  });

  it('a file that cannot be read for want of fds is a failed reload (500), not an invalid file (422); a missing one is invalid', async () => {
    write(ONE);
    const fake = fakeRuntime(loadConfigFile(file));
    // What reading the file says when the process is out of fds: a real one, from a child whose
    // fds are used up (its limit is low, and it opens /dev/null until EMFILE).
    const child = spawnSync(
      'prlimit',
      ['--nofile=64', process.execPath, '-e', `
        const fs = require('node:fs');
        const { readConfigFileText } = require(${JSON.stringify(join(__dirname, '../src/config/load.js'))});
        try { for (;;) fs.openSync('/dev/null', 'r'); } catch (e) { if (e.code !== 'EMFILE') throw e; }
        try { readConfigFileText(${JSON.stringify(file)}); console.log('read'); } catch (e) { console.log(JSON.stringify({ errno: e.readErrno, message: e.message })); }
      `],
      { encoding: 'utf8' },
    );
    assert.equal(child.status, 0, child.stderr);
    const read = JSON.parse(child.stdout) as { errno: string; message: string };
    assert.equal(read.errno, 'EMFILE', child.stdout);
    const outOfFds = new ConfigError(file, [{ path: '(root)', message: read.message.replace(/^.*?: /, '') }], read.errno);
    const failed = await new Reloader({ runtime: fake.runtime, pool: pool(), configPath: file, log: silent, load: () => { throw outOfFds; } }).reload('test');
    assert.equal(failed.ok === false && failed.reason, 'failed');
    assert.match(failed.ok === false ? failed.message : '', /cannot read config file: EMFILE/);
    assert.equal(reloadResponse(failed).status, 500);

    const missing = await new Reloader({ runtime: fake.runtime, pool: pool(), configPath: join(dir, 'missing.yaml'), log: silent }).reload('test');
    assert.equal(missing.ok === false && missing.reason, 'invalid');
    assert.equal(reloadResponse(missing).status, 422);
    assert.deepEqual(fake.started, []);
  });

  it('applies a valid file: the new generation starts and is active before the old one is retired; two reloads run one after the other', async () => {
    write(ONE);
    let open: () => void = () => undefined;
    const fake = fakeRuntime(loadConfigFile(file), new Promise<void>((r) => (open = r)));
    write(`workers: 3\n${listeners('{ name: a, address: "0.0.0.0:15001" }', '{ name: b, address: "0.0.0.0:15002" }')}`);
    const reloader = new Reloader({ runtime: fake.runtime, pool: pool(), configPath: file, log: silent });
    const first = reloader.reload('one');
    await new Promise((r) => setImmediate(r));  // the first is applying (its workers start)
    const second = reloader.reload('two');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(fake.started, ['start 3'], 'the second reload waits for the first');
    open();
    const [a, b]: ReloadOutcome[] = await Promise.all([first, second]);
    assert.deepEqual(fake.started, ['start 3', 'activate 2', 'retire 1', 'start 3', 'activate 3', 'retire 2']);
    assert.equal(a.ok && a.generation.number, 2);
    assert.equal(b.ok && b.generation.number, 3);
    if (!a.ok) return;
    assert.deepEqual(a.listeners, { added: ['0.0.0.0:15002'], removed: [], kept: ['0.0.0.0:15001'] });
    assert.deepEqual(a.workers, { before: 1, after: 3 });
    assert.equal(reloadResponse(a).status, 200);
  });

  it('a new listener whose address is taken: the reload fails with the bind error worded as start words it', async () => {
    // A real EADDRINUSE from the addon's ListenSocket, as ListenSocketPool.lease throws it.
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
    const port = (squatter.address() as AddressInfo).port;
    try {
      const fake = fakeRuntime(config(ONE));
      const real = new ListenSocketPool(loadBinding());
      fake.runtime.startGeneration = async (c: SplicegateConfig) => {
        real.lease(c.listeners).close();
        throw new Error('unreachable: the squatted port was bound');
      };
      write(`workers: 1\n${listeners('{ name: a, address: "0.0.0.0:15001" }', `{ name: taken, address: "127.0.0.1:${port}" }`)}`);
      const outcome = await new Reloader({ runtime: fake.runtime, pool: pool(), configPath: file, log: silent }).reload('test');
      assert.equal(outcome.ok, false);
      if (outcome.ok) return;
      assert.equal(outcome.reason, 'failed');
      // What `splicegate run` prints for the same failure at start (config/syserr.ts formatSystemError).
      assert.equal(outcome.message, `listen taken 127.0.0.1:${port}: bind failed: EADDRINUSE (address already in use)`);
      assert.equal(reloadResponse(outcome).status, 500);
      assert.equal(real.size, 0, 'the failed lease closed what it opened');
    } finally {
      squatter.close();
    }
  });

  it('a storm: requests that arrive while a reload waits its turn join it (one generation, one outcome for all)', async () => {
    write(ONE);
    let open: () => void = () => undefined;
    const fake = fakeRuntime(loadConfigFile(file), new Promise<void>((r) => (open = r)));
    const reloader = new Reloader({ runtime: fake.runtime, pool: pool(), configPath: file, log: silent });
    const first = reloader.reload('one');
    await new Promise((r) => setImmediate(r));  // applying: it has read the file
    write(`workers: 2\n${listeners('{ name: a, address: "0.0.0.0:15001" }')}`);
    const storm = Array.from({ length: 20 }, (_, i) => reloader.reload(`storm ${i}`));
    open();
    const outcomes = await Promise.all([first, ...storm]);
    assert.deepEqual(fake.started, ['start 1', 'activate 2', 'retire 1', 'start 2', 'activate 3', 'retire 2']);
    assert.ok(storm.every((p) => p === storm[0]), 'every request of the storm got the one reload');
    assert.equal(outcomes[0]?.ok && outcomes[0].generation.number, 2);
    assert.equal(outcomes[1]?.ok && outcomes[1].generation.number, 3, 'the storm read the file as written after the first began');
    // Once that reload has begun, a new request gets a reload of its own.
    const later = reloader.reload('later');
    assert.notEqual(later, storm[0]);
    assert.equal((await later).ok, true);
    assert.equal(fake.started.length, 9);
  });

  it('admin: POST /reload answers with the outcome; /ready names the generation (text and JSON)', async () => {
    const admin = await startAdminServer(
      { host: '127.0.0.1', port: 0, family: 4, text: '127.0.0.1:0' },
      {
        readiness: () => ({ ready: true, detail: 'ready', generation: { number: 4, source: '/etc/s.yaml', loadedAt: '2026-01-01T00:00:00.000Z' } }),
        reload: async () => ({ status: 422, body: { ok: false, problems: [{ path: 'workers', message: 'bad' }] } }),
        counters: async () => ({}),
        hosts: async () => [],
        latency: { collect: async () => [] },
        allowedHosts: () => ['localhost'],
      },
      silent,
    );
    try {
      const base = `http://127.0.0.1:${admin.port}`;
      const r = await fetch(`${base}/reload`, { method: 'POST' });
      assert.equal(r.status, 422);
      assert.deepEqual(await r.json(), { ok: false, problems: [{ path: 'workers', message: 'bad' }] });
      assert.equal((await fetch(`${base}/reload`)).status, 405, 'GET /reload is not a reload');
      assert.equal(await (await fetch(`${base}/ready`)).text(), 'ready\nconfig_generation 4 /etc/s.yaml 2026-01-01T00:00:00.000Z\n');
      assert.deepEqual(await (await fetch(`${base}/ready?format=json`)).json(), {
        ready: true,
        detail: 'ready',
        config_generation: 4,
        config_file: '/etc/s.yaml',
        config_loaded_at: '2026-01-01T00:00:00.000Z',
      });
    } finally {
      await admin.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
