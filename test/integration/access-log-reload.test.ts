// The access log across reloads, in the namespace lab: a reload that names a new file switches to
// it (connections after the reload are logged there, the old file keeps its lines, the line count
// still equals downstream_cx_total), a reload naming a file that cannot be opened is refused with
// its path while the running log goes on, and a reload without access_log turns it off.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ADDR, Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { transfer } from '../lab/clients';
import { disposeLab, started, withDiagnostics } from '../lab/harness';
import { stat } from '../lab/resources';
import { parseJsonObject, waitFor, type JsonObject } from '../lab/util';

const SERVER = `${ADDR.server4}:8080`;

function lineCount(file: string): number {
  if (!fs.existsSync(file)) return 0;
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0).length;
}

describe('access log across reloads', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let dir: string;
  let roMount: (() => void) | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'alreload' });
    await lab.startServer('sink-source', ['--listen', `${SERVER}`]);
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    dir = fs.mkdtempSync(path.join(lab.tmpDir(), 'access-'));
  });

  after(async () => {
    if (sg?.proc.running) roMount?.();
    await disposeLab(sg, lab);
  });

  const listeners = [{ name: 'egress', address: '0.0.0.0:15001' }];

  async function transfers(n: number): Promise<void> {
    const results = await Promise.all(Array.from({ length: n }, () => transfer(lab, { target: SERVER, send: 100, recv: 200, timeoutMs: 20000 })));
    for (const r of results) assert.equal(r.ok, true, JSON.stringify(r));
  }

  async function reloadWith(accessLog: JsonObject | undefined): Promise<{ status: number; body: JsonObject }> {
    const proxy = started(sg);
    fs.writeFileSync(proxy.configPath, Splicegate.buildConfig({ workers: 2, listeners, extra: accessLog ? { access_log: accessLog } : {} }));
    const r = await lab.admin('/reload', { address: proxy.adminAddress, method: 'POST', timeoutMs: 30000 });
    const body = parseJsonObject(r.body.replace(/\n/g, ' '));
    assert.ok(body, `POST /reload answered ${r.status} ${r.error ?? ''} without JSON: ${r.body}`);
    return { status: r.status, body };
  }

  /** Waits until every connection is closed and the files hold `want` lines between them. */
  async function settled(files: string[], want: number): Promise<number[]> {
    return waitFor(
      async () => {
        const s = await started(sg).stats();
        const counts = files.map(lineCount);
        return s.downstream_cx_active === 0 && counts.reduce((a, b) => a + b, 0) === want ? counts : undefined;
      },
      { timeoutMs: 10000, what: `${want} lines in ${files.join(', ')}`, diagnostics: () => `${files.map((f) => `${f}: ${lineCount(f)}`).join(', ')}` },
    );
  }

  it('a new path is used from the reload on, an unopenable one refuses the reload, none turns the log off; lines == downstream_cx_total throughout', { timeout: 120000 }, async () => {
    const first = path.join(dir, 'first.log');
    const second = path.join(dir, 'second.log');
    sg = await Splicegate.start(lab, { workers: 2, listeners, extra: { access_log: { path: first, format: 'json', sample: 1 } } });
    await withDiagnostics(lab, sg, async () => {
      const proxy = started(sg);
      await transfers(3);
      assert.deepEqual(await settled([first], 3), [3]);

      const moved = await reloadWith({ path: second, format: 'json', sample: 1 });
      assert.equal(moved.status, 200, JSON.stringify(moved.body));
      await transfers(4);
      assert.deepEqual(await settled([first, second], 7), [3, 4], 'the old file keeps its lines, the new one gets the rest');
      let s = await proxy.stats();
      assert.equal(s.downstream_cx_total, 7);
      assert.equal(stat(s, 'access_log_lines'), 7, 'the count carries over the switch');

      // Checked with the config: a directory that does not exist is an invalid config (422).
      const missing = path.join(dir, 'no-such-dir', 'x.log');
      const invalid = await reloadWith({ path: missing, format: 'json', sample: 1 });
      assert.equal(invalid.status, 422, JSON.stringify(invalid.body));
      assert.equal(((invalid.body['problems'] as JsonObject[])[0] ?? {})['path'], 'access_log.path');
      // Found only by opening it: a file on a read-only mount in a writable directory (root may
      // write anything else) fails the reload (500).
      const readOnly = path.join(dir, 'read-only.log');
      fs.writeFileSync(readOnly, '');
      // In splicegate's own mount namespace (`ip netns exec` gave it one).
      const inProxy = (...args: string[]): void => void execFileSync('nsenter', ['-t', String(proxy.proc.pid), '-m', ...args]);
      inProxy('mount', '--bind', readOnly, readOnly);
      roMount = () => inProxy('umount', readOnly);
      inProxy('mount', '-o', 'remount,bind,ro', readOnly);
      const refused = await reloadWith({ path: readOnly, format: 'json', sample: 1 });
      assert.equal(refused.status, 500, JSON.stringify(refused.body));
      assert.equal(refused.body['reason'], 'failed');
      assert.match(String(refused.body['error']), /EROFS/);
      assert.ok(String(refused.body['error']).includes(readOnly), `the error names the path: ${String(refused.body['error'])}`);
      assert.equal((refused.body['config_generation'] as JsonObject)['number'], 2, 'generation 2 keeps serving');
      s = await proxy.stats();
      assert.equal(s.raw['config_generations_live'], 1, 'no generation started for the refused reload');
      await transfers(2);
      assert.deepEqual(await settled([first, second], 9), [3, 6], 'the running log goes on');

      const off = await reloadWith(undefined);
      assert.equal(off.status, 200, JSON.stringify(off.body));
      await transfers(2);
      s = await proxy.waitStats((x) => x.downstream_cx_total === 11 && x.downstream_cx_active === 0, 10000, 'all 11 connections closed');
      assert.deepEqual([lineCount(first), lineCount(second)], [3, 6], 'no line after the log was turned off');
      assert.equal(stat(s, 'access_log_lines'), 9);
    });
  });
});
