// The access log in the namespace lab: one JSON line per connection with the right fields (bytes
// each way, destination and how it was found, policy decision and rule, timings, close reason,
// listener, worker), exactly as many lines as downstream_cx_total, a policy-refused connection with
// its reason, reopening after logrotate's `mv` by SIGUSR1 and by POST /logs/reopen, and sample: 0.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ADDR, Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { finishTransfer, probe, startTransfer, transfer } from '../lab/clients';
import { disposeLab, started, withDiagnostics } from '../lab/harness';
import { stat } from '../lab/resources';
import { waitFor } from '../lab/util';
import { ACCESS_LINE_KEYS, readJsonLines, type AccessLine } from '../lab/jsonl';

const SERVER = `${ADDR.server4}:8080`;
const DENIED = `${ADDR.server4}:8081`;
const WORKERS = 2;

type Line = AccessLine;

function readLines(file: string): Line[] {
  return readJsonLines<Line>(file, ACCESS_LINE_KEYS);
}

describe('access log', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let dir: string;
  let file: string;

  before(async () => {
    lab = await Lab.create({ name: 'accesslog' });
    await lab.startServer('sink-source', ['--listen', `${ADDR.server4}:8080`]);
    await lab.startServer('sink-source', ['--listen', `${ADDR.server4}:8081`]);
    await lab.redirect({ dport: [8080, 8081], toPort: 15001, family: 4 });
    dir = fs.mkdtempSync(path.join(lab.tmpDir(), 'access-'));
    file = path.join(dir, 'access.log');
    sg = await Splicegate.start(lab, {
      workers: WORKERS,
      listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
      extra: {
        policy: { default: 'allow', rules: [{ name: 'no-8081', action: 'deny', cidrs: [`${ADDR.server4}/32`], ports: ['8081'] }] },
        access_log: { path: file, format: 'json', sample: 1 },
      },
    });
  });

  after(() => disposeLab(sg, lab));

  const proxy = (): Splicegate => started(sg);

  /** n small complete transfers through the proxy, in parallel. */
  async function transfers(n: number): Promise<void> {
    const results = await Promise.all(Array.from({ length: n }, () => transfer(lab, { target: SERVER, send: 100, recv: 200, timeoutMs: 20000 })));
    for (const r of results) assert.equal(r.ok, true, JSON.stringify(r));
  }

  /** Waits until `file` holds as many lines as connections were accepted, all closed. */
  async function linesMatchingTotal(at: string): Promise<{ lines: Line[]; total: number }> {
    return waitFor(
      async () => {
        const s = await proxy().stats();
        if (s.downstream_cx_active !== 0) return undefined;
        const lines = readLines(at);
        return lines.length === s.downstream_cx_total ? { lines, total: s.downstream_cx_total } : undefined;
      },
      { timeoutMs: 10000, what: `${at} to have one line per accepted connection`, diagnostics: () => proxy().diagnostics() },
    );
  }

  it('N connections of known sizes: N lines == downstream_cx_total, each with its bytes, destination, policy, timings, close reason', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const N = 6;
      const sizes = Array.from({ length: N }, (_, i) => ({ send: 1000 * (i + 1) + 7, recv: 3000 * (i + 1) + 1 }));
      const results = await Promise.all(sizes.map((s) => transfer(lab, { target: SERVER, send: s.send, recv: s.recv, timeoutMs: 20000 })));
      for (const r of results) assert.equal(r.ok, true, JSON.stringify(r));
      const { lines, total } = await linesMatchingTotal(file);
      assert.equal(total, N);
      assert.equal(lines.length, N);
      const t0 = Date.now();
      for (const size of sizes) {
        // The client's 16-byte header counts: it is relayed like any byte.
        const line = lines.find((l) => l.bytes_sent === size.send + 16);
        assert.ok(line, `a line for the ${size.send}-byte transfer: ${JSON.stringify(lines)}`);
        assert.equal(line.bytes_received, size.recv);
        assert.equal(line.type, 'connection');
        assert.equal(line.listener, 'egress');
        assert.match(line.client ?? '', new RegExp(`^${ADDR.client4.replace(/\./g, '\\.')}:\\d+$`));
        assert.equal(line.destination, SERVER);
        assert.equal(line.destination_source, 'so_original_dst');
        assert.equal(line.policy, 'allow');
        assert.equal(line.rule, 'default');
        assert.equal(line.close_reason, 'completed');
        assert.equal(line.refusal, null);
        assert.ok(line.worker >= 0 && line.worker < WORKERS, `worker ${line.worker}`);
        // Measured, not merely present: an upstream connect and a first byte each take time (the
        // fields have microsecond resolution), and both lie within the connection's duration.
        assert.ok(typeof line.connect_ms === 'number' && line.connect_ms > 0, `connect_ms ${line.connect_ms}`);
        assert.ok(typeof line.ttfb_ms === 'number' && line.ttfb_ms > 0, `ttfb_ms ${line.ttfb_ms}`);
        const us = (ms: number): number => Math.round(ms * 1000);
        assert.ok(us(line.duration_ms) >= us(line.connect_ms) + us(line.ttfb_ms), `duration ${line.duration_ms} >= connect ${line.connect_ms} + ttfb ${line.ttfb_ms}`);
        const closedAt = Date.parse(line.time);
        assert.ok(Math.abs(t0 - closedAt) < 60000, `time is the close's: ${line.time}`);
        assert.equal(new Date(closedAt).toISOString(), line.time, 'ISO 8601 UTC with milliseconds');
      }
    }),
  );

  it('a policy-denied connection has its line: deny, the rule, refused, no bytes, no connect', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const p = await probe(lab, { target: DENIED, waitMs: 3000 });
      assert.equal(p.closeKind, 'reset', JSON.stringify(p));
      const { lines } = await linesMatchingTotal(file);
      const denied = lines.filter((l) => l.destination === DENIED);
      assert.equal(denied.length, 1, JSON.stringify(denied));
      const [line] = denied;
      assert.ok(line);
      assert.equal(line.policy, 'deny');
      assert.equal(line.rule, 'no-8081');
      assert.equal(line.close_reason, 'refused');
      assert.equal(line.refusal, 'policy_denied');
      assert.equal(line.destination_source, 'so_original_dst');
      assert.equal(line.bytes_sent, 0);
      assert.equal(line.bytes_received, 0);
      assert.equal(line.connect_ms, null);
      assert.equal(line.ttfb_ms, null);
      const s = await proxy().stats();
      assert.equal(stat(s, 'access_log_dropped'), 0);
      assert.equal(stat(s, 'access_log_lines'), lines.length);
      // Each line's close_reason is counted in cx_close_<reason>: the log and the counters agree.
      const byReason = new Map<string, number>();
      for (const l of lines) byReason.set(l.close_reason, (byReason.get(l.close_reason) ?? 0) + 1);
      for (const [reason, n] of byReason) assert.equal(stat(s, `cx_close_${reason}`), n, `cx_close_${reason}`);
    }),
  );

  /** Files the log was moved to by the rotation tests. */
  const rotated: string[] = [];

  /** Waits until the current and the moved files together hold one line per accepted connection. */
  async function settled(): Promise<number> {
    return waitFor(
      async () => {
        const s = await proxy().stats();
        const n = [file, ...rotated].reduce((sum, f) => sum + readLines(f).length, 0);
        return s.downstream_cx_active === 0 && n === s.downstream_cx_total ? n : undefined;
      },
      { timeoutMs: 10000, what: 'one line per accepted connection across the log files', diagnostics: () => proxy().diagnostics() },
    );
  }

  /** logrotate's move: lines after the reopen land in a new file at the path, none is lost. */
  async function rotateAndCheck(to: string, reopen: () => Promise<void>): Promise<void> {
    const total0 = await settled();
    const inFile = readLines(file).length;
    fs.renameSync(file, to);
    rotated.push(to);
    await reopen();
    await waitFor(() => (fs.existsSync(file) ? true : undefined), { timeoutMs: 5000, what: `a new ${file} after the reopen` });
    await transfers(3);
    assert.equal(await settled(), total0 + 3);
    assert.equal(readLines(to).length, inFile, 'the moved file keeps what was written before the reopen');
    assert.equal(readLines(file).length, 3, 'the new connections are in the new file');
  }

  it('SIGUSR1 after `mv` of the file: new lines go to a new file at the path', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      await rotateAndCheck(`${file}.1`, async () => {
        const reopens = (await proxy().stats()).raw['access_log_reopens'];
        proxy().proc.signal('SIGUSR1');
        await proxy().waitStats((s) => s.raw['access_log_reopens'] === Number(reopens) + 1, 5000, 'the reopen done');
      });
      assert.ok(proxy().proc.running, 'SIGUSR1 does not stop the process');
    }),
  );

  it('POST /logs/reopen after `mv`: the same', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      await rotateAndCheck(`${file}.2`, async () => {
        const r = await proxy().adminPost('/logs/reopen');
        assert.equal(r.status, 200, JSON.stringify(r));
      });
    }),
  );

  it('at shutdown, a connection cut by drain_timeout still gets its line (drained) before the process exits', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      await sg?.dispose();
      sg = undefined;
      const last = path.join(dir, 'shutdown.log');
      sg = await Splicegate.start(lab, {
        workers: WORKERS,
        listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
        drain_timeout: '1s',
        extra: { access_log: { path: last } },
      });
      // Slow enough to be still running when the drain ends.
      const xfer = startTransfer(lab, { target: SERVER, send: 1_000_000, recv: 0, rateBytesPerSec: 50_000, timeoutMs: 60000 });
      await proxy().waitStats((s) => s.downstream_cx_active === 1 && s.bytes_received > 0, 10000, 'the transfer under way');
      assert.equal(await proxy().stop('SIGTERM'), 0);
      const r = await finishTransfer(xfer, 20000);
      assert.equal(r.ok, false, 'the transfer was cut');
      const lines = readLines(last);
      assert.equal(lines.length, 1, JSON.stringify(lines) + proxy().diagnostics());
      assert.equal(lines[0]?.close_reason, 'drained');
      assert.ok((lines[0]?.bytes_sent ?? 0) > 0);
    }),
  );

  it('sample: 0 logs nothing (no record is even created), while connections are relayed and counted', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      await sg?.dispose();
      sg = undefined;
      const quiet = path.join(dir, 'sampled-out.log');
      sg = await Splicegate.start(lab, {
        workers: WORKERS,
        listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
        extra: { access_log: { path: quiet, sample: 0 } },
      });
      await transfers(5);
      const s = await proxy().waitStats((x) => x.downstream_cx_total === 5 && x.downstream_cx_active === 0, 10000, 'five closed');
      assert.equal(stat(s, 'access_log_records'), 0);
      // The workers' last drain runs at exit: after it the file is final.
      assert.equal(await proxy().stop('SIGTERM'), 0);
      assert.equal(fs.readFileSync(quiet, 'utf8'), '');
    }),
  );
});
