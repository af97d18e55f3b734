// nativeOptionsFor: every limit derived from the open-files limit stays inside the addon's ranges,
// from a tiny limit up to LimitNOFILE=infinity (2^30 - 8), and the real addon accepts the result.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../src/config/load';
import { loadBinding } from '../src/native/binding';
import { FDS_PER_CONNECTION, HTTP_POOL_FD_SHARE, NATIVE_RANGES, nativeOptionsFor, RESERVED_FDS, workerPart } from '../src/proxy/native-options';
import { nativeListenerOptions } from '../src/proxy/listen-sockets';

const INFINITY_NOFILE = 1_073_741_816; // what systemd's LimitNOFILE=infinity gives

const config = (extra = ''): ReturnType<typeof parseConfigText> =>
  parseConfigText(`workers: 2\nlisteners:\n  - { name: egress, address: "0.0.0.0:15001" }\n${extra}`, 'test');

function assertInRanges(options: ReturnType<typeof nativeOptionsFor>, label: string): void {
  for (const [name, range] of Object.entries(NATIVE_RANGES)) {
    const value = options[name as keyof typeof NATIVE_RANGES];
    assert.ok(typeof value === 'number' && Number.isInteger(value), `${label}: ${name} = ${String(value)}`);
    assert.ok(value >= range.min && value <= range.max, `${label}: ${name} = ${value} outside ${range.min}..${range.max}`);
  }
}

test('a huge fd limit (LimitNOFILE=infinity) is clamped into the addon ranges', () => {
  const options = nativeOptionsFor(config(), INFINITY_NOFILE);
  assertInRanges(options, 'infinity');
  // Before the clamp this was 67,108,863 and start failed with "option maxPipes out of range".
  assert.equal(options.maxPipes, NATIVE_RANGES.maxPipes.max);
  assert.equal(options.maxDownstreamConnections, Math.ceil(Math.floor((INFINITY_NOFILE - RESERVED_FDS) / FDS_PER_CONNECTION) / 2));
});

test('tiny fd limits (below the reserve, 0, 1) still give positive, in-range bounds', () => {
  for (const limit of [0, 1, 64, RESERVED_FDS, RESERVED_FDS + 1, 1024]) {
    const options = nativeOptionsFor(config(), limit);
    assertInRanges(options, `limit ${limit}`);
    assert.ok((options.maxDownstreamConnections ?? 0) >= 1);
    assert.ok((options.maxPipes ?? 0) >= 16);
  }
  assert.equal(nativeOptionsFor(config(), 1024).maxDownstreamConnections, 154, '(1024 - 256) / 2.5 = 307, split over 2 workers');
});

test('the default bounds keep connections and pipes inside the open-files limit, with the reserve to spare', () => {
  // Every relayed connection's two sockets and every pipe's two fds at once must leave the
  // reserve (the admin endpoint, listeners, logs) untouched; an explicit bound that overcommits
  // leaves the pipe pool its minimum.
  for (const limit of [1024, 4096, 20000, 65536, 1 << 20]) {
    for (const workers of [1, 2, 4]) {
      const parts = Array.from({ length: workers }, (_, id) => nativeOptionsFor({ ...config(), workers }, limit, id));
      const connections = parts.reduce((sum, o) => sum + (o.maxDownstreamConnections ?? 0), 0);
      const pipes = parts.reduce((sum, o) => sum + (o.maxPipes ?? 0), 0);
      assert.ok(2 * connections + 2 * pipes <= limit - RESERVED_FDS, `limit ${limit}, ${workers} workers: ${connections} connections, ${pipes} pipes`);
      assert.ok(pipes >= connections / 4 - workers, `limit ${limit}, ${workers} workers: room for a pipe per four connections (${pipes} for ${connections})`);
    }
  }
  const overcommitted = nativeOptionsFor({ ...config('cluster: { max_downstream_connections: 100000 }'), workers: 2 }, 20000);
  assert.equal(overcommitted.maxPipes, 16);
  const explicit = nativeOptionsFor({ ...config('cluster: { max_downstream_connections: 9000 }'), workers: 2 }, 20000);
  assert.equal(explicit.maxPipes, Math.floor((20000 - RESERVED_FDS - 18000) / 2 / 2), 'what 9,000 connections leave');
});

test('with an http listener the idle keep-alive pool gets its part of the fds, bounded per worker, and the default bounds leave it free', () => {
  const httpConfig = (extra = ''): ReturnType<typeof parseConfigText> =>
    parseConfigText(`workers: 2\nlisteners:\n  - { name: gw, address: "127.0.0.1:9001", mode: http }\n${extra}`, 'test');
  for (const limit of [1024, 4096, 20000, 65536, 1 << 20]) {
    for (const workers of [1, 2, 4]) {
      const parts = Array.from({ length: workers }, (_, id) => nativeOptionsFor({ ...httpConfig(), workers }, limit, id));
      const connections = parts.reduce((sum, o) => sum + (o.maxDownstreamConnections ?? 0), 0);
      const pipes = parts.reduce((sum, o) => sum + (o.maxPipes ?? 0), 0);
      const pooled = parts.reduce((sum, o) => sum + (o.httpPoolMaxIdle ?? 0), 0);
      const label = `limit ${limit}, ${workers} workers: ${connections} connections, ${pipes} pipes, ${pooled} pooled`;
      assert.equal(pooled, Math.floor((limit - RESERVED_FDS) * HTTP_POOL_FD_SHARE), label);
      // Every connection's two sockets, every pipe and every idle pooled connection at once leave the reserve.
      assert.ok(2 * connections + 2 * pipes + pooled <= limit - RESERVED_FDS, label);
    }
  }
  const at20k = nativeOptionsFor(httpConfig(), 20000);
  assert.equal(at20k.httpPoolMaxIdle, 987, '10 % of 19,744 fds, split over 2 workers');
  assert.equal(at20k.maxDownstreamConnections, Math.ceil(Math.floor((19744 - 1974) / FDS_PER_CONNECTION) / 2));
  // No pool kept (no http listener, or max_idle_per_host 0): no part, no total bound, the bounds as before.
  for (const cfg of [config(), httpConfig('cluster: { http_pool: { max_idle_per_host: 0 } }')]) {
    const options = nativeOptionsFor(cfg, 20000);
    assert.equal(options.httpPoolMaxIdle, 0);
    assert.equal(options.maxDownstreamConnections, Math.ceil(Math.floor((20000 - RESERVED_FDS) / FDS_PER_CONNECTION) / 2));
  }
});

test('configured bounds at their schema maximum stay in range with one worker', () => {
  const options = nativeOptionsFor(
    { ...config('cluster: { max_hosts: 10000000, max_connections: 10000000, max_pending: 10000000, max_downstream_connections: 10000000 }'), workers: 1 },
    INFINITY_NOFILE,
  );
  assertInRanges(options, 'max config');
  assert.equal(options.maxDownstreamConnections, 10_000_000);
});

test('the addon accepts the options for huge and tiny limits (no "out of range")', () => {
  const binding = loadBinding();
  for (const limit of [0, 1024, INFINITY_NOFILE, Number.MAX_SAFE_INTEGER]) {
    const worker = new binding.NativeWorker(nativeOptionsFor(config(), limit));
    worker.close();
  }
});

test('an http listener and cluster.http_pool reach the addon (pool split per worker), and it accepts them', () => {
  const cfg = parseConfigText(
    [
      'workers: 2',
      'listeners:',
      '  - name: gw',
      '    address: "127.0.0.1:9001"',
      '    mode: http',
      '    http: { header_name: X-Dst, trusted_sources: ["10.0.0.0/8"], strip_header: false, connect: false, request_head_timeout: 3s, max_request_head_bytes: 8192 }',
      'cluster: { http_pool: { max_idle_per_host: 5, idle_timeout: 7s } }',
    ].join('\n'),
    'test',
  );
  const options = nativeOptionsFor(cfg, 4096);
  assert.equal(options.httpPoolMaxIdlePerHost, 3, '5 split over 2 workers, rounded up');
  assert.equal(options.httpPoolIdleTimeoutMs, 7000);
  const listener = cfg.listeners[0];
  assert.ok(listener);
  const native = nativeListenerOptions(listener, 0);
  assert.deepEqual(native.http, {
    headerName: 'x-dst',
    trustedSources: ['10.0.0.0/8'],
    stripHeader: false,
    connect: false,
    requestHeadTimeoutMs: 3000,
    maxRequestHeadBytes: 8192,
  });
  const binding = loadBinding();
  const worker = new binding.NativeWorker(options);
  worker.close();
  // An original_dst listener carries no http block.
  assert.equal(nativeListenerOptions({ ...listener, mode: 'original_dst' }, 0).http, undefined);
});

test('per-host limits go to every worker whole: the core counts them process-wide, not per worker', () => {
  // ceil(3 / 2) = 2 per worker allowed 4 connections to a host with max_connections: 3.
  const options = nativeOptionsFor(config('cluster: { max_connections: 3, max_pending: 5 }\n'), 1024);
  assert.equal(options.maxConnectionsPerHost, 3);
  assert.equal(options.maxPendingPerHost, 5);
  const unbounded = nativeOptionsFor(config(), 1024);
  assert.equal(unbounded.maxConnectionsPerHost, Number.MAX_SAFE_INTEGER);
});

test('max_downstream_connections: the workers\' parts add up to the bound exactly', () => {
  // ceil(50 / 3) = 17 each allowed 51; ceil(3 / 2) = 2 each allowed 4.
  for (const [total, workers] of [[50, 3], [3, 2], [7, 4], [100, 2], [5, 5]] as const) {
    const parts = Array.from({ length: workers }, (_, id) => workerPart(total, workers, id));
    assert.equal(parts.reduce((a, b) => a + b, 0), total, `${total} over ${workers}: ${parts.join('+')}`);
    assert.ok(Math.max(...parts) - Math.min(...parts) <= 1, `${total} over ${workers}: ${parts.join('+')}`);
  }
  const text = 'cluster: { max_downstream_connections: 3 }\n';
  assert.deepEqual([0, 1].map((id) => nativeOptionsFor(config(text), 1024, id).maxDownstreamConnections), [2, 1]);
  // Fewer than workers: each keeps 1 (a worker with 0 could never accept).
  assert.equal(workerPart(1, 2, 1), 1);
});
