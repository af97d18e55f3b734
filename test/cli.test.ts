// The `splicegate` bin, run as a real process: exit codes and what lands on stdout/stderr.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { formatSystemError } from '../src/config/syserr';

const CLI = join(__dirname, '..', 'src', 'cli.js');
const FIXTURES = join(__dirname, '..', '..', 'test', 'fixtures', 'configs');

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function splicegate(...args: string[]): Run {
  const env = { ...process.env };
  delete env['SPLICEGATE_DEBUG'];
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 20_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

test('validate: good file exits 0 with a one-line summary', () => {
  const file = join(FIXTURES, 'good-full.yaml');
  const run = splicegate('validate', '--config', file);
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stdout, `${file}: OK (4 listeners, 4 workers)\n`);
  assert.equal(run.stderr, '');
});

test('validate: an http listener with no trusted_sources is valid, with a warning on stderr', () => {
  const file = join(FIXTURES, 'good-http-untrusted.yaml');
  const run = splicegate('validate', '--config', file);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /: OK \(1 listener, /);
  assert.match(run.stderr, /^.*good-http-untrusted\.yaml: warning: listeners\[0\]\.http\.trusted_sources: empty: the x-envoy-original-dst-host header is honoured from nobody/);
  assert.equal(run.stderr.trimEnd().split('\n').length, 1, run.stderr);
});

test('validate: bad file exits 2 and lists every problem path on stderr', () => {
  const file = join(FIXTURES, 'bad-many.yaml');
  const run = splicegate('validate', '-c', file);
  assert.equal(run.status, 2);
  assert.equal(run.stdout, '');
  const lines = run.stderr.trimEnd().split('\n');
  const paths = ['workers', 'admin.address', 'listeners[0].address', 'listeners[1].address', 'listeners[1].bakclog', 'cluster.connect_timeout', 'cluster.idle_timeout'];
  assert.equal(lines.length, paths.length, run.stderr);
  for (const path of paths) {
    assert.ok(lines.some((line) => line.startsWith(`${file}: ${path}: `)), `no line for ${path} in:\n${run.stderr}`);
  }
});

test('validate: YAML syntax error exits 2 with line and column', () => {
  const run = splicegate('validate', '--config', join(FIXTURES, 'bad-syntax.yaml'));
  assert.equal(run.status, 2);
  assert.match(run.stderr, /YAML syntax error: .*\(line 5, column 1\)/);
});

test('validate: missing --config, unknown option and positional file are usage errors (2)', () => {
  const missing = splicegate('validate');
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /--config FILE/);
  assert.match(missing.stderr, /splicegate validate --help/);

  const noValue = splicegate('validate', '--config');
  assert.equal(noValue.status, 2);
  assert.match(noValue.stderr, /--config/);

  const unknown = splicegate('validate', '--confg', 'x.yaml');
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /--confg/);

  const positional = splicegate('validate', 'x.yaml');
  assert.equal(positional.status, 2);
  assert.match(positional.stderr, /pass the config file as --config FILE/);
});

test('validate refuses what run cannot bind: zone and IPv4-mapped addresses, admin overlapping a listener, override = listener port', () => {
  const dir = mkdtempSync(join(tmpdir(), 'splicegate-cli-'));
  try {
    const cases: Array<[string, RegExp]> = [
      ['listeners: [{ name: a, address: "[fe80::1%eth0]:15001" }]\n', /listeners\[0\]\.address: .*zone/],
      ['listeners: [{ name: a, address: "[::ffff:10.0.0.1]:15001" }]\n', /listeners\[0\]\.address: .*IPv4-mapped/],
      ['admin: { address: "0.0.0.0:15001" }\nlisteners: [{ name: a, address: "127.0.0.1:15001" }]\n', /admin\.address: 0\.0\.0\.0:15001 overlaps listeners\[0\] "a"/],
      ['admin: { address: "127.0.0.1:15001" }\nlisteners: [{ name: a, address: "0.0.0.0:15001" }]\n', /admin\.address: .*overlaps listeners\[0\]/],
      ['listeners: [{ name: a, address: "0.0.0.0:15001" }]\ncluster: { upstream_port_override: 15001 }\n', /cluster\.upstream_port_override: .*loop/],
    ];
    for (const [text, expected] of cases) {
      const file = join(dir, 'c.yaml');
      writeFileSync(file, text);
      const validate = splicegate('validate', '--config', file);
      assert.equal(validate.status, 2, `${text}\n${validate.stdout}${validate.stderr}`);
      assert.match(validate.stderr, expected);
    }
    const big = join(dir, 'big.yaml');
    writeFileSync(big, `listeners: [{ name: a, address: "0.0.0.0:15001" }]\n#${'x'.repeat(2 * 1024 * 1024)}\n`);
    const run = splicegate('validate', '--config', big);
    assert.equal(run.status, 2);
    assert.match(run.stderr, /big\.yaml: \(root\): config file is \d+ bytes; the limit is 1048576 bytes \(1 MiB\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unknown command exits 2 with a suggestion and a pointer to --help', () => {
  const run = splicegate('valdate');
  assert.equal(run.status, 2);
  assert.match(run.stderr, /unknown command 'valdate' \(did you mean 'validate'\?\)/);
  assert.match(run.stderr, /splicegate --help/);
  assert.equal(splicegate('__proto__').status, 2);
  assert.equal(splicegate().status, 2);
});

test('--help, help, run --help, validate --help exit 0 with useful text', () => {
  const top = splicegate('--help');
  assert.equal(top.status, 0);
  assert.match(top.stdout, /Usage: splicegate <command>/);
  assert.match(top.stdout, /\n {2}run +start the proxy/);
  assert.match(top.stdout, /\n {2}validate +check a config file/);
  assert.equal(splicegate('help').stdout, top.stdout);

  const run = splicegate('run', '--help');
  assert.equal(run.status, 0);
  assert.match(run.stdout, /-c, --config FILE/);
  assert.match(run.stdout, /--latency-log FILE/);
  assert.match(run.stdout, /0\.0\.0\.0:15001/);
  assert.match(run.stdout, /Examples:/);
  assert.equal(splicegate('help', 'run').stdout, run.stdout);

  const validate = splicegate('validate', '--help');
  assert.equal(validate.status, 0);
  assert.match(validate.stdout, /Usage: splicegate validate --config FILE/);
});

test('--version prints the package version', () => {
  const pkg: unknown = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));
  assert.ok(typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string');
  const run = splicegate('--version');
  assert.equal(run.status, 0);
  assert.equal(run.stdout, `splicegate ${pkg.version}\n`);
});

test('run with a missing config file exits 2 naming the file and errno', () => {
  const run = splicegate('run', '--config', 'missing.yaml');
  assert.equal(run.status, 2);
  assert.equal(run.stderr, 'missing.yaml: (root): cannot read config file: ENOENT (no such file or directory)\n');
});

test('run with an invalid config exits 2 before starting anything', () => {
  const file = join(FIXTURES, 'bad-duplicates.yaml');
  const run = splicegate('run', '--config', file);
  assert.equal(run.status, 2);
  assert.match(run.stderr, /listeners\[1\]\.address: duplicate listener address/);
});

test('run exits 1 on a real bind failure: a listener address not on this host (EADDRNOTAVAIL)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'splicegate-cli-'));
  try {
    const file = join(dir, 'c.yaml');
    // 192.0.2.1 (TEST-NET-1) is on no interface here; binding it sends nothing anywhere.
    writeFileSync(file, 'workers: 1\nadmin: { address: "127.0.0.1:39901" }\nlisteners: [{ name: egress, address: "192.0.2.1:15001" }]\n');
    const run = splicegate('run', '--config', file);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /\nsplicegate: listen egress 192\.0\.2\.1:15001: bind failed: EADDRNOTAVAIL \(/);
    assert.doesNotMatch(run.stderr, / ready /, 'never reported ready');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('system errors print as "<syscall> <addr>: bind failed: CODE (text)" (real EADDRINUSE)', async () => {
  const first = await listen(createServer(), 0);
  const address = first.address();
  assert.ok(address !== null && typeof address === 'object');
  try {
    const err = await listen(createServer(), address.port).then(
      (second) => {
        second.close();
        return assert.fail('second listen on the same port succeeded');
      },
      (e: unknown) => e,
    );
    // Use Node's own error fields: this is the shape runProxy's listen failures will have.
    assert.ok(err instanceof Error && 'code' in err && 'syscall' in err && 'address' in err && 'port' in err);
    assert.equal(
      formatSystemError({ code: String(err.code), syscall: String(err.syscall), address: String(err.address), port: Number(err.port) }),
      `listen 127.0.0.1:${address.port}: bind failed: EADDRINUSE (address already in use)`,
    );
  } finally {
    first.close();
  }
  assert.equal(formatSystemError({ code: 'ECONNREFUSED', syscall: 'connect', address: '::1', port: 80 }), 'connect [::1]:80: connect failed: ECONNREFUSED (connection refused)');
  // The admin endpoint's listen failure says what the address is for (run.ts adds the context).
  assert.equal(
    formatSystemError({ code: 'EADDRINUSE', syscall: 'listen', address: '127.0.0.1', port: 9901, context: 'admin' }),
    'listen admin 127.0.0.1:9901: bind failed: EADDRINUSE (address already in use)',
  );
});

test('native core errors (context instead of address) format the same way', () => {
  // The shape src/worker/messages.ts rebuilds from the C++ core's SysError.
  assert.equal(
    formatSystemError({ code: 'EADDRINUSE', syscall: 'bind', context: 'egress 0.0.0.0:15001' }),
    'listen egress 0.0.0.0:15001: bind failed: EADDRINUSE (address already in use)',
  );
  assert.equal(
    formatSystemError({ code: 'EPERM', syscall: 'setsockopt', context: 'SO_MARK for cluster.upstream_mark (needs CAP_NET_ADMIN)' }),
    'setsockopt SO_MARK for cluster.upstream_mark (needs CAP_NET_ADMIN): setsockopt failed: EPERM (operation not permitted)',
  );
});

// `report --log /missing` said only "open: open failed: ENOENT": which file?
test('file errors name the file', () => {
  assert.equal(formatSystemError({ code: 'ENOENT', syscall: 'open', path: '/nonexistent.hlog' }), 'open /nonexistent.hlog: open failed: ENOENT (no such file or directory)');
  const missing = join(tmpdir(), `splicegate-missing-${process.pid}.hlog`);
  const run = splicegate('report', '--log', missing);
  assert.equal(run.status, 1);
  assert.equal(run.stderr, `splicegate: open ${missing}: open failed: ENOENT (no such file or directory)\n`);
});

function listen(server: Server, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}
