// `splicegate iptables` without touching the machine: the exact commands `print` shows, the flag
// errors (exit 2), and the executor's decisions driven through a fake command runner.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandFailedError, executePlan, type CommandResult } from '../src/iptables/execute';
import { installPlan, uninstallPlan, type Argv } from '../src/iptables/plan';
import { resolveOptions } from '../src/iptables/options';

const CLI = join(__dirname, '..', 'src', 'cli.js');

function splicegate(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'iptables', ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("print: the seed article's sidecar rule as one invocation", () => {
  const r = splicegate('print', '--topology', 'sidecar', '--port', '9000', '--dports', '80', '--only-uid', 'sleeper', '--exclude-mark', '0x100');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(
    r.stdout,
    [
      'iptables -w -t nat -n -L SPLICEGATE-OUTPUT >/dev/null 2>&1 || iptables -w -t nat -N SPLICEGATE-OUTPUT',
      'iptables -w -t nat -F SPLICEGATE-OUTPUT',
      'iptables -w -t nat -A SPLICEGATE-OUTPUT -m mark --mark 0x100 -j RETURN',
      'iptables -w -t nat -A SPLICEGATE-OUTPUT -d 127.0.0.0/8 -j RETURN',
      'iptables -w -t nat -A SPLICEGATE-OUTPUT -p tcp --dport 80 -m owner --uid-owner sleeper -j REDIRECT --to-ports 9000',
      'iptables -w -t nat -C OUTPUT -p tcp -j SPLICEGATE-OUTPUT >/dev/null 2>&1 || iptables -w -t nat -A OUTPUT -p tcp -j SPLICEGATE-OUTPUT',
      '',
    ].join('\n'),
  );
  assert.equal(r.stderr, '');
});

test('print: tproxy gateway for both families adds the ip rule and local route per family', () => {
  const r = splicegate('print', '--mode', 'tproxy', '--port', '15002', '--ipv6', '--interface', 'eth1', '--dports', '80,443,8000-8100', '--exclude-mark', '256');
  assert.equal(r.status, 0, r.stderr);
  for (const [tool, fam, any] of [
    ['iptables', '4', '0.0.0.0/0'],
    ['ip6tables', '6', '::/0'],
  ] as const) {
    // Exclusions first: the proxy's own marked connects, then whatever is addressed to this host.
    assert.ok(
      r.stdout.includes(
        `${tool} -w -t mangle -A SPLICEGATE-PREROUTING -m mark --mark 0x100 -j RETURN\n${tool} -w -t mangle -A SPLICEGATE-PREROUTING -m addrtype --dst-type LOCAL -j RETURN\n${tool} -w -t mangle -A SPLICEGATE-PREROUTING -p tcp`,
      ),
      r.stdout,
    );
    assert.ok(
      r.stdout.includes(`${tool} -w -t mangle -A SPLICEGATE-PREROUTING -p tcp -i eth1 -m multiport --dports 80,443,8000:8100 -j TPROXY --on-port 15002 --tproxy-mark 0x1/0x1\n`),
      r.stdout,
    );
    assert.ok(r.stdout.includes(`[ -n "$(ip -${fam} rule show fwmark 0x1/0x1 lookup 100 2>/dev/null)" ] || ip -${fam} rule add fwmark 0x1/0x1 lookup 100\n`), r.stdout);
    assert.ok(r.stdout.includes(`ip -${fam} route replace local ${any} dev lo table 100\n`), r.stdout);
  }
  // The jump comes after the chain is filled, for each family.
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[7] ?? '', /^iptables .* -A PREROUTING -p tcp -j SPLICEGATE-PREROUTING$/);
  assert.match(lines[15] ?? '', /^ip6tables .* -A PREROUTING -p tcp -j SPLICEGATE-PREROUTING$/);
});

test('print --uninstall: removes every splicegate jump and chain, and the tproxy rule and route', () => {
  const r = splicegate('print', '--uninstall', '--mode', 'tproxy');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.includes('while iptables -w -t nat -C OUTPUT -p tcp -j SPLICEGATE-OUTPUT >/dev/null 2>&1; do iptables -w -t nat -D OUTPUT -p tcp -j SPLICEGATE-OUTPUT || break; done\n'));
  assert.ok(r.stdout.includes('if iptables -w -t mangle -n -L SPLICEGATE-PREROUTING >/dev/null 2>&1; then iptables -w -t mangle -F SPLICEGATE-PREROUTING; iptables -w -t mangle -X SPLICEGATE-PREROUTING; fi\n'));
  assert.ok(r.stdout.includes('ip -4 rule del fwmark 0x1/0x1 lookup 100'));
  assert.ok(r.stdout.includes('ip -4 route del local 0.0.0.0/0 dev lo table 100'));
  assert.ok(!r.stdout.includes('ip6tables'), 'IPv6 only with --ipv6');
});

test('print --config: port and excluded mark come from the config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-ipt-'));
  try {
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'listeners:\n  - name: a\n    address: "127.0.0.1:9000"\ncluster:\n  upstream_mark: 0x200\n');
    const r = splicegate('print', '--topology', 'sidecar', '--config', file);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.includes('-m mark --mark 0x200 -j RETURN'), r.stdout);
    assert.ok(r.stdout.includes('-p tcp -j REDIRECT --to-ports 9000'), r.stdout);
    // The config's only listener is IPv4: IPv6 connects would find nothing on the port.
    const v6 = splicegate('print', '--topology', 'sidecar', '--config', file, '--ipv6');
    assert.equal(v6.status, 2, v6.stderr);
    assert.match(v6.stderr, /the config has no IPv6 listener on port 9000/);
    // --port and --exclude-mark win over the config.
    const o = splicegate('print', '--topology', 'sidecar', '--config', file, '--port', '9100', '--exclude-mark', '0x10');
    assert.ok(o.stdout.includes('-m mark --mark 0x10 -j RETURN') && o.stdout.includes('--to-ports 9100'), o.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const BAD: Array<[string[], RegExp]> = [
  [['print'], /needs --port PORT/],
  [[], /needs an action/],
  [['frob', '--port', '1'], /unknown action 'frob'/],
  [['print', '--port', '0'], /--port expects a port 1-65535, got '0'/],
  [['print', '--port', '70000'], /--port expects a port/],
  [['print', '--port', '1', '--mode', 'nat'], /--mode must be redirect or tproxy/],
  [['print', '--port', '1', '--topology', 'host'], /--topology must be gateway or sidecar/],
  [['print', '--port', '1', '--topology', 'sidecar'], /sidecar install needs a loop exclusion/],
  [['print', '--port', '1', '--topology', 'sidecar', '--mode', 'tproxy', '--exclude-mark', '1'], /tproxy works with --topology gateway only/],
  [['print', '--port', '1', '--exclude-uid', 'proxy'], /apply to --topology sidecar only/],
  [['print', '--port', '1', '--dports', '80,abc'], /--dports expects ports or ranges/],
  [['print', '--port', '1', '--dports', '90-80'], /--dports expects/],
  [['print', '--port', '1', '--dports', '1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16'], /at most 15 ports/],
  [['print', '--port', '1', '--exclude-mark', '0xZZ'], /--exclude-mark expects a mark/],
  [['print', '--port', '1', '--interface', 'much-too-long-name0'], /--interface expects an interface name/],
  [['print', '--port', '1', '--topology', 'sidecar', '--exclude-uid', 'a b'], /--exclude-uid expects a uid or a user name/],
  [['print', '--port', '1', '--mode', 'tproxy', '--exclude-mark', '0x1'], /overlaps the excluded mark/],
  [['print', '--port', '1', '--mode', 'tproxy', '--route-table', '254'], /--route-table expects/],
  [['install', '--port', '1', '--uninstall'], /--uninstall only goes with print/],
  [['print', '--port', '1', '--bogus'], /Unknown option '--bogus'/],
];

for (const [args, message] of BAD) {
  test(`flag error exits 2: iptables ${args.join(' ')}`, () => {
    const r = splicegate(...args);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /Run 'splicegate iptables --help' for usage\./);
    assert.equal(r.stdout, '');
  });
}

// Without --dports the catch rule takes every port of --protocol: the help says so, not "TCP".
test('--protocol udp without --dports catches every UDP port; the help does not say "every TCP port"', () => {
  const r = splicegate('print', '--mode', 'tproxy', '--protocol', 'udp', '--port', '15001', '--interface', 'eth1');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^iptables -w -t mangle -A SPLICEGATE-UDP -p udp -i eth1 -j TPROXY --on-port 15001 --tproxy-mark 0x1\/0x1$/m);
  const help = splicegate('--help');
  assert.equal(help.status, 0, help.stderr);
  const line = help.stdout.split('\n').find((l) => l.includes('--dports'));
  assert.ok(line !== undefined, help.stdout);
  assert.doesNotMatch(line, /TCP/, line);
});

/** A fake machine: which probes hold, and every command run in order. */
function fakeRunner(holds: (argv: Argv) => CommandResult | undefined) {
  const ran: string[] = [];
  const run = async (argv: Argv): Promise<CommandResult> => {
    ran.push(argv.join(' '));
    return holds(argv) ?? { code: 0, stdout: '', stderr: '' };
  };
  return { ran, run };
}

test('executor: install creates a missing chain and jump, and skips them when present', async () => {
  const o = resolveOptions({ port: '15001' }, undefined);
  const missing = fakeRunner((argv) => (argv.includes('-L') || argv.includes('-C') ? { code: 1, stdout: '', stderr: 'No chain' } : undefined));
  await executePlan(installPlan(o), missing.run);
  assert.ok(missing.ran.includes('iptables -w -t nat -N SPLICEGATE-PREROUTING'));
  assert.ok(missing.ran.includes('iptables -w -t nat -A PREROUTING -p tcp -j SPLICEGATE-PREROUTING'));
  const present = fakeRunner(() => undefined);
  await executePlan(installPlan(o), present.run);
  assert.ok(!present.ran.some((c) => c.includes(' -N ') || c.includes('-A PREROUTING')), present.ran.join('\n'));
  assert.ok(present.ran.includes('iptables -w -t nat -F SPLICEGATE-PREROUTING'), 'the chain is refilled');
});

test('executor: uninstall deletes a jump as often as it is there', async () => {
  const o = resolveOptions({}, undefined, false);
  let copies = 2;
  const f = fakeRunner((argv) => {
    const line = argv.join(' ');
    if (line === 'iptables -w -t nat -C OUTPUT -p tcp -j SPLICEGATE-OUTPUT') return { code: copies > 0 ? 0 : 1, stdout: '', stderr: '' };
    if (line === 'iptables -w -t nat -D OUTPUT -p tcp -j SPLICEGATE-OUTPUT') copies -= 1;
    if (argv.includes('-C') || argv.includes('-L')) return { code: 1, stdout: '', stderr: '' };
    return undefined;
  });
  await executePlan(uninstallPlan(o), f.run);
  assert.equal(copies, 0);
  assert.equal(f.ran.filter((c) => c.includes('-D OUTPUT')).length, 2);
  assert.ok(!f.ran.some((c) => c.includes(' -X ')), 'no chain to remove');
});

test('executor: a failing command stops the plan with the command and its stderr', async () => {
  const o = resolveOptions({ port: '15001' }, undefined);
  const f = fakeRunner((argv) =>
    argv.includes('REDIRECT') ? { code: 2, stdout: '', stderr: "iptables v1.8.9: Couldn't load target `REDIRECT'" } : argv.includes('-C') ? { code: 1, stdout: '', stderr: '' } : undefined,
  );
  await assert.rejects(executePlan(installPlan(o), f.run), (err: unknown) => {
    assert.ok(err instanceof CommandFailedError);
    assert.match(err.message, /^command failed \(exit 2\): iptables -w -t nat -A SPLICEGATE-PREROUTING -p tcp -j REDIRECT --to-ports 15001\n {2}iptables v1.8.9: Couldn't load target `REDIRECT'$/);
    return true;
  });
  assert.ok(!f.ran.some((c) => c.includes('-A PREROUTING')), 'no jump into a half-filled chain');
});

test('print --protocol udp: tproxy for UDP in a chain of its own, the port from the UDP listener', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-ipt-'));
  try {
    const file = join(dir, 'c.yaml');
    // A TCP and a UDP transparent listener: --protocol picks which one the rules feed.
    writeFileSync(
      file,
      'listeners:\n  - { name: t, address: "0.0.0.0:15002", transparent: true }\n  - { name: u, address: "0.0.0.0:15053", protocol: udp, transparent: true }\ncluster:\n  upstream_mark: 0x100\n',
    );
    const r = splicegate('print', '--mode', 'tproxy', '--protocol', 'udp', '--config', file, '--interface', 'eth1', '--dports', '53,443');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      r.stdout,
      [
        'iptables -w -t mangle -n -L SPLICEGATE-UDP >/dev/null 2>&1 || iptables -w -t mangle -N SPLICEGATE-UDP',
        'iptables -w -t mangle -F SPLICEGATE-UDP',
        'iptables -w -t mangle -A SPLICEGATE-UDP -m mark --mark 0x100 -j RETURN',
        'iptables -w -t mangle -A SPLICEGATE-UDP -m addrtype --dst-type LOCAL -j RETURN',
        'iptables -w -t mangle -A SPLICEGATE-UDP -p udp -i eth1 -m multiport --dports 53,443 -j TPROXY --on-port 15053 --tproxy-mark 0x1/0x1',
        '[ -n "$(ip -4 rule show fwmark 0x1/0x1 lookup 100 2>/dev/null)" ] || ip -4 rule add fwmark 0x1/0x1 lookup 100',
        'ip -4 route replace local 0.0.0.0/0 dev lo table 100',
        'iptables -w -t mangle -C PREROUTING -p udp -j SPLICEGATE-UDP >/dev/null 2>&1 || iptables -w -t mangle -A PREROUTING -p udp -j SPLICEGATE-UDP',
        '',
      ].join('\n'),
    );
    const tcp = splicegate('print', '--mode', 'tproxy', '--config', file);
    assert.equal(tcp.status, 0, tcp.stderr);
    assert.ok(tcp.stdout.includes('-A SPLICEGATE-PREROUTING -p tcp -j TPROXY --on-port 15002 '), tcp.stdout);
    // uninstall removes the UDP chain and its jump too.
    const un = splicegate('print', '--uninstall', '--mode', 'tproxy');
    assert.ok(un.stdout.includes('while iptables -w -t mangle -C PREROUTING -p udp -j SPLICEGATE-UDP >/dev/null 2>&1; do iptables -w -t mangle -D PREROUTING -p udp -j SPLICEGATE-UDP || break; done\n'), un.stdout);
    assert.ok(un.stdout.includes('then iptables -w -t mangle -F SPLICEGATE-UDP; iptables -w -t mangle -X SPLICEGATE-UDP; fi\n'), un.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--protocol udp needs --mode tproxy; --protocol takes tcp or udp', () => {
  const redirect = splicegate('print', '--protocol', 'udp', '--port', '15053');
  assert.equal(redirect.status, 2);
  assert.match(redirect.stderr, /--protocol udp needs --mode tproxy/);
  const bad = splicegate('print', '--mode', 'tproxy', '--protocol', 'sctp', '--port', '15053');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--protocol must be tcp or udp, got 'sctp'/);
});
