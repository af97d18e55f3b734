// The admin dashboard page (GET / when the client accepts text/html): one self-contained HTML
// document, built once per process. Its script polls the admin's JSON endpoints, so serving the page
// itself reads nothing from the workers. A Content-Security-Policy lets the page load nothing but
// its own inline script and style and talk to nothing but this admin endpoint.

import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { LATENCY_METRICS } from '../../latency/metrics';
import { CLIENT_APP } from './client-app';
import { CLIENT_CHARTS } from './client-charts';
import { DASHBOARD_SETTINGS, type DashboardSettings } from './settings';
import { DASHBOARD_STYLE } from './style';

export interface DashboardPage {
  html: string;
  contentSecurityPolicy: string;
}

const HOST_HEADERS: Array<[string, string]> = [
  ['host', 'original destination'],
  ['active', 'active'],
  ['total', 'total'],
  ['failures', 'failures'],
  ['bytes', 'bytes'],
  ['connect_p50', 'connect p50 (ms)'],
  ['connect_p99', 'connect p99 (ms)'],
  ['ttfb_p99', 'ttfb p99 (ms)'],
];

function kpi(id: string, label: string): string {
  return `<div class="kpi"><div class="label">${label}</div><div class="value" id="${id}">-</div></div>`;
}

function headerField(id: string, label: string): string {
  return `<div><dt>${label}</dt><dd id="${id}">-</dd></div>`;
}

function body(settings: DashboardSettings): string {
  const minutes = Math.round(settings.windowMs / 60000);
  return `
<header>
  <h1>splicegate<small id="version"></small></h1>
  <span id="state" class="badge idle">loading</span>
  <dl>
    ${headerField('uptime', 'uptime')}
    ${headerField('generation', 'config generation')}
    ${headerField('config-file', 'config file')}
    ${headerField('workers', 'workers alive')}
    ${headerField('restarts', 'worker restarts')}
  </dl>
</header>
<main>
  <h2>Traffic<span class="aside">up to the last ${minutes} minutes, kept in this page since it was opened</span></h2>
  <div class="kpis">
    ${kpi('kpi-active', 'active connections')}
    ${kpi('kpi-cps', 'new connections / s')}
    ${kpi('kpi-total', 'connections accepted')}
    ${kpi('kpi-rx', 'client &rarr; upstream')}
    ${kpi('kpi-tx', 'upstream &rarr; client')}
    ${kpi('kpi-splice', 'moved by splice')}
    ${kpi('kpi-refused', 'refused (total)')}
  </div>
  <div class="charts">
    <div class="card" id="chart-active"></div>
    <div class="card" id="chart-cps"></div>
    <div class="card" id="chart-bytes"></div>
    <div class="card" id="chart-splice"></div>
    <div class="card" id="chart-refused"></div>
  </div>
  <div id="policy-rules"></div>

  <h2>Destinations<span class="aside">original hosts in the workers' host caches</span></h2>
  <div class="toolbar">
    <input id="hosts-filter" type="search" placeholder="filter by address" aria-label="filter destinations by address">
    <span id="hosts-count" class="note"></span>
  </div>
  <table id="hosts">
    <thead><tr id="hosts-head">${HOST_HEADERS.map(([key, label]) => `<th data-key="${key}">${label}</th>`).join('')}</tr></thead>
    <tbody id="hosts-body"></tbody>
  </table>

  <h2>Latency<span class="aside">percentile curves since start, merged over the workers</span></h2>
  <div class="charts">
    ${LATENCY_METRICS.map((m) => `<div class="card" id="plot-${m}"><div class="plot"></div><p class="figures"></p><p class="what"></p></div>`).join('\n    ')}
  </div>

  <h2>Listeners</h2>
  <table id="listeners">
    <thead><tr><th>name</th><th class="text">mode</th><th class="text">address</th><th>accepted/s</th><th>accepted</th><th>active</th><th title="policy, loop, no original destination, overflow">refused</th><th class="text">policy</th></tr></thead>
    <tbody id="listeners-body"></tbody>
  </table>
</main>
<footer><span id="status" data-state="loading">loading&hellip;</span></footer>`;
}

function script(settings: DashboardSettings): string {
  // JSON is valid JS; "<" is escaped so no settings text can close the script element.
  const json = JSON.stringify(settings).replace(/</g, '\\u003c');
  return `(function () {\n'use strict';\nvar S = ${json};\n${CLIENT_CHARTS}\n${CLIENT_APP}\n})();\n`;
}

function sha256(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

export function buildDashboardPage(settings: DashboardSettings = DASHBOARD_SETTINGS): DashboardPage {
  const js = script(settings);
  const html = [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    // An empty data: icon, so the browser does not ask for /favicon.ico.
    '<link rel="icon" href="data:,">',
    `<title>splicegate admin</title><style>${DASHBOARD_STYLE}</style></head>`,
    `<body>${body(settings)}`,
    `<script>${js}</script>`,
    '</body></html>',
    '',
  ].join('\n');
  const contentSecurityPolicy = [
    "default-src 'none'",
    `script-src ${sha256(js)}`,
    `style-src ${sha256(DASHBOARD_STYLE)}`,
    "connect-src 'self'",
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html, contentSecurityPolicy };
}

let page: DashboardPage | undefined;

/** Answers with the page (built on first use, then the same bytes every time). */
export function sendDashboard(res: ServerResponse): void {
  page ??= buildDashboardPage();
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    vary: 'accept',
    'content-security-policy': page.contentSecurityPolicy,
    'x-content-type-options': 'nosniff',
  });
  res.end(page.html);
}
