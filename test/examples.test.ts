// Every config under examples/ is one a user copies as a starting point: it must pass
// `splicegate validate`, and examples/README.md must describe each of them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const EXAMPLES = join(ROOT, 'examples');

const configs = readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml')).sort();

test('examples/ holds the topology configs', () => {
  assert.ok(configs.length >= 3, `found ${configs.join(', ')}`);
});

// envoy-*.yaml are Envoy bootstraps (docs/ENVOY.md), validated through the converter. They are
// Envoy's configs as written, so they carry what the converter drops (stat_prefix) as warnings.
const isEnvoy = (file: string): boolean => file.startsWith('envoy-');

for (const file of configs) {
  test(`examples/${file} passes splicegate validate`, () => {
    const path = join(EXAMPLES, file);
    const run = spawnSync(process.execPath, [CLI, 'validate', isEnvoy(file) ? '--envoy' : '--config', path], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.status, 0, run.stderr);
    if (isEnvoy(file)) {
      for (const line of run.stderr.trimEnd().split('\n').filter((l) => l !== '')) assert.ok(line.startsWith(`${path}: warning: static_resources.`), line);
    } else {
      // A config meant to be copied must not carry a setting validate warns about.
      assert.equal(run.stderr, '', 'validate printed warnings');
    }
    assert.match(run.stdout, new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: OK \\(`));
  });
}

test('examples/README.md links every example config', () => {
  const readme = readFileSync(join(EXAMPLES, 'README.md'), 'utf8');
  for (const file of configs) assert.ok(readme.includes(`](${file})`), `${file} is not described in examples/README.md`);
});

// A gateway's PREROUTING rule without the addrtype match also catches the clients' connections to
// the gateway itself (ssh, the mode: http listener of http-gateway.yaml): splicegate then finds the
// gateway as their original destination and resets them (this host, or one of its listeners).
// `splicegate iptables install` leaves them out; the rules the examples show must too.
test('every PREROUTING interception rule in examples/ leaves out traffic to the gateway itself', () => {
  const files = ['README.md', ...configs];
  const rules = files.flatMap((file) =>
    readFileSync(join(EXAMPLES, file), 'utf8')
      .split('\n')
      .filter((line) => /-A PREROUTING\b/.test(line) && /-j (REDIRECT|TPROXY)\b/.test(line))
      .map((line) => ({ file, line })),
  );
  assert.ok(rules.length >= 3, `found ${rules.length} rules`);
  for (const { file, line } of rules) assert.match(line, /-m addrtype ! --dst-type LOCAL /, `${file}: ${line.trim()}`);
});
