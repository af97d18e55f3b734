// The HTTP listener's config keys: listeners[].mode: http, listeners[].http (header_name,
// trusted_sources, strip_header, connect, request_head_timeout, max_request_head_bytes) and
// cluster.http_pool. Parsed values are exact; every bad input is a problem at its own path; the
// empty trusted_sources default is valid but warned about.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../src/config/load';
import { problemAt, problemsOf } from './config-problems';
import { configWarnings } from '../src/config/warnings';

const HTTP_LISTENER = 'listeners:\n  - name: gw\n    address: "127.0.0.1:9001"\n    mode: http\n';
const PLAIN_LISTENER = 'listeners:\n  - name: egress\n    address: "0.0.0.0:15001"\n';

function withHttp(block: string): string {
  return `${HTTP_LISTENER}    http: ${block}\n`;
}

test('mode: http without an http block gets every default; original_dst listeners have no http', () => {
  const config = parseConfigText(HTTP_LISTENER, 't');
  assert.equal(config.listeners[0]?.mode, 'http');
  assert.deepEqual(config.listeners[0]?.http, {
    headerName: 'x-envoy-original-dst-host',
    trustedSources: [],
    stripHeader: true,
    connect: true,
    requestHeadTimeoutMs: 10_000,
    maxRequestHeadBytes: 65_536,
  });
  const plain = parseConfigText(PLAIN_LISTENER, 't').listeners[0];
  assert.equal(plain?.mode, 'original_dst');
  assert.equal(plain !== undefined && 'http' in plain, false, 'an original_dst listener carries no http key at all');
  // An empty http: {} is the same as none.
  assert.deepEqual(parseConfigText(withHttp('{}'), 't').listeners[0]?.http, config.listeners[0]?.http);
});

test('http: every key parsed; the header name is lowercased; CIDRs canonical', () => {
  const http = parseConfigText(
    withHttp('{ header_name: X-Envoy-Original-Dst-Host, trusted_sources: ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"], strip_header: false, connect: false, request_head_timeout: 1500ms, max_request_head_bytes: 1024 }'),
    't',
  ).listeners[0]?.http;
  assert.deepEqual(http, {
    headerName: 'x-envoy-original-dst-host',
    trustedSources: [
      { family: 4, network: '10.0.0.0', prefix: 8, text: '10.0.0.0/8' },
      { family: 6, network: '2001:db8::', prefix: 32, text: '2001:db8::/32' },
      { family: 4, network: '192.0.2.7', prefix: 32, text: '192.0.2.7/32' },
    ],
    stripHeader: false,
    connect: false,
    requestHeadTimeoutMs: 1500,
    maxRequestHeadBytes: 1024,
  });
  // Every token character is allowed in a name.
  assert.equal(parseConfigText(withHttp(`{ header_name: "x!#$%&'*+-.^_\`|~9" }`), 't').listeners[0]?.http?.headerName, "x!#$%&'*+-.^_`|~9");
  assert.equal(parseConfigText(withHttp('{ max_request_head_bytes: 1048576 }'), 't').listeners[0]?.http?.maxRequestHeadBytes, 1 << 20);
});

test('http: bad header names are refused (RFC 7230 token, 1..256 characters)', () => {
  for (const bad of ['""', '"x-dst host"', '"x-dst:"', '"x-dst\\t"', '"x(dst)"', '"x/dst"', '"x-dst\\u00e9"', `"${'x'.repeat(257)}"`]) {
    problemAt(problemsOf(withHttp(`{ header_name: ${bad} }`)), 'listeners[0].http.header_name', 'RFC 7230 token');
  }
  problemAt(problemsOf(withHttp('{ header_name: 42 }')), 'listeners[0].http.header_name', 'expected a header name as a string, got 42');
  assert.equal(parseConfigText(withHttp(`{ header_name: "${'x'.repeat(256)}" }`), 't').listeners[0]?.http?.headerName.length, 256);
});

test('http: each bad value and unknown key is reported at its path, all at once', () => {
  const problems = problemsOf(
    withHttp('{ trusted_sources: ["10.0.0.0/8", "10.0.0.1/8", "example.com", 7], strip_header: "yes", connect: 1, request_head_timeout: 10, max_request_head_bytes: 1023, heder_name: x }'),
  );
  problemAt(problems, 'listeners[0].http.trusted_sources[1]', 'write "10.0.0.0/8" for the network');
  problemAt(problems, 'listeners[0].http.trusted_sources[2]', 'hostnames are not allowed');
  problemAt(problems, 'listeners[0].http.trusted_sources[3]', 'expected a CIDR string');
  problemAt(problems, 'listeners[0].http.strip_header', 'expected true or false');
  problemAt(problems, 'listeners[0].http.connect', 'expected true or false');
  problemAt(problems, 'listeners[0].http.request_head_timeout', 'a unit is required');
  problemAt(problems, 'listeners[0].http.max_request_head_bytes', 'from 1024 to 1048576');
  problemAt(problems, 'listeners[0].http.heder_name', 'did you mean "header_name"?');
  assert.equal(problems.filter((p) => p.path === 'listeners[0].http.trusted_sources[0]').length, 0);
  problemAt(problemsOf(withHttp('{ max_request_head_bytes: 1048577 }')), 'listeners[0].http.max_request_head_bytes', 'from 1024 to 1048576');
  problemAt(problemsOf(withHttp('{ max_request_head_bytes: 2000.5 }')), 'listeners[0].http.max_request_head_bytes', 'got 2000.5');
  problemAt(problemsOf(withHttp('{ request_head_timeout: 0s }')), 'listeners[0].http.request_head_timeout', 'greater than 0');
  problemAt(problemsOf(withHttp('{ trusted_sources: "10.0.0.0/8" }')), 'listeners[0].http.trusted_sources', 'expected a list');
  problemAt(problemsOf(withHttp('[]')), 'listeners[0].http', 'expected a mapping');
});

test('mode: only original_dst or http', () => {
  problemAt(problemsOf(`${PLAIN_LISTENER}    mode: socks\n`), 'listeners[0].mode', 'expected "original_dst" or "http", got "socks"');
});

test('an http block on an original_dst listener (explicit or by default) is refused at its path', () => {
  problemAt(problemsOf(`${PLAIN_LISTENER}    http: { connect: false }\n`), 'listeners[0].http', 'needs mode: http (this listener is original_dst');
  problemAt(problemsOf(`${PLAIN_LISTENER}    mode: original_dst\n    http: {}\n`), 'listeners[0].http', 'needs mode: http');
  // Reported alongside the listener's other problems, and for the right listener.
  const problems = problemsOf(`${HTTP_LISTENER}    http: {}\n  - name: egress\n    address: "0.0.0.0:15001"\n    backlog: 0\n    http: {}\n`);
  problemAt(problems, 'listeners[1].http', 'needs mode: http');
  problemAt(problems, 'listeners[1].backlog', '');
  assert.equal(problems.filter((p) => p.path === 'listeners[0].http').length, 0);
});

test('an http listener may also take PROXY protocol (its original destination) and its own policy', () => {
  const listener = parseConfigText(
    `${HTTP_LISTENER}    proxy_protocol: { trusted_sources: ["10.0.0.0/8"] }\n    policy: { default: deny }\n    http: { trusted_sources: ["10.1.0.0/16"] }\n`,
    't',
  ).listeners[0];
  assert.equal(listener?.proxyProtocol?.trustedSources[0]?.text, '10.0.0.0/8');
  assert.equal(listener?.policy?.defaultAction, 'deny');
  assert.equal(listener?.http?.trustedSources[0]?.text, '10.1.0.0/16');
});

test('cluster.http_pool: defaults 16 idle per host, 60s; values and bounds', () => {
  assert.deepEqual(parseConfigText(PLAIN_LISTENER, 't').cluster.httpPool, { maxIdlePerHost: 16, idleTimeoutMs: 60_000 });
  assert.deepEqual(parseConfigText(`${PLAIN_LISTENER}cluster: { http_pool: {} }\n`, 't').cluster.httpPool, { maxIdlePerHost: 16, idleTimeoutMs: 60_000 });
  assert.deepEqual(parseConfigText(`${PLAIN_LISTENER}cluster: { http_pool: { max_idle_per_host: 0, idle_timeout: 250ms } }\n`, 't').cluster.httpPool, {
    maxIdlePerHost: 0,
    idleTimeoutMs: 250,
  });
  const problems = problemsOf(`${PLAIN_LISTENER}cluster: { http_pool: { max_idle_per_host: -1, idle_timeout: 60, max_idle: 3 } }\n`);
  problemAt(problems, 'cluster.http_pool.max_idle_per_host', 'from 0 to 65536');
  problemAt(problems, 'cluster.http_pool.idle_timeout', 'a unit is required');
  problemAt(problems, 'cluster.http_pool.max_idle', 'unknown key "max_idle"');
  problemAt(problemsOf(`${PLAIN_LISTENER}cluster: { http_pool: { max_idle_per_host: 65537 } }\n`), 'cluster.http_pool.max_idle_per_host', 'from 0 to 65536');
});

test('warning: an http listener with empty trusted_sources honours the header from nobody', () => {
  const warned = configWarnings(parseConfigText(`${HTTP_LISTENER}  - name: gw2\n    address: "127.0.0.1:9002"\n    mode: http\n    http: { header_name: X-Dst }\n`, 't'));
  assert.deepEqual(warned.map((w) => w.path), ['listeners[0].http.trusted_sources', 'listeners[1].http.trusted_sources']);
  assert.ok(warned[0]?.message.includes('x-envoy-original-dst-host header is honoured from nobody'), warned[0]?.message);
  assert.ok(warned[1]?.message.includes('x-dst header'), warned[1]?.message);
  // CONNECT needs a trusted source too: with connect on (the default) the warning says it is refused.
  assert.ok(warned[0]?.message.includes('every CONNECT gets 403 connect_untrusted'), warned[0]?.message);
  const [noConnect] = configWarnings(parseConfigText(withHttp('{ trusted_sources: [], connect: false }'), 't'));
  assert.ok(noConnect !== undefined && !noConnect.message.includes('CONNECT'), noConnect?.message);
  assert.deepEqual(configWarnings(parseConfigText(withHttp('{ trusted_sources: ["10.0.0.0/8"] }'), 't')), []);
  assert.deepEqual(configWarnings(parseConfigText(PLAIN_LISTENER, 't')), []);
});
