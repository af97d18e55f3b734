// The access log's writer: lines reach the file, reopen() after a rename (logrotate) sends the next
// lines to a new file at the path, an unopenable path fails open() with its path, and the writer's
// own drops add to access_log_dropped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccessLogWriter, withAccessLogCounters } from '../src/proxy/access-log';
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

test('the writer\'s counters join the data plane\'s: access_log_dropped is the sum of both', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-al-'));
  try {
    const writer = await AccessLogWriter.open({ path: join(dir, 'a.log'), format: 'json', sample: 1 }, quiet);
    writer.write(line(1), 1);
    const merged = withAccessLogCounters({ downstream_cx_total: 5, access_log_dropped: 2 }, writer);
    assert.equal(merged['access_log_dropped'], 2);
    assert.equal(merged['access_log_lines'], 1);
    assert.equal(merged['downstream_cx_total'], 5);
    assert.deepEqual(withAccessLogCounters({ access_log_dropped: 0 }, undefined), { access_log_dropped: 0 });
    await writer.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
