// One source of defaults: the schema (src/config/schema.ts). docs/CONFIG.md's table must state the
// defaults the schema applies, and the native options built from a minimal config must carry every
// configurable value explicitly (so cpp/core/core_options.h's initialisers never decide anything
// for a configured proxy) and carry the schema's defaults.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configFileSchema, DEFAULTS } from '../src/config/schema';
import { parseDuration } from '../src/config/duration';
import { defaultConfig } from '../src/config';
import { nativeOptionsFor } from '../src/proxy/native-options';

const ROOT = join(__dirname, '..', '..');

// A minimal file (top-level defaults), and one that names every optional section and list, so each
// nested default is applied too.
const minimalFile = configFileSchema.parse({
  listeners: [{ name: 'egress', address: '0.0.0.0:15001' }],
}) as unknown as Record<string, unknown>;
const fullFile = configFileSchema.parse({
  // mode http so the http: block (and its defaults) is there; the minimal file supplies listeners[].mode.
  listeners: [{ name: 'egress', address: '0.0.0.0:15001', mode: 'http', http: {}, proxy_protocol: { trusted_sources: ['10.0.0.0/8'] } }],
  cluster: { preconnect: { ports: [80] } },
  policy: { rules: [{ name: 'r', action: 'deny', cidrs: ['10.0.0.0/8'] }] },
  access_log: { path: 'stdout' },
}) as unknown as Record<string, unknown>;

/** The parsed value at a CONFIG.md path such as `listeners[].proxy_protocol.timeout`. */
function valueAt(path: string): unknown {
  return valueIn(minimalFile, path) ?? valueIn(fullFile, path);
}

function valueIn(file: Record<string, unknown>, path: string): unknown {
  let node: unknown = file;
  for (const part of path.split('.')) {
    const list = part.endsWith('[]');
    const key = list ? part.slice(0, -2) : part;
    if (node === null || typeof node !== 'object' || !(key in node)) return undefined;
    node = (node as Record<string, unknown>)[key];
    if (list) node = Array.isArray(node) ? node[0] : undefined;
  }
  return node;
}

/** Whether a documented default (the text inside backticks) states the parsed value. */
function agrees(documented: string, value: unknown): boolean {
  if (typeof value === 'boolean') return documented === String(value);
  if (typeof value === 'number') {
    if (/^\d+$/.test(documented)) return Number(documented) === value;
    const ms = parseDuration(documented);
    return ms.ok && ms.value === value;
  }
  if (typeof value === 'string') return documented === value;
  if (Array.isArray(value)) return documented === JSON.stringify(value);
  if (value !== null && typeof value === 'object' && 'text' in value) return documented === (value as { text: string }).text;
  return false;
}

test('docs/CONFIG.md states the defaults the schema applies', () => {
  const doc = readFileSync(join(ROOT, 'docs', 'CONFIG.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| `([a-z_.[\]]+)` \| [^|]+ \| `([^`]*)`( \([^)|]*\))? \|/gm)];
  const checked: string[] = [];
  const wrong: string[] = [];
  for (const [, path, documented] of rows) {
    const value = valueAt(path);
    if (value === undefined) {
      wrong.push(`${path}: documented default \`${documented}\`, but the schema applies none`);
      continue;
    }
    checked.push(path);
    if (!agrees(documented, value)) wrong.push(`${path}: documented \`${documented}\`, schema gives ${JSON.stringify(value)}`);
  }
  assert.deepEqual(wrong, []);
  // The table is the source of these rows: if the pattern stopped matching it, this test would
  // check nothing and pass.
  for (const path of ['workers', 'cluster.connect_timeout', 'cluster.max_connections', 'listeners[].backlog',
    'listeners[].proxy_protocol.timeout', 'cluster.preconnect.ttl', 'tuning.copy_buffer_size', 'drain_timeout',
    'admin.address', 'policy.deny_special']) {
    assert.ok(checked.includes(path), `CONFIG.md row for ${path} was not checked`);
  }
});

test('the native options from a minimal config carry every configurable value, with the schema defaults', () => {
  const config = defaultConfig();
  config.workers = 1; // shares of process-wide bounds are then the bounds themselves
  const fdLimit = 65536;
  const native = nativeOptionsFor(config, fdLimit);
  const ms = (text: string): number => {
    const parsed = parseDuration(text);
    assert.ok(parsed.ok);
    return parsed.value;
  };
  const unlimited = Number.MAX_SAFE_INTEGER; // 0 in the config: no per-host bound
  const expected: Record<string, unknown> = {
    connectTimeoutMs: ms(DEFAULTS.connectTimeout),
    idleTimeoutMs: ms(DEFAULTS.idleTimeout),
    cleanupIntervalMs: ms(DEFAULTS.cleanupInterval),
    upstreamMark: DEFAULTS.upstreamMark,
    upstreamPortOverride: DEFAULTS.upstreamPortOverride,
    maxHosts: DEFAULTS.maxHosts,
    maxConnectionsPerHost: DEFAULTS.maxConnections === 0 ? unlimited : DEFAULTS.maxConnections,
    maxPendingPerHost: DEFAULTS.maxPending === 0 ? unlimited : DEFAULTS.maxPending,
    maxDownstreamConnections: DEFAULTS.maxDownstreamConnections === 0 ? Math.floor((fdLimit - 256) / 2.5) : DEFAULTS.maxDownstreamConnections,
    preconnectPorts: [],
    preconnectPerHost: 0,
    relayMode: DEFAULTS.relayMode,
    pipeSize: DEFAULTS.pipeSize,
    copyBufferSize: DEFAULTS.copyBufferSize,
    driver: DEFAULTS.driver,
    recordLatency: DEFAULTS.recordLatency,
    sendProxyProtocol: 0,
    originalSource: DEFAULTS.originalSource,
    udpSessionTimeoutMs: ms(DEFAULTS.udpSessionTimeout),
    udpMaxSessions: DEFAULTS.udpMaxSessionsPerWorker,
    httpPoolMaxIdlePerHost: DEFAULTS.httpPoolMaxIdlePerHost,
    httpPoolIdleTimeoutMs: ms(DEFAULTS.httpPoolIdleTimeout),
    accessLogSample: 0, // no access_log: no records
    // A dead worker's loop is bounded like a drain (the addon's own initialiser is 30 s).
    orphanTimeoutMs: ms(DEFAULTS.drainTimeout),
  };
  for (const [key, value] of Object.entries(expected)) {
    assert.deepEqual((native as unknown as Record<string, unknown>)[key], value, `native option ${key}`);
  }
  // Every option passed is one checked above or one derived from no config key (bounds from the fd
  // limit and fixed capacities; the compiled policies have tests of their own): an option dropped
  // from native-options.ts, which leaves the value to the core's or the addon's initialiser, or one
  // added without a check here, fails.
  const derived = ['maxPipes', 'maxIdlePipes', 'httpPoolMaxIdle', 'accessLogCapacity', 'policies'];
  assert.deepEqual(Object.keys(native).sort(), [...Object.keys(expected), ...derived].sort());
});
