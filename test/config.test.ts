// Config loading: good files parse to exact typed values; every bad input yields problems at the
// exact paths users will see, all of them at once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parseSocketAddress } from '../src/config/address';
import { defaultConfig } from '../src/config/default';
import { MAX_DURATION_MS, parseDuration } from '../src/config/duration';
import { ConfigError, formatProblems, loadConfigFile, MAX_CONFIG_BYTES, parseConfigText } from '../src/config/load';
import { problemAt, problemsOf } from './config-problems';
import { MAX_YAML_DEPTH } from '../src/config/yaml-document';
import type { SplicegateConfig } from '../src/config/types';
import { loadBinding } from '../src/native/binding';
import { ListenSockets } from '../src/proxy/listen-sockets';

const FIXTURES = join(__dirname, '..', '..', 'test', 'fixtures', 'configs');
const ONE_LISTENER = 'listeners:\n  - name: egress\n    address: "0.0.0.0:15001"\n';

function caught(run: () => unknown): ConfigError {
  try {
    run();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  return assert.fail('expected a ConfigError, but parsing succeeded');
}

/** A TCP port free on every IPv4 and IPv6 address at this moment (a dual-stack "::" bind). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ host: '::', port: 0, ipv6Only: false }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port from the kernel'))));
    });
  });
}

test('full config parses to the exact typed values', () => {
  const expected: SplicegateConfig = {
    workers: 4,
    admin: { address: { host: '::1', port: 9901, family: 6, text: '[::1]:9901' }, allowedHosts: ['localhost', 'gateway.example', '*'] },
    listeners: [
      {
        name: 'egress',
        address: { host: '0.0.0.0', port: 15001, family: 4, text: '0.0.0.0:15001' },
        mode: 'original_dst',
        protocol: 'tcp',
        transparent: false,
        backlog: 1024,
        policy: null,
        proxyProtocol: {
          trustedSources: [
            { family: 4, network: '10.0.0.0', prefix: 8, text: '10.0.0.0/8' },
            { family: 6, network: '2001:db8::', prefix: 32, text: '2001:db8::/32' },
            { family: 4, network: '192.0.2.7', prefix: 32, text: '192.0.2.7/32' },
          ],
          required: false,
          timeoutMs: 5000,
        },
      },
      {
        name: 'egress-v6',
        address: { host: '::', port: 15001, family: 6, text: '[::]:15001' },
        mode: 'original_dst',
        protocol: 'tcp',
        transparent: true,
        backlog: 4096,
        policy: {
          defaultAction: 'deny',
          denySpecial: false,
          rules: [{ name: 'v6-web', action: 'allow', cidrs: [{ family: 6, network: '2001:db8::', prefix: 32, text: '2001:db8::/32' }], ports: [{ first: 443, last: 443 }] }],
        },
        proxyProtocol: null,
      },
      {
        name: 'gateway',
        address: { host: '127.0.0.1', port: 9001, family: 4, text: '127.0.0.1:9001' },
        mode: 'http',
        protocol: 'tcp',
        transparent: false,
        backlog: 4096,
        policy: null,
        proxyProtocol: null,
        http: {
          headerName: 'x-original-dst',
          trustedSources: [{ family: 4, network: '10.0.0.0', prefix: 8, text: '10.0.0.0/8' }],
          stripHeader: false,
          connect: false,
          requestHeadTimeoutMs: 2500,
          maxRequestHeadBytes: 8192,
        },
      },
      {
        name: 'dns',
        address: { host: '0.0.0.0', port: 15001, family: 4, text: '0.0.0.0:15001' },
        mode: 'original_dst',
        protocol: 'udp',
        transparent: true,
        backlog: 4096,
        policy: null,
        proxyProtocol: null,
      },
    ],
    policy: {
      defaultAction: 'allow',
      denySpecial: true,
      rules: [
        { name: 'no-db', action: 'deny', cidrs: [{ family: 4, network: '10.0.5.0', prefix: 24, text: '10.0.5.0/24' }], ports: [{ first: 5432, last: 5432 }, { first: 6379, last: 6380 }] },
        {
          name: 'web',
          action: 'allow',
          cidrs: [
            { family: 4, network: '0.0.0.0', prefix: 0, text: '0.0.0.0/0' },
            { family: 6, network: '::', prefix: 0, text: '::/0' },
          ],
          ports: [{ first: 80, last: 80 }, { first: 443, last: 443 }],
        },
      ],
    },
    cluster: {
      connectTimeoutMs: 250,
      idleTimeoutMs: 3_600_000,
      cleanupIntervalMs: 60_000,
      upstreamMark: 0x100,
      maxHosts: 500,
      maxConnectionsPerHost: 64,
      maxPendingPerHost: 16,
      maxDownstreamConnections: 4000,
      upstreamPortOverride: 8443,
      preconnect: { ports: [80, 8080], perHost: 2, ttlMs: 1500 },
      sendProxyProtocol: 'v2',
      originalSource: false,
      httpPool: { maxIdlePerHost: 4, idleTimeoutMs: 30_000 },
      udpSessionTimeoutMs: 20_000,
      udpMaxSessionsPerWorker: 512,
    },
    drainTimeoutMs: 30_000,
    tuning: { relayMode: 'splice', pipeSize: 262_144, copyBufferSize: 32_768, driver: 'uv', recordLatency: false },
    accessLog: { path: 'stdout', format: 'json', sample: 0.5 },
  };
  assert.deepEqual(loadConfigFile(join(FIXTURES, 'good-full.yaml')), expected);
});

test('minimal config gets every default, "auto" workers = available CPUs', () => {
  const config = loadConfigFile(join(FIXTURES, 'good-minimal.yaml'));
  assert.equal(config.workers, Math.min(availableParallelism(), 256));
  assert.deepEqual(config.admin.address, { host: '127.0.0.1', port: 9901, family: 4, text: '127.0.0.1:9901' });
  assert.deepEqual(config.admin.allowedHosts, ['localhost']);
  assert.deepEqual(config.listeners[0], {
    name: 'egress',
    address: { host: '0.0.0.0', port: 15001, family: 4, text: '0.0.0.0:15001' },
    mode: 'original_dst',
    protocol: 'tcp',
    transparent: false,
    backlog: 4096,
    policy: null,
    proxyProtocol: null,
  });
  assert.deepEqual(config.policy, { defaultAction: 'allow', rules: [], denySpecial: true });
  assert.deepEqual(config.cluster, {
    connectTimeoutMs: 5000,
    idleTimeoutMs: 3_600_000,
    cleanupIntervalMs: 5000,
    upstreamMark: 0,
    maxHosts: 10_000,
    maxConnectionsPerHost: 0,
    maxPendingPerHost: 0,
    maxDownstreamConnections: 0,
    upstreamPortOverride: 0,
    preconnect: null,
    sendProxyProtocol: 'off',
    originalSource: false,
    httpPool: { maxIdlePerHost: 16, idleTimeoutMs: 60_000 },
    udpSessionTimeoutMs: 60_000,
    udpMaxSessionsPerWorker: 4096,
  });
  assert.equal(config.drainTimeoutMs, 10_000);
  assert.deepEqual(config.tuning, { relayMode: 'auto', pipeSize: 0, copyBufferSize: 16_384, driver: 'thread', recordLatency: true });
});

test('tuning values out of range are reported with their paths', () => {
  const problems = problemsOf(`${ONE_LISTENER}tuning: { relay_mode: fast, pipe_size: -1, copy_buffer_size: 10 }\n`);
  problemAt(problems, 'tuning.relay_mode', 'auto');
  problemAt(problems, 'tuning.pipe_size', 'byte count');
  problemAt(problems, 'tuning.copy_buffer_size', '1024');
});

test('an explicit workers: auto resolves to a number', () => {
  assert.equal(parseConfigText(`workers: auto\n${ONE_LISTENER}`, 't').workers, Math.min(availableParallelism(), 256));
  assert.equal(parseConfigText(`workers: 256\n${ONE_LISTENER}`, 't').workers, 256);
});

test('built-in default config: one original_dst listener on 0.0.0.0:15001, admin 127.0.0.1:9901', () => {
  const config = defaultConfig();
  assert.equal(config.listeners.length, 1);
  assert.equal(config.listeners[0]?.name, 'egress');
  assert.equal(config.listeners[0]?.address.text, '0.0.0.0:15001');
  assert.equal(config.listeners[0]?.mode, 'original_dst');
  assert.equal(config.admin.address.text, '127.0.0.1:9901');
  assert.equal(config.workers, Math.min(availableParallelism(), 256));
  // A fresh copy each time: a caller mutating it must not change the next one.
  config.listeners.pop();
  assert.equal(defaultConfig().listeners.length, 1);
});

test('durations: units convert to milliseconds', () => {
  const cases: Array<[string, number]> = [['250ms', 250], ['5s', 5000], ['1m', 60_000], ['1h', 3_600_000], ['1.5s', 1500], ['596h', 596 * 3_600_000]];
  for (const [text, ms] of cases) assert.deepEqual(parseDuration(text), { ok: true, value: ms }, text);
});

test('durations: bad ones are refused with a reason', () => {
  const cases: Array<[string, string]> = [
    ['5 parsecs', 'expected a duration with a unit'],
    ['5', 'bare number'],
    ['0s', 'greater than 0'],
    ['0.5ms', 'whole number of milliseconds'],
    ['1000h', String(MAX_DURATION_MS)],
    ['', 'expected a duration with a unit'],
    ['-5s', 'expected a duration with a unit'],
    ['5d', 'expected a duration with a unit'],
  ];
  for (const [text, part] of cases) {
    const result = parseDuration(text);
    assert.equal(result.ok, false, text);
    if (!result.ok) assert.ok(result.message.includes(part), `${text}: ${result.message}`);
  }
});

test('durations in a file: bare YAML number and bad unit are errors at their paths', () => {
  const problems = problemsOf(`${ONE_LISTENER}cluster:\n  connect_timeout: 5 parsecs\n  idle_timeout: 5000\ndrain_timeout: 0ms\n`);
  problemAt(problems, 'cluster.connect_timeout', '"5 parsecs"');
  problemAt(problems, 'cluster.idle_timeout', 'a unit is required');
  problemAt(problems, 'drain_timeout', 'greater than 0');
  assert.equal(problems.length, 3);
});

test('addresses: IPv4 and bracketed IPv6 parse; canonical text', () => {
  assert.deepEqual(parseSocketAddress('10.1.2.3:80'), { ok: true, value: { host: '10.1.2.3', port: 80, family: 4, text: '10.1.2.3:80' } });
  assert.deepEqual(parseSocketAddress('[::1]:65535'), { ok: true, value: { host: '::1', port: 65535, family: 6, text: '[::1]:65535' } });
  assert.deepEqual(parseSocketAddress('[2001:db8::7]:443'), { ok: true, value: { host: '2001:db8::7', port: 443, family: 6, text: '[2001:db8::7]:443' } });
});

test('addresses: hostnames, unbracketed IPv6, bad ports are refused', () => {
  const cases: Array<[string, string]> = [
    ['foo', 'missing ":port"'],
    ['localhost:80', 'hostnames are not allowed'],
    ['::1:80', 'must be in brackets'],
    ['[1.2.3.4]:80', 'only for IPv6'],
    ['1.2.3.4:0', 'port must be 1..65535'],
    ['1.2.3.4:70000', 'port must be 1..65535'],
    ['1.2.3.4:http', 'port must be a number'],
    ['256.1.1.1:80', 'not an IPv4 address'],
    ['[::1]80', 'expected "ip:port"'],
  ];
  for (const [text, part] of cases) {
    const result = parseSocketAddress(text);
    assert.equal(result.ok, false, text);
    if (!result.ok) assert.ok(result.message.includes(part) && result.message.includes(JSON.stringify(text)), `${text}: ${result.message}`);
  }
});

test('bad addresses in a file: exact message format at listeners[0].address, ports 0 and 70000', () => {
  const problems = problemsOf(
    'admin: { address: "127.0.0.1:0" }\nlisteners:\n  - name: a\n    address: foo\n  - name: b\n    address: "10.0.0.1:70000"\n',
  );
  const bad = problemAt(problems, 'listeners[0].address', 'expected "ip:port" or "[ipv6]:port", got "foo"');
  assert.equal(bad.line, 4);
  problemAt(problems, 'listeners[1].address', '70000');
  problemAt(problems, 'admin.address', 'port must be 1..65535, got 0');
  assert.equal(problems.length, 3);
});

test('a file with many mistakes reports every one of them', () => {
  const err = caught(() => loadConfigFile(join(FIXTURES, 'bad-many.yaml')));
  const paths = err.problems.map((p) => p.path).sort();
  assert.deepEqual(paths, [
    'admin.address',
    'cluster.connect_timeout',
    'cluster.idle_timeout',
    'listeners[0].address',
    'listeners[1].address',
    'listeners[1].bakclog',
    'workers',
  ]);
  problemAt(err.problems, 'workers', 'got 0');
  problemAt(err.problems, 'listeners[1].bakclog', 'did you mean "backlog"?');
  problemAt(err.problems, 'cluster.connect_timeout', '5 parsecs');
});

test('workers: 0, 257, 1.5, "x" and true are refused', () => {
  for (const value of ['0', '257', '1.5', 'x', 'true', '"4"']) {
    problemAt(problemsOf(`workers: ${value}\n${ONE_LISTENER}`), 'workers', 'expected "auto" or an integer from 1 to 256');
  }
});

test('unknown keys are errors at every level, each at its own path', () => {
  const problems = problemsOf(
    'wokers: 2\nadmin:\n  address: "127.0.0.1:9901"\n  port: 1\nlisteners:\n  - name: a\n    address: "0.0.0.0:1"\n    transparant: true\n    extra: 1\ncluster:\n  idle_timout: 1h\n',
  );
  problemAt(problems, 'wokers', 'did you mean "workers"?');
  problemAt(problems, 'admin.port', 'unknown key "port"');
  problemAt(problems, 'listeners[0].transparant', 'did you mean "transparent"?');
  problemAt(problems, 'listeners[0].extra', 'expected one of: name, address, mode, protocol, transparent, backlog, policy, proxy_protocol');
  const typo = problemAt(problems, 'cluster.idle_timout', 'did you mean "idle_timeout"?');
  assert.equal(typo.line, 11);
  assert.equal(problems.length, 5);
});

test('YAML syntax errors are reported with line and column', () => {
  const err = caught(() => loadConfigFile(join(FIXTURES, 'bad-syntax.yaml')));
  assert.equal(err.problems.length, 1);
  const [problem] = err.problems;
  assert.equal(problem?.path, '(root)');
  assert.ok(problem?.message.startsWith('YAML syntax error'), problem?.message);
  assert.equal(problem?.line, 5);
  assert.equal(problem?.column, 1);
  assert.match(formatProblems(err), /bad-syntax\.yaml: \(root\): YAML syntax error: .* \(line 5, column 1\)$/);
});

test('a key given twice in YAML is an error, not "last one wins"', () => {
  const problems = problemsOf(`workers: 2\nworkers: 3\n${ONE_LISTENER}`);
  problemAt(problems, '(root)', 'unique');
});

test('duplicate listener names and addresses (also spelled differently) are errors', () => {
  const err = caught(() => loadConfigFile(join(FIXTURES, 'bad-duplicates.yaml')));
  problemAt(err.problems, 'listeners[1].name', 'duplicate listener name "egress"');
  problemAt(err.problems, 'listeners[1].address', 'duplicate listener address');
  assert.equal(err.problems.length, 2);
});

test('duplicate address is reported even when the listener has other problems', () => {
  // A type error (not just a range error) makes zod skip refinements unless told otherwise.
  const problems = problemsOf('listeners:\n  - name: a\n    address: "0.0.0.0:80"\n  - name: b\n    address: "0.0.0.0:80"\n    backlog: "x"\n');
  problemAt(problems, 'listeners[1].backlog', 'expected an integer from 1 to 65535, got "x"');
  problemAt(problems, 'listeners[1].address', 'also used by listeners[0] "a"');
});

/** Two listeners, "a" then "b", at the given addresses. */
function twoListeners(a: string, b: string): string {
  return `listeners:\n  - { name: a, address: "${a}" }\n  - { name: b, address: "${b}" }\n`;
}

// Listeners are not SO_REUSEPORT: a wildcard beside a specific address of its family on one port
// fails at bind, in either order. IPv6 listeners are IPv6-only, so the families never collide.
const OVERLAPPING_LISTENERS: Array<[string, string]> = [
  ['0.0.0.0:15001', '127.0.0.1:15001'],
  ['127.0.0.1:15001', '0.0.0.0:15001'],
  ['[::]:15001', '[::1]:15001'],
  ['[::1]:15001', '[::]:15001'],
  ['[::]:15001', '[fe80::1]:15001'],
  ['[0:0::0]:15001', '[fd00::1]:15001'],
];
const SEPARATE_LISTENERS: Array<[string, string]> = [
  ['0.0.0.0:15001', '[::]:15001'],
  ['127.0.0.1:15001', '[::]:15001'],
  ['[::1]:15001', '0.0.0.0:15001'],
  ['127.0.0.1:15001', '127.0.0.2:15001'],
  ['[::1]:15001', '[fd00::1]:15001'],
  ['0.0.0.0:15001', '0.0.0.0:15002'],
  ['[::]:15001', '[::1]:15002'],
];

test('listeners whose addresses overlap on one port are errors at the second listener', () => {
  for (const [a, b] of OVERLAPPING_LISTENERS) {
    const problems = problemsOf(twoListeners(a, b));
    const problem = problemAt(problems, 'listeners[1].address', 'overlaps listeners[0] "a"');
    assert.ok(problem.message.includes('port 15001'), `${a} then ${b}: ${problem.message}`);
    assert.equal(problems.length, 1, `${a} then ${b}: ${JSON.stringify(problems)}`);
  }
  for (const [a, b] of SEPARATE_LISTENERS) {
    assert.doesNotThrow(() => parseConfigText(twoListeners(a, b), 'test.yaml'), `${a} beside ${b}`);
  }
  // Reported once, at the listener that comes after the one it overlaps.
  const three = `${twoListeners('127.0.0.1:15001', '127.0.0.2:15001')}  - { name: c, address: "0.0.0.0:15001" }\n`;
  const problems = problemsOf(three);
  problemAt(problems, 'listeners[2].address', 'overlaps listeners[0] "a" on 127.0.0.1:15001');
  assert.equal(problems.length, 1, JSON.stringify(problems));
});

test('validate = run for listener addresses: what validate accepts binds, what it refuses fails to bind', async () => {
  // Real binds through run's own path (ListenSockets.open: every listener or none), loopback and
  // wildcard addresses only, on a port that was free on both families just before. Link-local and
  // unassigned addresses cannot be bound here, so those cases are left to the test above.
  const binding = loadBinding();
  const cases = [...OVERLAPPING_LISTENERS, ...SEPARATE_LISTENERS].filter(([a, b]) => !/fe80|fd00|127\.0\.0\.2/.test(a + b));
  assert.ok(cases.length >= 8);
  for (const [a0, b0] of cases) {
    const port1 = await freePort();
    let port2 = await freePort();
    while (port2 === port1) port2 = await freePort();
    const [a, b] = [a0, b0].map((x) => x.replace(/:15001$/, `:${port1}`).replace(/:15002$/, `:${port2}`)) as [string, string];
    let accepted: SplicegateConfig | undefined;
    try {
      accepted = parseConfigText(twoListeners(a, b), 'test.yaml');
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
    }
    // A refused pair is bound as two one-listener configs, each valid on its own.
    const listeners = accepted?.listeners ?? [a, b].map((x, k) => parseConfigText(`listeners:\n  - { name: l${k}, address: "${x}" }\n`, 't').listeners[0]!);
    let bindError: unknown;
    try {
      ListenSockets.open(binding, listeners).close();
    } catch (err) {
      bindError = err;
    }
    if (accepted) assert.equal(bindError, undefined, `validate accepted ${a} beside ${b}, but run could not bind them: ${String(bindError)}`);
    else assert.equal((bindError as NodeJS.ErrnoException | undefined)?.code, 'EADDRINUSE', `validate refused ${a} beside ${b}, but they bound: ${String(bindError)}`);
  }
});

test('admin.allowed_hosts takes host names and "*"; IP addresses and other shapes are refused by name', () => {
  assert.deepEqual(parseConfigText(`admin: { allowed_hosts: [] }\n${ONE_LISTENER}`, 't').admin.allowedHosts, []);
  assert.deepEqual(parseConfigText(`admin: { allowed_hosts: ["GW-1.corp.", "*"] }\n${ONE_LISTENER}`, 't').admin.allowedHosts, ['gw-1.corp', '*']);
  problemAt(problemsOf(`admin: { allowed_hosts: ["10.0.0.1"] }\n${ONE_LISTENER}`), 'admin.allowed_hosts[0]', 'always answered');
  problemAt(problemsOf(`admin: { allowed_hosts: ["::1"] }\n${ONE_LISTENER}`), 'admin.allowed_hosts[0]', 'always answered');
  problemAt(problemsOf(`admin: { allowed_hosts: ["ok", "gw.corp:9901"] }\n${ONE_LISTENER}`), 'admin.allowed_hosts[1]', 'expected a host name');
  problemAt(problemsOf(`admin: { allowed_hosts: ["-bad"] }\n${ONE_LISTENER}`), 'admin.allowed_hosts[0]', 'expected a host name');
  problemAt(problemsOf(`admin: { allowed_hosts: [7] }\n${ONE_LISTENER}`), 'admin.allowed_hosts[0]', 'expected a host name as a string');
  problemAt(problemsOf(`admin: { allowed_hosts: localhost }\n${ONE_LISTENER}`), 'admin.allowed_hosts', '');
});

test('admin may not share an address with a listener', () => {
  problemAt(problemsOf(`admin: { address: "0.0.0.0:15001" }\n${ONE_LISTENER}`), 'admin.address', 'listeners[0]');
});

test('addresses run cannot bind are refused: IPv6 zone indexes and IPv4-mapped IPv6 in any spelling', () => {
  const cases: Array<[string, string]> = [
    ['[fe80::1%eth0]:80', 'zone indexes'],
    ['[::ffff:1.2.3.4]:80', 'write "1.2.3.4:80"'],
    ['[::FFFF:1.2.3.4]:80', 'IPv4-mapped'],
    ['[0:0:0:0:0:ffff:102:304]:80', 'write "1.2.3.4:80"'],
  ];
  for (const [text, part] of cases) {
    const result = parseSocketAddress(text);
    assert.equal(result.ok, false, text);
    if (!result.ok) assert.ok(result.message.includes(part), `${text}: ${result.message}`);
  }
  problemAt(problemsOf('listeners:\n  - name: a\n    address: "[fe80::1%eth0]:15001"\n'), 'listeners[0].address', 'zone');
  problemAt(problemsOf(`admin: { address: "[::ffff:127.0.0.1]:9901" }\n${ONE_LISTENER}`), 'admin.address', 'IPv4-mapped');
  // Not mapped: a plain IPv6 address that merely ends in an IPv4 dotted quad still parses.
  assert.equal(parseSocketAddress('[64:ff9b::1.2.3.4]:80').ok, true);
});

test('admin overlapping a listener on the same port is an error when the binds would collide', () => {
  const listenerAt = (address: string): string => `listeners:\n  - name: egress\n    address: "${address}"\n`;
  const collide: Array<[string, string]> = [
    ['0.0.0.0:15001', '127.0.0.1:15001'],
    ['127.0.0.1:15001', '0.0.0.0:15001'],
    ['[::]:15001', '[::1]:15001'],
    ['[::1]:15001', '[::]:15001'],
    ['[0::0]:15001', '[fd00::1]:15001'],
    // The admin server binds "::" dual-stack, so it also takes the port on IPv4.
    ['[::]:15001', '127.0.0.1:15001'],
    ['[::]:15001', '0.0.0.0:15001'],
  ];
  for (const [admin, listener] of collide) {
    const problem = problemAt(problemsOf(`admin: { address: "${admin}" }\n${listenerAt(listener)}`), 'admin.address', 'listeners[0] "egress"');
    assert.ok(problem.message.includes('port 15001') || problem.message.includes('also the address'), `${admin} vs ${listener}: ${problem.message}`);
  }
  const fine: Array<[string, string]> = [
    ['127.0.0.1:15001', '127.0.0.2:15001'],
    ['0.0.0.0:9901', '0.0.0.0:15001'],
    // Listeners are IPv6-only: an IPv4 admin does not collide with an IPv6 wildcard listener.
    ['0.0.0.0:15001', '[::]:15001'],
    ['127.0.0.1:15001', '[::1]:15001'],
    ['[::1]:15001', '[fd00::1]:15001'],
  ];
  for (const [admin, listener] of fine) {
    assert.doesNotThrow(() => parseConfigText(`admin: { address: "${admin}" }\n${listenerAt(listener)}`, 'test.yaml'), `${admin} vs ${listener}`);
  }
});

test('upstream_port_override equal to a listener port is an error at its path', () => {
  const problems = problemsOf(`${ONE_LISTENER}cluster: { upstream_port_override: 15001 }\n`);
  const problem = problemAt(problems, 'cluster.upstream_port_override', 'listeners[0] "egress"');
  assert.match(problem.message, /loop/);
  assert.equal(problems.length, 1);
  assert.doesNotThrow(() => parseConfigText(`${ONE_LISTENER}cluster: { upstream_port_override: 15002 }\n`, 'test.yaml'));
});

test('a config file over 1 MiB is refused by its size, before it is parsed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'splicegate-config-'));
  try {
    const big = join(dir, 'big.yaml');
    // Valid YAML (a comment) so only the size can be the reason.
    writeFileSync(big, `${ONE_LISTENER}#${'x'.repeat(MAX_CONFIG_BYTES)}\n`);
    const err = caught(() => loadConfigFile(big));
    assert.equal(err.problems.length, 1);
    problemAt(err.problems, '(root)', `the limit is ${MAX_CONFIG_BYTES} bytes (1 MiB)`);
    const justUnder = join(dir, 'ok.yaml');
    writeFileSync(justUnder, `${ONE_LISTENER}#${'x'.repeat(MAX_CONFIG_BYTES - ONE_LISTENER.length - 2)}\n`);
    assert.equal(loadConfigFile(justUnder).listeners.length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('listeners: required, non-empty, entries need name and address', () => {
  problemAt(problemsOf('workers: 2\n'), 'listeners', 'required');
  problemAt(problemsOf('listeners: []\n'), 'listeners', 'at least one listener');
  const problems = problemsOf('listeners:\n  - mode: original_dst\n');
  problemAt(problems, 'listeners[0].name', 'required');
  problemAt(problems, 'listeners[0].address', 'expected "ip:port"');
});

test('field types and ranges: mode, transparent, backlog, upstream_mark, name', () => {
  const problems = problemsOf(
    'listeners:\n  - name: "has space"\n    address: "0.0.0.0:1"\n    mode: redirect\n    transparent: "yes"\n    backlog: 70000\ncluster:\n  upstream_mark: 0x100000000\n',
  );
  problemAt(problems, 'listeners[0].name', 'got "has space"');
  problemAt(problems, 'listeners[0].mode', 'expected "original_dst" or "http", got "redirect"');
  problemAt(problems, 'listeners[0].transparent', 'expected true or false');
  problemAt(problems, 'listeners[0].backlog', 'from 1 to 65535, got 70000');
  problemAt(problems, 'cluster.upstream_mark', 'integer from 0 to 4294967295');
  assert.equal(parseConfigText(`${ONE_LISTENER}cluster: { upstream_mark: 0xffffffff }\n`, 't').cluster.upstreamMark, 0xffffffff);
});

test('empty file and non-mapping root are root-level problems', () => {
  problemAt(problemsOf(''), '(root)', 'empty');
  problemAt(problemsOf('- 1\n'), '(root)', 'expected a mapping');
});

// A 40 KB file of brackets overflowed the stack in yaml's composer; V8 then aborted the process on
// the next parse (FATAL ERROR: RegExpCompiler Allocation failed), so a second bad reload killed a
// running proxy. Every shape of deep nesting is refused by its depth, as often as it comes.
test('YAML nested too deeply is refused at its line, every time, without a stack overflow', () => {
  const deep = [
    '['.repeat(20_000) + ']'.repeat(20_000),
    `listeners: ${'{a: '.repeat(20_000)}1${'}'.repeat(20_000)}\n`,
    `${'- '.repeat(20_000)}x\n`,
    Array.from({ length: 1000 }, (_, i) => `${' '.repeat(i)}a:`).join('\n') + ' 1\n',
  ];
  for (let round = 0; round < 3; round++) {
    for (const text of deep) {
      const problems = problemsOf(text);
      assert.equal(problems.length, 1, JSON.stringify(problems));
      const problem = problemAt(problems, '(root)', `nested more than ${MAX_YAML_DEPTH} levels deep`);
      assert.equal(typeof problem.line, 'number');
    }
  }
  // Just within the bound, the schema judges the value as usual.
  problemAt(problemsOf(`${ONE_LISTENER}workers: ${'['.repeat(90)}${']'.repeat(90)}\n`), 'workers', 'expected "auto" or an integer');
});

// yaml turned such a key into its text with a Node warning on stderr ("Keys with collection values
// will be stringified"), which then met the schema as an odd unknown key, or none where any key goes.
test('a list or mapping as a mapping key is refused at its line, with no Node warning', () => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.message);
  process.on('warning', onWarning);
  try {
    const cases: Array<[string, string, number]> = [
      [`${ONE_LISTENER}    ? [a, b]\n    : 1\n`, 'not a list', 4],
      ['listeners:\n  - {name: egress, address: "0.0.0.0:1", [1]: x}\n', 'not a list', 2],
      [`? {a: 1}\n: x\n${ONE_LISTENER}`, 'not a mapping', 1],
    ];
    for (const [text, message, line] of cases) {
      const problems = problemsOf(text);
      assert.equal(problems.length, 1, JSON.stringify(problems));
      const problem = problemAt(problems, '(root)', `a mapping key must be a plain value, ${message}`);
      assert.equal(problem.line, line, JSON.stringify(problem));
    }
  } finally {
    process.off('warning', onWarning);
  }
  assert.deepEqual(warnings, []);
});

test("values of YAML's own types are refused where they stand and named as what they are", () => {
  const named = (value: string): string => {
    const problems = problemsOf(`listeners:\n  - name: ${value}\n    address: "0.0.0.0:15001"\n`);
    assert.equal(problems.length, 1, JSON.stringify(problems));
    return problemAt(problems, 'listeners[0].name', "YAML's own types have no meaning in a config").message;
  };
  assert.match(named('!!binary aGVsbG8='), /got binary data \(!!binary\)/);
  assert.match(named('!!set {a, b}'), /got a set \(!!set\)/);
  assert.match(named('!!timestamp 2001-12-14'), /got a timestamp/);
});

test('a mapping written as !!omap, !!set or a timestamp is refused, never read as an empty mapping (a deny policy was the default allow)', () => {
  const refused = (section: string, value: string, shown: RegExp): void => {
    const problems = problemsOf(`${ONE_LISTENER}${section}: ${value}\n`);
    assert.equal(problems.length, 1, JSON.stringify(problems));
    assert.match(problemAt(problems, section, "YAML's own types have no meaning in a config").message, shown);
  };
  refused('policy', '!!omap [{default: deny}]', /an ordered mapping \(!!omap\)/);
  refused('cluster', '!!omap [{connect_timeout: 1s}, {bogus: 1}]', /an ordered mapping \(!!omap\)/);
  refused('cluster', '!!set {bogus_key}', /a set \(!!set\)/);
  refused('tuning', '!!set {a}', /a set \(!!set\)/);
  refused('admin', '!!timestamp 2001-12-14', /a timestamp/);
  refused('policy', '!!binary aGVsbG8=', /binary data \(!!binary\)/);
  // Deeper too, and inside a list.
  const problems = problemsOf(`listeners:\n  - name: a\n    address: "0.0.0.0:15001"\n    policy: !!omap [{default: deny}]\n`);
  problemAt(problems, 'listeners[0].policy', 'an ordered mapping (!!omap)');
});

test('a number beyond the safe integers is one problem, not two; a second YAML document is named in plain words', () => {
  const problems = problemsOf(`${ONE_LISTENER}cluster: {max_hosts: 123456789012345678901234567890, max_downstream_connections: 1e300}\n`);
  assert.deepEqual(
    problems.map((p) => p.path),
    ['cluster.max_hosts', 'cluster.max_downstream_connections'],
  );
  const twoDocs = problemsOf(`${ONE_LISTENER}---\na: 1\n`);
  assert.equal(twoDocs.length, 1, JSON.stringify(twoDocs));
  assert.match(problemAt(twoDocs, '(root)').message, /more than one YAML document .* a config is one document/);
  assert.doesNotMatch(twoDocs[0]?.message ?? '', /parseAllDocuments/);
});

test('YAML alias bombs are refused by the alias limit', () => {
  const laughs = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]'];
  for (let i = 1; i < 10; i++) laughs.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
  problemAt(problemsOf(`${laughs.join('\n')}\n${ONE_LISTENER}`), '(root)', 'YAML error');
});

test('an alias inside the value its own anchor names is refused at its position, not expanded until memory runs out', () => {
  // toJS makes such a value an object that contains itself, and walking it (the type check, the
  // schema) ran until V8 aborted the process: a reload with this file killed a running proxy.
  const cases: Array<[string, number, number]> = [
    ['c: &c [1, *c]\n', 1, 11],
    ['a:\n  b: &x {c: [1, {d: *x}]}\n', 2, 21],
  ];
  for (const [text, line, column] of cases) {
    const problem = problemAt(problemsOf(`${text}${ONE_LISTENER}`), '(root)', 'would contain itself');
    assert.equal(problem.line, line, text);
    assert.equal(problem.column, column, text);
  }
  // An alias of a value defined before it and outside it is no such problem (the unknown keys are).
  const plain = problemsOf(`x: &d {a: 1}\ny: [*d, *d]\n${ONE_LISTENER}`);
  assert.deepEqual(plain.map((p) => p.path), ['x', 'y']);
});

test('unreadable file: message names the path and the errno code', () => {
  const missing = join(FIXTURES, 'does-not-exist.yaml');
  const err = caught(() => loadConfigFile(missing));
  assert.equal(err.source, missing);
  assert.equal(formatProblems(err), `${missing}: (root): cannot read config file: ENOENT (no such file or directory)`);
  problemAt(caught(() => loadConfigFile(FIXTURES)).problems, '(root)', 'EISDIR');
});

// Opening a FIFO waits for a writer: a reload froze the main thread (admin, signals) until one came.
test('a FIFO as the config file is refused at once, not waited on', () => {
  const dir = mkdtempSync(join(tmpdir(), 'splicegate-fifo-'));
  try {
    const fifo = join(dir, 'config.yaml');
    execFileSync('mkfifo', [fifo]);
    // In a child: before the fix the open never returned, and a blocked thread runs no test timeout.
    const load = `try { require(${JSON.stringify(join(__dirname, '..', 'src', 'config', 'load.js'))}).loadConfigFile(${JSON.stringify(fifo)}) } catch (e) { console.log(e.message) }`;
    const r = spawnSync(process.execPath, ['-e', load], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.signal, null, 'the load did not return (killed by the 30 s liveness limit)');
    assert.equal(r.stdout.trim(), `${fifo}: (root): cannot read config file: it is a FIFO; expected a regular file`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('formatProblems: one "<source>: <path>: <message>" line per problem', () => {
  const err = caught(() => parseConfigText('workers: 0\nlisteners: []\n', 'my.yaml'));
  const lines = formatProblems(err).split('\n');
  assert.equal(lines.length, 2);
  assert.match(lines[0] ?? '', /^my\.yaml: workers: expected "auto" or an integer from 1 to 256, got 0 \(line 1, column 10\)$/);
  assert.match(lines[1] ?? '', /^my\.yaml: listeners: at least one listener is required/);
});

test('access_log: off when absent; sample defaults to 1, format to json; a relative path is made absolute', () => {
  assert.equal(parseConfigText(ONE_LISTENER, 'test.yaml').accessLog, null);
  const dir = mkdtempSync(join(tmpdir(), 'sg-accesslog-'));
  try {
    const config = parseConfigText(`${ONE_LISTENER}access_log: { path: ${join(dir, 'access.log')} }\n`, 'test.yaml');
    assert.deepEqual(config.accessLog, { path: join(dir, 'access.log'), format: 'json', sample: 1 });
    const relative = parseConfigText(`${ONE_LISTENER}access_log: { path: access.log, sample: 0 }\n`, 'test.yaml');
    assert.deepEqual(relative.accessLog, { path: join(process.cwd(), 'access.log'), format: 'json', sample: 0 });
    assert.equal(parseConfigText(`${ONE_LISTENER}access_log: { path: stdout }\n`, 'test.yaml').accessLog?.path, 'stdout');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('access_log problems are reported with their paths: sample outside [0,1], a missing directory, a directory, a FIFO, a format', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-accesslog-'));
  try {
    problemAt(problemsOf(`${ONE_LISTENER}access_log: { path: stdout, sample: 1.5 }\n`), 'access_log.sample', 'from 0 to 1');
    problemAt(problemsOf(`${ONE_LISTENER}access_log: { path: stdout, sample: -0.1 }\n`), 'access_log.sample', 'from 0 to 1');
    problemAt(problemsOf(`${ONE_LISTENER}access_log: { path: stdout, sample: "half" }\n`), 'access_log.sample', 'from 0 to 1');
    problemAt(problemsOf(`${ONE_LISTENER}access_log: { path: ${join(dir, 'nope', 'a.log')} }\n`), 'access_log.path', 'does not exist');
    problemAt(problemsOf(`${ONE_LISTENER}access_log: { path: ${dir} }\n`), 'access_log.path', 'is a directory');
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    problemAt(problemsOf(`${ONE_LISTENER}access_log: { path: ${join(dir, 'fifo')} }\n`), 'access_log.path', 'is a FIFO');
    problemAt(problemsOf(`${ONE_LISTENER}access_log: { path: stdout, format: xml }\n`), 'access_log.format', 'json');
    problemAt(problemsOf(`${ONE_LISTENER}access_log: { sample: 1 }\n`), 'access_log.path', 'required');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('protocol: udp needs transparent and mode original_dst, takes no PROXY header; tcp and udp may share an address', () => {
  const problems = problemsOf(
    [
      'listeners:',
      '  - { name: a, address: "0.0.0.0:53", protocol: udp }',
      '  - { name: b, address: "0.0.0.0:54", protocol: udp, transparent: true, mode: http }',
      '  - { name: c, address: "0.0.0.0:55", protocol: udp, transparent: true, proxy_protocol: { trusted_sources: ["10.0.0.0/8"] } }',
      '  - { name: d, address: "0.0.0.0:56", protocol: udp, transparent: true }',
      '  - { name: e, address: "127.0.0.1:56", protocol: udp, transparent: true }',
      '  - { name: f, address: "0.0.0.0:57", protocol: sctp }',
      'cluster: { udp_session_timeout: 0s, udp_max_sessions_per_worker: 0 }',
      '',
    ].join('\n'),
  );
  problemAt(problems, 'listeners[0].transparent', 'protocol: udp needs transparent: true');
  problemAt(problems, 'listeners[1].mode', 'protocol: udp needs mode: original_dst');
  problemAt(problems, 'listeners[2].proxy_protocol', 'protocol: udp cannot read a PROXY header');
  problemAt(problems, 'listeners[4].address', 'overlaps listeners[3]');
  problemAt(problems, 'listeners[5].protocol', '"tcp" or "udp"');
  problemAt(problems, 'cluster.udp_session_timeout');
  problemAt(problems, 'cluster.udp_max_sessions_per_worker', 'from 1 to');
  assert.equal(problems.length, 7, JSON.stringify(problems));

  // A TCP and a UDP socket on one address do not collide, and the admin server (TCP) may share a
  // UDP listener's port.
  const ok = parseConfigText(
    'admin: { address: "127.0.0.1:15001" }\nlisteners:\n  - { name: t, address: "0.0.0.0:15002", transparent: true }\n  - { name: u, address: "0.0.0.0:15002", protocol: udp, transparent: true }\n  - { name: v, address: "127.0.0.1:15001", protocol: udp, transparent: true }\n',
    'test.yaml',
  );
  assert.deepEqual(ok.listeners.map((l) => l.protocol), ['tcp', 'udp', 'udp']);
});

test('an Envoy bootstrap given as a splicegate config says which flag reads it', () => {
  const problems = problemsOf('static_resources:\n  listeners: []\n');
  problemAt(problems, '(root)', 'this looks like an Envoy bootstrap (static_resources): pass it with --envoy FILE instead of --config');
  // A splicegate config with a mistake gets no such hint.
  assert.ok(!problemsOf(`${ONE_LISTENER}bogus: 1\n`).some((p) => p.message.includes('Envoy')));
});
