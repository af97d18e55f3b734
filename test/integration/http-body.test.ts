// The HTTP listener's bodies in the namespace lab (docs/HTTP.md, "Bodies"): curl uploads and
// downloads a 64 MiB file through a mode: http listener, byte-identical by sha256 on the far side,
// and the spliced-body counter rises by about the body size each time (what came along with a
// head is copied: at most a read's worth). A keep-alive request after each transfer proves the
// boundaries are exact: the same client connection, the same pooled upstream connection.

import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADDR, Lab } from '../lab/lab';
import { counter, Splicegate, Stats } from '../lab/splicegate';
import { withDiagnostics } from '../lab/harness';

const HEADER = 'x-envoy-original-dst-host';
const LISTENER = `${ADDR.gwCli4}:9001`;
const SERVER = `${ADDR.server4}:8080`;
const SIZE = 64 << 20;
// Body bytes a transfer may copy rather than splice: the part read along with the head (one
// 16 KiB read) in each direction, with room to spare.
const COPY_ALLOWANCE = 4 * 16384;

function d(after: Stats, before: Stats, name: string): number {
  return counter(after, name) - counter(before, name);
}

function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

describe('HTTP listener: 64 MiB bodies spliced, byte-identical', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let file = '';
  let fileSha = '';

  before(async () => {
    lab = await Lab.create({ name: 'httpbody' });
    file = path.join(lab.tmpDir(), 'body.bin');
    fs.writeFileSync(file, randomBytes(SIZE));
    fileSha = sha256File(file);
    await lab.startServer('http-echo', ['--listen', SERVER, '--id', 'A', '--file', file]);
    sg = await Splicegate.start(lab, {
      workers: 1, // one worker: the second request of a client finds the pooled connection
      listeners: [{ name: 'gw', address: LISTENER, mode: 'http', http: { trusted_sources: [`${ADDR.client4}/32`] } }],
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  // One curl in the client namespace, one operation per URL (--next; curl keeps the connection
  // between them): `firstArgs` for the first only, the routing header for all. Each response body
  // goes to its own file; -w prints each transfer's status, sizes and local port.
  async function curlTransfers(firstArgs: string[], urls: string[], tag: string): Promise<{ lines: string[][]; outs: string[] }> {
    const outs = urls.map((_, i) => path.join(lab.tmpDir(), `${tag}.out.${i}`));
    const argv = urls.flatMap((u, i) => [
      ...(i > 0 ? ['--next'] : firstArgs),
      '-sS',
      '--max-time',
      '120',
      '-w',
      '%{http_code} %{size_download} %{size_upload} %{local_port}\\n',
      '-H',
      `${HEADER}: ${SERVER}`,
      '-o',
      outs[i] ?? '',
      u,
    ]);
    const r = await lab.exec('cli', 'curl', argv, { timeoutMs: 150000 });
    assert.equal(r.code, 0, `curl exited ${String(r.code)}: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n').map((l) => l.split(' '));
    assert.equal(lines.length, urls.length, r.stdout);
    return { lines, outs };
  }

  it('a 64 MiB download arrives byte-identical, spliced; the next request on the connection reuses both sides', { timeout: 180000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const { lines, outs } = await curlTransfers([], [`http://${LISTENER}/file`, `http://${LISTENER}/after`], 'down');
      assert.deepEqual(lines[0]?.slice(0, 2), ['200', String(SIZE)]);
      assert.equal(sha256File(outs[0] ?? ''), fileSha, 'the downloaded file differs from the served one');
      assert.equal(lines[1]?.[0], '200');
      assert.equal(lines[1]?.[3], lines[0]?.[3], 'curl opened a new connection: the first one did not end exactly');
      const after = JSON.parse(fs.readFileSync(outs[1] ?? '', 'utf8')) as { url: string; seq: number; bodyBytes: number };
      assert.equal(after.url, '/after');
      assert.equal(after.seq, 2, 'the second request went to a new upstream connection, not the pooled one');
      const s1 = await sg.waitStats((s) => d(s, s0, 'upstream_rq_total') >= 2, 5000, 'upstream_rq_total += 2');
      const spliced = d(s1, s0, 'http_body_bytes_spliced');
      const copied = d(s1, s0, 'http_body_bytes_copied');
      assert.ok(spliced >= SIZE - COPY_ALLOWANCE && spliced <= SIZE, `spliced ${spliced} of a ${SIZE}-byte body`);
      assert.ok(copied <= COPY_ALLOWANCE + 4096, `copied ${copied}`);
      assert.equal(d(s1, s0, 'upstream_cx_reuse'), 1);
    }),
  );

  it('a 64 MiB upload arrives byte-identical, spliced; the next request on the connection reuses both sides', { timeout: 180000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const s0 = await sg.stats();
      const { lines, outs } = await curlTransfers(
        ['--data-binary', `@${file}`, '-H', 'content-type: application/octet-stream'],
        [`http://${LISTENER}/upload`, `http://${LISTENER}/after`],
        'up',
      );
      assert.equal(lines[0]?.[0], '200');
      assert.equal(lines[0]?.[2], String(SIZE));
      const echoed = JSON.parse(fs.readFileSync(outs[0] ?? '', 'utf8')) as { bodyBytes: number; bodySha256: string; seq: number };
      assert.equal(echoed.bodyBytes, SIZE);
      assert.equal(echoed.bodySha256, fileSha, 'the server received different bytes');
      assert.equal(lines[1]?.[0], '200');
      assert.equal(lines[1]?.[3], lines[0]?.[3], 'curl opened a new connection: the upload did not end exactly');
      const after = JSON.parse(fs.readFileSync(outs[1] ?? '', 'utf8')) as { url: string; seq: number; bodyBytes: number };
      assert.equal(after.url, '/after');
      assert.equal(after.bodyBytes, 0);
      assert.equal(after.seq, echoed.seq + 1, 'the second request went to a new upstream connection, not the pooled one');
      const s1 = await sg.waitStats((s) => d(s, s0, 'upstream_rq_total') >= 2, 5000, 'upstream_rq_total += 2');
      const spliced = d(s1, s0, 'http_body_bytes_spliced');
      assert.ok(spliced >= SIZE - COPY_ALLOWANCE && spliced <= SIZE, `spliced ${spliced} of a ${SIZE}-byte body`);
    }),
  );
});
