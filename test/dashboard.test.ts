// The dashboard's server side without a data plane: content negotiation on GET /, the page's
// self-containment and CSP, /server_info, and /latency?format=plots.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startAdminServer, type AdminServer } from '../src/admin/admin-server';
import { acceptsHtml } from '../src/admin/dashboard/negotiate';
import { buildDashboardPage } from '../src/admin/dashboard/page';
import { DASHBOARD_SETTINGS } from '../src/admin/dashboard/settings';
import { serverInfo, type ServerInfo } from '../src/admin/server-info';
import { defaultConfig } from '../src/config/default';
import { validateConfigValue } from '../src/config/schema';
import { closeLatencyPool } from '../src/latency/merge-pool';
import { sharedCollect, type WorkerLatencyExport } from '../src/latency/source';
import { createLogger } from '../src/util/logger';
import { StaticSource, workerExport } from './latency/helpers';

const silent = createLogger('error', () => undefined);

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64');
}

describe('GET / content negotiation', () => {
  it('only a client naming text/html (or XHTML) with q > 0 gets the page', () => {
    assert.equal(acceptsHtml(undefined), false);
    assert.equal(acceptsHtml('*/*'), false, 'curl');
    assert.equal(acceptsHtml('application/json'), false);
    assert.equal(acceptsHtml('text/html'), true);
    assert.equal(acceptsHtml('text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8'), true, 'a browser');
    assert.equal(acceptsHtml('application/xhtml+xml'), true);
    assert.equal(acceptsHtml('text/html;q=0'), false);
    assert.equal(acceptsHtml('TEXT/HTML ; Q=0.5'), true);
    assert.equal(acceptsHtml('text/htmlx, text/plain'), false);
  });
});

describe('the dashboard page', () => {
  const page = buildDashboardPage();

  it('is one document whose inline script and style are the only ones the CSP allows', () => {
    const scripts = [...page.html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1] ?? '');
    const styles = [...page.html.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => m[1] ?? '');
    assert.equal(scripts.length, 1);
    assert.equal(styles.length, 1);
    assert.ok(page.contentSecurityPolicy.includes(`script-src 'sha256-${sha256(scripts[0] ?? '')}'`), page.contentSecurityPolicy);
    assert.ok(page.contentSecurityPolicy.includes(`style-src 'sha256-${sha256(styles[0] ?? '')}'`), page.contentSecurityPolicy);
    assert.match(page.contentSecurityPolicy, /default-src 'none'.*connect-src 'self'/);
    // The script parses (a syntax error would only show in a browser otherwise).
    assert.doesNotThrow(() => new Function(scripts[0] ?? ''));
  });

  it('holds no external URL and names only admin paths', () => {
    assert.doesNotMatch(page.html, /\b(?:https?|wss?|ftp):|url\(|@import|\ssrc=/i);
    for (const m of page.html.matchAll(/\bhref="([^"]*)"/g)) assert.match(m[1] ?? '', /^data:/);
    for (const endpoint of Object.values(DASHBOARD_SETTINGS.endpoints)) assert.ok(page.html.includes(JSON.stringify(endpoint)), endpoint);
    assert.ok(page.html.includes(`"configGenerationField":"config_generation"`));
  });
});

describe('server_info', () => {
  it('reports version, uptime, config file, workers, readiness and each listener with its policy', () => {
    const result = validateConfigValue({
      workers: 3,
      listeners: [
        { name: 'egress', address: '0.0.0.0:15001' },
        {
          name: 'meta',
          address: '[::]:15006',
          transparent: true,
          proxy_protocol: { trusted_sources: ['10.0.0.0/8'], required: false },
          policy: { default: 'deny', rules: [{ name: 'imds', action: 'allow', cidrs: ['169.254.169.254/32'] }] },
        },
      ],
      policy: { rules: [{ name: 'no-db', action: 'deny', cidrs: ['10.9.0.0/16'], ports: ['5432'] }] },
    });
    assert.ok(result.ok, JSON.stringify(result));
    const config = result.config;
    let draining = false;
    const info = (): ServerInfo =>
      serverInfo(
        {
          version: '9.9.9',
          startedAtMs: 1_000_000,
          configFile: '/etc/splicegate/splicegate.yaml',
          config: () => config,
          readiness: () => (draining ? { ready: false, detail: 'draining' } : { ready: true, detail: 'ready' }),
          workersAlive: () => 2,
          workerRestarts: () => 4,
        },
        1_000_000 + 61_400,
      );
    const a = info();
    assert.equal(a.version, '9.9.9');
    assert.equal(a.uptime_s, 61);
    assert.equal(a.config_file, '/etc/splicegate/splicegate.yaml');
    assert.equal(a.state, 'ready');
    assert.deepEqual(a.workers, { configured: 3, alive: 2, restarts: 4 });
    assert.deepEqual(a.listeners, [
      {
        name: 'egress',
        address: '0.0.0.0:15001',
        mode: 'original_dst',
        protocol: 'tcp',
        transparent: false,
        proxy_protocol: 'off',
        policy: { scope: 'top-level', default_action: 'allow', deny_special: true, rules: ['no-db'] },
      },
      {
        name: 'meta',
        address: '[::]:15006',
        mode: 'original_dst',
        protocol: 'tcp',
        transparent: true,
        proxy_protocol: 'optional',
        policy: { scope: 'listener', default_action: 'deny', deny_special: true, rules: ['imds'] },
      },
    ]);
    draining = true;
    assert.equal(info().state, 'draining');
  });
});

describe('admin routes behind the dashboard', () => {
  let admin: AdminServer;
  const source = new StaticSource([workerExport({ connect: [120, 250, 900], ttfb: [4000] })]);

  before(async () => {
    const config = defaultConfig();
    admin = await startAdminServer(
      { host: '127.0.0.1', port: 0, family: 4, text: '127.0.0.1:0' },
      {
        readiness: () => ({ ready: true, detail: 'ready' }),
        counters: async () => ({ downstream_cx_total: 3 }),
        hosts: async () => [],
        latency: source,
        allowedHosts: () => config.admin.allowedHosts,
        serverInfo: () =>
          serverInfo({
            version: '1.2.3',
            startedAtMs: Date.now(),
            configFile: '(built-in default config)',
            config: () => config,
            readiness: () => ({ ready: true, detail: 'ready' }),
            workersAlive: () => config.workers,
            workerRestarts: () => 0,
          }),
      },
      silent,
    );
  });

  after(async () => {
    await admin.close();
    await closeLatencyPool();
  });

  const url = (path: string): string => `http://127.0.0.1:${admin.port}${path}`;

  it('GET / gives a browser the page (with its CSP) and curl the route list, which names /server_info', async () => {
    const html = await fetch(url('/'), { headers: { accept: 'text/html,*/*;q=0.8' } });
    assert.equal(html.status, 200);
    assert.match(html.headers.get('content-type') ?? '', /^text\/html; charset=utf-8$/);
    assert.equal(html.headers.get('content-security-policy'), buildDashboardPage().contentSecurityPolicy);
    assert.equal(html.headers.get('vary'), 'accept');
    assert.match(await html.text(), /^<!DOCTYPE html>[\s\S]*<title>splicegate admin<\/title>/);
    const head = await fetch(url('/'), { method: 'HEAD', headers: { accept: 'text/html' } });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    const plain = await fetch(url('/'), { headers: { accept: '*/*' } });
    assert.match(plain.headers.get('content-type') ?? '', /^text\/plain/);
    assert.deepEqual((await plain.text()).trim().split('\n'), ['/', '/ready', '/stats', '/stats/prometheus', '/latency', '/clusters', '/server_info']);
  });

  it('GET /server_info answers JSON', async () => {
    const r = await fetch(url('/server_info'));
    assert.equal(r.status, 200);
    const body = (await r.json()) as ServerInfo;
    assert.equal(body.version, '1.2.3');
    assert.equal(body.state, 'ready');
    assert.equal(body.listeners[0]?.name, 'egress');
  });

  it('GET /latency?format=plots gives the report\'s four plots, drawn where there are samples', async () => {
    const r = await fetch(url('/latency?format=plots'));
    assert.equal(r.status, 200);
    const body = (await r.json()) as { unit: string; workers: number; plots: Array<{ metric: string; count: number; svg: string }> };
    assert.equal(body.unit, 'ms');
    assert.equal(body.workers, 1);
    assert.deepEqual(body.plots.map((p) => p.metric), ['connect', 'proxy_overhead', 'ttfb', 'duration']);
    const connect = body.plots[0];
    assert.equal(connect?.count, 3);
    assert.match(connect?.svg ?? '', /^<svg [^>]*role="img"[\s\S]*<path d="M/);
    assert.doesNotMatch(connect?.svg ?? '', /xmlns|https?:/, 'inline SVG needs no namespace URL');
    assert.match(body.plots[1]?.svg ?? '', /no samples/);
    const bad = await fetch(url('/latency?format=svg'));
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /use text, json, hdr or plots/);
  });
});

describe('sharedCollect', () => {
  it('readers arriving during a collect share it; a later reader asks again', async () => {
    let calls = 0;
    let release: () => void = () => undefined;
    const exports: WorkerLatencyExport[] = [workerExport({ connect: [100] })];
    const shared = sharedCollect({
      collect: () => {
        calls += 1;
        return new Promise((resolve) => (release = () => resolve(exports)));
      },
    });
    const a = shared.collect();
    const b = shared.collect();
    assert.equal(calls, 1);
    release();
    assert.equal(await a, exports);
    assert.equal(await b, exports);
    const c = shared.collect();
    assert.equal(calls, 2, 'nothing is kept past the answer');
    release();
    await c;
  });
});
