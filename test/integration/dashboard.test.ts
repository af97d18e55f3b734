// The admin dashboard in a real browser: headless Chromium loads GET / from a running splicegate
// that relayed traffic through the namespace lab, lets the page poll for a few (virtual) seconds,
// and the dumped DOM must show the live figures: the destinations that got traffic with their
// counts, the counters, the policy's denies, the latency curves, the listeners with their own
// accepted counts (two listeners, different traffic). A screenshot is written to
// build/test-artifacts/dashboard.png for a person to look at.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab } from '../lab/lab';
import { Splicegate } from '../lab/splicegate';
import { connectMany, finishTransfer, probe, startTransfer, transfer } from '../lab/clients';
import { counter } from '../lab/splicegate';
import { disposeLab, started, withDiagnostics } from '../lab/harness';
import { repoRoot } from '../lab/paths';
import { BrowserPage, dumpDom } from '../lab/browser';
import { waitFor } from '../lab/util';
import { colourCount, decodePng, inkRatio } from '../latency/png';

const ADMIN = '127.0.0.1:9901';
const URL_ = `http://${ADMIN}/`;
const CONNECTIONS = 7;
const MiB = 1024 * 1024;
const BULK = 3 * MiB;
const POLL_MS = 2000;
/** Four polls' worth of virtual time: the page updates at 0, 2, 4 and 6 s. */
const VIRTUAL_MS = 7000;
const SCREENSHOT = path.join(repoRoot, 'build', 'test-artifacts', 'dashboard.png');

/** The text of the element with this id (none of the page's figures has markup inside). */
function textOf(dom: string, id: string): string {
  const m = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(dom);
  if (!m) throw new Error(`no element #${id} in the DOM`);
  return m[1] ?? '';
}

function hostRow(dom: string, host: string): Record<string, string> | undefined {
  const m = new RegExp(`<tr data-host="${host.replace(/\./g, '\\.')}">(.*?)</tr>`).exec(hostsBody(dom));
  if (!m) return undefined;
  return Object.fromEntries([...(m[1] ?? '').matchAll(/<td data-col="([a-z0-9_]+)">([^<]*)<\/td>/g)].map((c) => [c[1], c[2]]));
}

/** The destinations table's body (the page's script text, also in the DOM, holds the same markup pieces). */
function hostsBody(dom: string): string {
  const start = dom.indexOf('<tbody id="hosts-body">');
  if (start < 0) throw new Error('no destinations table in the DOM');
  return dom.slice(start, dom.indexOf('</tbody>', start));
}

/** The listeners table's row for `name`: its cells by data-col. */
function listenerRow(dom: string, name: string): Record<string, string> {
  const start = dom.indexOf('<tbody id="listeners-body">');
  if (start < 0) throw new Error('no listeners table in the DOM');
  const body = dom.slice(start, dom.indexOf('</tbody>', start));
  const m = new RegExp(`<tr data-listener="${name}">(.*?)</tr>`).exec(body);
  if (!m) throw new Error(`no row for listener ${name} in\n${body}`);
  return Object.fromEntries([...(m[1] ?? '').matchAll(/<td data-col="([a-z0-9_]+)">([^<]*)<\/td>/g)].map((c) => [c[1], c[2]]));
}

function hostOrder(dom: string): string[] {
  return [...hostsBody(dom).matchAll(/<tr data-host="([^"]+)">/g)].map((m) => m[1] ?? '');
}

/** Anything that would make the page load or link to something outside this admin endpoint. */
function assertNoExternalUrl(text: string, what: string): void {
  assert.doesNotMatch(text, /\b(?:https?|wss?|ftp):/i, `${what}: an absolute URL`);
  assert.doesNotMatch(text, /(?:src|href|action|srcset)\s*=\s*["']?\s*\/\//i, `${what}: a protocol-relative URL`);
  assert.doesNotMatch(text, /url\(|@import/i, `${what}: a CSS import or url()`);
  for (const m of text.matchAll(/\b(?:src|href)\s*=\s*["']([^"']*)["']/gi)) {
    assert.match(m[1] ?? '', /^(?:data:|#|\/[^/]|$)/, `${what}: ${m[0]}`);
  }
}

describe('admin dashboard in headless Chromium', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;

  before(async () => {
    lab = await Lab.create({ name: 'dash' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'S']);
    await lab.startServer('sink-source', ['--listen', '10.10.2.2:8081']);
    // Two listeners: egress takes the 7 connections, side the bulk transfer and the deny.
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4 });
    await lab.redirect({ dport: [8081, 8099], toPort: 15002, family: 4 });
    sg = await Splicegate.start(lab, {
      admin: ADMIN,
      listeners: [
        { name: 'egress', address: '0.0.0.0:15001' },
        { name: 'side', address: '0.0.0.0:15002' },
      ],
      // Idle hosts leave the host cache (and the table) after cleanup_interval: keep them for the test.
      cluster: { cleanup_interval: '10m' },
      extra: { policy: { default: 'allow', rules: [{ name: 'no-8099', action: 'deny', cidrs: ['10.10.2.0/24'], ports: ['8099'] }] } },
    });
    // Traffic the page must show: 7 connections to one host, one bulk transfer to another, one deny.
    const relayed = await connectMany(lab, { target: '10.10.2.2:8080', n: CONNECTIONS, expectId: 'S' });
    assert.equal(relayed.ok, CONNECTIONS, JSON.stringify(relayed.errors));
    const bulk = await transfer(lab, { target: '10.10.2.2:8081', send: BULK, recv: BULK, timeoutMs: 60000 });
    assert.equal(bulk.ok, true, bulk.error);
    const denied = await probe(lab, { target: '10.10.2.2:8099', waitMs: 3000 });
    assert.equal(denied.closeKind, 'reset', JSON.stringify(denied));
    await sg.waitStats(
      (s) => s.downstream_cx_active === 0 && Number(s.raw['policy.no-8099.denied']) === 1 && s.downstream_cx_total === CONNECTIONS + 2,
      20000,
      'traffic finished and counted',
    );
  });

  after(() => disposeLab(sg, lab));

  const proxy = (): Splicegate => started(sg);

  it('shows the live figures: hosts with their counts, counters, denies, latency curves, listener, header', { timeout: 120000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const stats = await proxy().stats();
      const dom = await dumpDom(lab, URL_, VIRTUAL_MS);
      // The page polled repeatedly and every endpoint answered.
      assert.equal(/id="status" data-state="([a-z]+)"/.exec(dom)?.[1], 'ok', textOf(dom, 'status'));
      const updates = Number(/data-updates="(\d+)"/.exec(dom)?.[1]);
      assert.ok(updates >= Math.floor(VIRTUAL_MS / POLL_MS), `updates: ${updates}`);

      // Destinations: the host that got 7 connections, and the bulk one with its bytes.
      const busy = hostRow(dom, '10.10.2.2:8080');
      assert.ok(busy, `no row for 10.10.2.2:8080 in\n${hostsBody(dom)}`);
      assert.equal(busy['total'], String(CONNECTIONS));
      assert.equal(busy['active'], '0');
      assert.equal(busy['failures'], '0');
      assert.match(busy['connect_p50'] ?? '', /^\d+(\.\d+)?$/, 'connect p50 of a host with its own histogram');
      const bulk = hostRow(dom, '10.10.2.2:8081');
      assert.equal(bulk?.['total'], '1');
      // Both ways: 3 MiB sent and 3 MiB echoed back.
      assert.equal(bulk?.['bytes'], '6 MiB');
      assert.deepEqual(hostOrder(dom).slice(0, 2), ['10.10.2.2:8080', '10.10.2.2:8081'], 'busiest (total) first');

      // Counters as /stats has them (no traffic since), and the policy's deny by rule.
      assert.equal(textOf(dom, 'kpi-total'), String(stats.downstream_cx_total));
      assert.equal(textOf(dom, 'kpi-active'), '0');
      assert.equal(textOf(dom, 'kpi-refused'), '1');
      assert.match(dom, /<tr><th>no-8099<\/th><td>1<\/td>/, 'policy rule no-8099 with 1 deny');
      for (const chart of ['chart-active', 'chart-cps', 'chart-bytes', 'chart-splice', 'chart-refused']) {
        assert.match(dom, new RegExp(`id="${chart}"><svg `), `${chart} drawn`);
      }

      // Latency: the report's percentile curve for connect, with the figures under it.
      const connectCard = dom.slice(dom.indexOf('id="plot-connect"'), dom.indexOf('id="plot-proxy_overhead"'));
      assert.match(connectCard, /<path d="M[\d.]+,[\d.]+L/, 'connect curve drawn');
      assert.match(connectCard, new RegExp(`<p class="figures">n ${CONNECTIONS + 1} · p50 [\\d.]+ ms`));

      // Listeners, each with its own counts as /stats has them (no traffic since: 0 per second).
      assert.match(dom, /<tr data-listener="egress"><th>egress<\/th><td class="text">original_dst<\/td><td class="text">0\.0\.0\.0:15001<\/td>/);
      assert.match(dom, /<tr data-listener="side"><th>side<\/th><td class="text">original_dst<\/td><td class="text">0\.0\.0\.0:15002<\/td>/);
      assert.equal(counter(stats, 'listener.egress.downstream_cx_total'), CONNECTIONS);
      assert.equal(counter(stats, 'listener.side.downstream_cx_total'), 2);
      assert.deepEqual(listenerRow(dom, 'egress'), {
        accepted_per_s: '0',
        accepted: String(counter(stats, 'listener.egress.downstream_cx_total')),
        active: '0',
        refused: '0',
      });
      assert.deepEqual(listenerRow(dom, 'side'), {
        accepted_per_s: '0',
        accepted: String(counter(stats, 'listener.side.downstream_cx_total')),
        active: '0',
        refused: String(counter(stats, 'listener.side.policy_denied')),
      });
      assert.equal(counter(stats, 'listener.side.policy_denied'), 1);
      assert.match(dom, /top-level policy: 1 rule \(no-8099\), default allow, special denies on/);
      assert.equal(textOf(dom, 'state'), 'ready');
      assert.equal(textOf(dom, 'workers'), '2/2');
      assert.equal(textOf(dom, 'restarts'), '0');
      assert.equal(textOf(dom, 'generation'), '1');
      assert.equal(textOf(dom, 'config-file'), proxy().configPath);
      const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string };
      assert.equal(textOf(dom, 'version'), `v${pkg.version}`);

      assertNoExternalUrl(dom, 'the rendered DOM');
    }),
  );

  it('the filter box and sort order come from the URL fragment and apply to the table', { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const filtered = await dumpDom(lab, `${URL_}#filter=8081`, 3000);
      assert.deepEqual(hostOrder(filtered), ['10.10.2.2:8081']);
      assert.match(textOf(filtered, 'hosts-count'), /^showing 1 of 1 matching \(2 hosts\)$/);
      const byBytes = await dumpDom(lab, `${URL_}#sort=bytes&dir=asc`, 3000);
      assert.deepEqual(hostOrder(byBytes), ['10.10.2.2:8080', '10.10.2.2:8081']);
      const byHostDesc = await dumpDom(lab, `${URL_}#sort=host&dir=desc`, 3000);
      assert.deepEqual(hostOrder(byHostDesc), ['10.10.2.2:8081', '10.10.2.2:8080']);
    }),
  );

  it('the served page holds no external URL; curl keeps the route list', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const plain = await lab.admin('/', { address: ADMIN, accept: '*/*' });
      assert.match(plain.body, /^\/\n\/ready\n/, 'curl (Accept: */*) keeps the plain route list');
      const page = await lab.admin('/', { address: ADMIN, accept: 'text/html,application/xhtml+xml,*/*;q=0.8' });
      assert.equal(page.status, 200);
      assert.match(page.headers?.['content-type'] ?? '', /^text\/html/);
      assert.match(page.headers?.['content-security-policy'] ?? '', /default-src 'none'.*connect-src 'self'/);
      assert.match(page.body, /^<!DOCTYPE html>/);
      assertNoExternalUrl(page.body, 'the served page');
    }),
  );

  it('an open page follows new traffic as it happens (real time), and a screenshot is taken meanwhile', { timeout: 120000 }, () =>
    withDiagnostics(lab, sg, async () => {
      const browser = await BrowserPage.open(lab, URL_, { width: 1400, height: 2000 });
      try {
        const total = (): Promise<string | null> =>
          browser.evaluate<string | null>(`(document.querySelector('#hosts-body tr[data-host="10.10.2.2:8080"] td[data-col="total"]') || {}).textContent || null`);
        await waitFor(async () => ((await total()) === String(CONNECTIONS) ? true : undefined), { timeoutMs: 20000, intervalMs: 100, what: 'the page to show the first 7 connections' });
        const more = await connectMany(lab, { target: '10.10.2.2:8080', n: 3, expectId: 'S' });
        assert.equal(more.ok, 3, JSON.stringify(more.errors));
        // The next poll (every 2 s) brings the new count without a reload.
        await waitFor(async () => ((await total()) === String(CONNECTIONS + 3) ? true : undefined), { timeoutMs: 20000, intervalMs: 100, what: 'the page to show 10 connections' });
        // The listeners' own counts follow too (from /stats, fetched beside /clusters): all 10 came
        // through egress. The update that first shows 10 also shows a rate above 0 (the sample
        // before it had fewer), until the next one 2 s later: read both cells at once.
        const cells = (name: string): Promise<string> =>
          browser.evaluate<string>(
            `Array.from(document.querySelectorAll('#listeners-body tr[data-listener="${name}"] td[data-col]')).map(function (td) { return td.getAttribute('data-col') + '=' + td.textContent; }).join(' ')`,
          );
        const seen = await waitFor(
          async () => {
            const text = await cells('egress');
            return text.includes(`accepted=${CONNECTIONS + 3} `) ? text : undefined;
          },
          { timeoutMs: 20000, intervalMs: 100, what: 'egress to show 10 accepted' },
        );
        assert.match(seen, /accepted_per_s=(?!0 )[\d.]+ /, `a rate for the 3 new connections: ${seen}`);
        assert.match(await cells('side'), /accepted=2 /);

        // A paced transfer: the byte rate and splice share appear in the charts while it runs.
        const paced = startTransfer(lab, { target: '10.10.2.2:8081', send: 12 * MiB, recv: 12 * MiB, rateBytesPerSec: 2 * MiB, timeoutMs: 60000 });
        try {
          const rx = await waitFor(
            async () => {
              const text = await browser.evaluate<string>(`document.getElementById('kpi-rx').textContent`);
              return /MiB\/s$/.test(text) ? text : undefined;
            },
            { timeoutMs: 30000, intervalMs: 200, what: 'a MiB/s byte rate on the page' },
          );
          // Two more polls so the charts hold a few points of the transfer.
          const updates = await browser.evaluate<number>(`Number(document.getElementById('status').dataset.updates)`);
          await waitFor(async () => ((await browser.evaluate<number>(`Number(document.getElementById('status').dataset.updates)`)) >= updates + 2 ? true : undefined), {
            timeoutMs: 20000,
            intervalMs: 200,
            what: 'two more updates',
          });
          fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
          const png = await browser.screenshot();
          fs.writeFileSync(SCREENSHOT, png);
          const pixels = decodePng(png);
          assert.equal(pixels.width, 1400);
          assert.ok(inkRatio(pixels) > 0.2, `screenshot looks blank: ${inkRatio(pixels)}`);
          assert.ok(colourCount(pixels) > 50, 'too few colours for text, badges and chart lines');
          process.stdout.write(`# dashboard screenshot: ${SCREENSHOT} (${png.length} bytes; client->upstream ${rx} when it first showed)\n`);
        } finally {
          const r = await finishTransfer(paced, 90000);
          assert.equal(r.ok, true, r.error);
        }
        assert.equal(await browser.evaluate<string>(`document.getElementById('status').dataset.state`), 'ok');
      } finally {
        await browser.close();
      }
    }),
  );
});
