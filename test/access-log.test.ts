// The access log's writer: lines reach the file, reopen() after a rename (logrotate) sends the next
// lines to a new file at the path, an unopenable path fails open() with its path, and the writer's
// own drops add to access_log_dropped; across reloads the holder switches files and keeps counting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccessLogWriter } from '../src/proxy/access-log';
import { AccessLogHolder } from '../src/proxy/access-log-holder';
import { createLogger } from '../src/util/logger';

const quiet = createLogger('error', () => undefined);

function line(n: number): string {
  return JSON.stringify({ time: new Date(0).toISOString(), type: 'connection', n }) + '\n';
}

/** Waits until `read()` satisfies `done` (the writer is asynchronous); liveness bound only. */
async function until(what: string, done: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function linesOf(path: string): string[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0);
}

test('lines are appended to the file and counted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-al-'));
  try {
    const path = join(dir, 'access.log');
    const writer = await AccessLogWriter.open({ path, format: 'json', sample: 1 }, quiet);
    writer.write(line(1) + line(2), 2);
    writer.write('', 0);
    writer.write(line(3), 1);
    await writer.close();
    assert.deepEqual(linesOf(path).map((l) => (JSON.parse(l) as { n: number }).n), [1, 2, 3]);
    assert.equal(writer.counters().access_log_lines, 3);
    writer.write(line(4), 1); // after close: ignored, no throw
    assert.equal(linesOf(path).length, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reopen after the file was moved: old lines stay in the moved file, new ones go to a new file at the path', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-al-'));
  try {
    const path = join(dir, 'access.log');
    const rotated = join(dir, 'access.log.1');
    const writer = await AccessLogWriter.open({ path, format: 'json', sample: 1 }, quiet);
    writer.write(line(1), 1);
    await until('the first line', () => linesOf(path).length === 1);
    renameSync(path, rotated);
    writer.write(line(2), 1); // written before the reopen: in the old file or, if still buffered, the new one
    writer.reopen();
    writer.write(line(3), 1);
    await writer.close();
    const old = linesOf(rotated).map((l) => (JSON.parse(l) as { n: number }).n);
    const now = linesOf(path).map((l) => (JSON.parse(l) as { n: number }).n);
    assert.equal(old[0], 1);
    assert.deepEqual([...old, ...now], [1, 2, 3], 'every line once, in order');
    assert.deepEqual(now.slice(-1), [3], 'the line after the reopen is in the new file');
    assert.equal(writer.counters().access_log_reopens, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a path that cannot be opened fails open() with the path in its context', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-al-'));
  try {
    const path = join(dir, 'missing-dir', 'access.log');
    await assert.rejects(AccessLogWriter.open({ path, format: 'json', sample: 1 }, quiet), (err: Error & { code?: string; context?: string }) => {
      assert.equal(err.code, 'ENOENT');
      assert.equal(err.context, `access_log ${path}`);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the writers\' counters join the data plane\'s: access_log_dropped is the sum of both', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-al-'));
  try {
    const holder = await AccessLogHolder.open({ path: join(dir, 'a.log'), format: 'json', sample: 1 }, quiet);
    holder.write(line(1), 1);
    const merged = holder.withCounters({ downstream_cx_total: 5, access_log_dropped: 2 });
    assert.equal(merged['access_log_dropped'], 2);
    assert.equal(merged['access_log_lines'], 1);
    assert.equal(merged['downstream_cx_total'], 5);
    await holder.close();
    const off = await AccessLogHolder.open(null, quiet);
    assert.deepEqual(off.withCounters({ access_log_dropped: 0 }), { access_log_dropped: 0 });
    assert.equal(off.reopen(), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reload: a new path is opened before the switch, lines after commit go there, counters carry over; the same path keeps its writer', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-al-'));
  try {
    const a = join(dir, 'a.log');
    const b = join(dir, 'b.log');
    const holder = await AccessLogHolder.open({ path: a, format: 'json', sample: 1 }, quiet);
    holder.write(line(1), 1);
    const same = await holder.prepare({ path: a, format: 'json', sample: 0.5 });
    same.commit();
    holder.write(line(2), 1);
    const change = await holder.prepare({ path: b, format: 'json', sample: 1 });
    assert.ok(existsSync(b), 'the new file exists before the switch');
    holder.write(line(3), 1); // not committed yet: still the old file
    change.commit();
    holder.write(line(4), 1);
    assert.equal(holder.withCounters({})['access_log_lines'], 4, 'lines of the closed writer still counted');
    await holder.close();
    assert.deepEqual(linesOf(a).map((l) => (JSON.parse(l) as { n: number }).n), [1, 2, 3]);
    assert.deepEqual(linesOf(b).map((l) => (JSON.parse(l) as { n: number }).n), [4]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reload: an unopenable new path rejects prepare() and the running log goes on; off and on again; abort closes the new file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-al-'));
  try {
    const a = join(dir, 'a.log');
    const b = join(dir, 'b.log');
    const holder = await AccessLogHolder.open({ path: a, format: 'json', sample: 1 }, quiet);
    await assert.rejects(holder.prepare({ path: join(dir, 'missing', 'x.log'), format: 'json', sample: 1 }), /ENOENT/);
    holder.write(line(1), 1);
    const off = await holder.prepare(null);
    off.commit();
    assert.equal(holder.enabled, false);
    holder.write(line(2), 1); // no log now: dropped on purpose, not counted
    assert.equal(holder.withCounters({})['access_log_lines'], 1, 'counters stay after the log is turned off');
    const aborted = await holder.prepare({ path: b, format: 'json', sample: 1 });
    await aborted.abort();
    assert.equal(holder.enabled, false, 'an aborted change leaves the log as it was');
    const on = await holder.prepare({ path: b, format: 'json', sample: 1 });
    on.commit();
    holder.write(line(3), 1);
    await holder.close();
    assert.deepEqual(linesOf(a).map((l) => (JSON.parse(l) as { n: number }).n), [1]);
    assert.deepEqual(linesOf(b).map((l) => (JSON.parse(l) as { n: number }).n), [3]);
    assert.equal(holder.withCounters({})['access_log_lines'], 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
