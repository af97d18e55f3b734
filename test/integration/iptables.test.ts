// `splicegate iptables install|uninstall` in the lab's gateway namespace, for both topologies, both
// modes of the gateway and both families: the rules carry traffic to a running splicegate, a second
// install changes nothing, the sidecar never loops, and uninstall gives back exactly the rule set
// (iptables-save, ip6tables-save, ip rule, ip route show table all) that was there before.
//
// The namespace starts with a few rules of its own (an "existing firewall") in every table the
// installer touches: they must survive untouched, and with iptables-nft they also make the tables
// exist beforehand (the nft backend creates a table on first use and never removes it).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ADDR, ExecResult, Lab, ServerHandle } from '../lab/lab';
import { cliPath } from '../lab/paths';
import { Splicegate } from '../lab/splicegate';
import { connectMany } from '../lab/clients';
import { delta, withDiagnostics } from '../lab/harness';
import { probeFromGateway } from '../lab/same-host';
import { parseJsonObject } from '../lab/util';
import { dig, DNS_ANSWER_LINE, startDns } from '../lab/dns';
import { counter } from '../lab/splicegate';

const NOBODY = 65534;
const MARK = 0x100;

/** Rules a host might already have; none of them affects the test traffic. */
async function seedExistingRules(lab: Lab): Promise<void> {
  for (const family of [4, 6] as const) {
    for (const [table, chain] of [
      ['nat', 'PREROUTING'],
      ['nat', 'OUTPUT'],
      ['mangle', 'PREROUTING'],
      ['mangle', 'OUTPUT'],
    ] as const) {
      await lab.iptables('gw', family, ['-t', table, '-A', chain, '-p', 'udp', '--dport', '5353', '-j', 'RETURN']);
    }
  }
}

/** Everything install may change, without counters and timestamps. */
async function snapshot(lab: Lab): Promise<string> {
  const parts: string[] = [];
  for (const [cmd, args] of [
    ['iptables-save', []],
    ['ip6tables-save', []],
    ['ip', ['-4', 'rule', 'show']],
    ['ip', ['-6', 'rule', 'show']],
    ['ip', ['-4', 'route', 'show', 'table', 'all']],
    ['ip', ['-6', 'route', 'show', 'table', 'all']],
  ] as const) {
    const out = await lab.execOk('gw', cmd, [...args]);
    const clean = out
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .map((l) => l.replace(/\[\d+:\d+\]/g, '[-]'))
      .join('\n');
    parts.push(`== ${cmd} ${args.join(' ')}\n${clean}`);
  }
  return parts.join('\n');
}

function cli(lab: Lab, args: string[]): Promise<ExecResult> {
  return lab.exec('gw', process.execPath, [cliPath, 'iptables', ...args]);
}

async function cliOk(lab: Lab, args: string[]): Promise<string> {
  const r = await cli(lab, args);
  assert.equal(r.code, 0, `splicegate iptables ${args.join(' ')}: exit ${r.code}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Install, check a second install changes nothing, and return the installed state. */
async function installTwice(lab: Lab, args: string[]): Promise<string> {
  await cliOk(lab, ['install', ...args]);
  const once = await snapshot(lab);
  await cliOk(lab, ['install', ...args]);
  assert.equal(await snapshot(lab), once, 'a second install changed the rules');
  return once;
}

describe('iptables install: gateway, redirect, IPv4 and IPv6', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let pristine: string;
  const args = ['--topology', 'gateway', '--port', '15001', '--ipv6', '--interface', 'cli0', '--dports', '8080'];

  before(async () => {
    lab = await Lab.create({ name: 'iptgw' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'A']);
    await lab.startServer('identity', ['--listen', '[fd00:2::2]:8080', '--id', 'A6']);
    // A server on the gateway itself, on a caught port: connections to it are not egress.
    await lab.startServer('identity', ['--listen', `${ADDR.gwCli4}:8080`, '--id', 'GW'], { ns: 'gw' });
    await lab.startServer('identity', ['--listen', `[${ADDR.gwCli6}]:8080`, '--id', 'GW6'], { ns: 'gw' });
    await seedExistingRules(lab);
    // Nothing from the client is plainly forwarded: a connection that arrives went through splicegate.
    for (const family of [4, 6] as const) await lab.iptables('gw', family, ['-A', 'FORWARD', '-i', 'cli0', '-p', 'tcp', '-j', 'DROP']);
    pristine = await snapshot(lab);
    sg = await Splicegate.start(lab, {
      listeners: [
        { name: 'egress', address: '0.0.0.0:15001' },
        { name: 'egress6', address: '[::]:15001' },
      ],
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('install (twice) relays both families; uninstall restores the rules exactly', { timeout: 90000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const installed = await installTwice(lab, args);
      assert.match(installed, /-A PREROUTING -p tcp -j SPLICEGATE-PREROUTING/);
      assert.match(installed, /-A SPLICEGATE-PREROUTING -i cli0 -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15001/);
      // Addressed to the gateway itself (on the caught interface and port): served there directly.
      const local0 = await sg.stats();
      const [l4, l6] = await Promise.all([
        connectMany(lab, { target: `${ADDR.gwCli4}:8080`, n: 3, expectId: 'GW' }),
        connectMany(lab, { target: `[${ADDR.gwCli6}]:8080`, n: 3, expectId: 'GW6' }),
      ]);
      assert.equal(l4.ok, 3, JSON.stringify(l4));
      assert.equal(l6.ok, 3, JSON.stringify(l6));
      assert.equal(delta(await sg.stats(), local0, 'downstream_cx_total'), 0, 'a connection to the gateway itself went through splicegate');
      const s0 = await sg.stats();
      const [r4, r6] = await Promise.all([
        connectMany(lab, { target: '10.10.2.2:8080', n: 5, expectId: 'A' }),
        connectMany(lab, { target: '[fd00:2::2]:8080', n: 5, expectId: 'A6' }),
      ]);
      assert.equal(r4.ok, 5, JSON.stringify(r4));
      assert.equal(r6.ok, 5, JSON.stringify(r6));
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_total') >= 10, 5000, 'ten relayed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 10);
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
      await cliOk(lab, ['uninstall', '--ipv6']);
      assert.equal(await snapshot(lab), pristine);
    }),
  );
});

describe('iptables install: gateway, tproxy, IPv4 and IPv6', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let pristine: string;
  const args = ['--mode', 'tproxy', '--port', '15002', '--ipv6', '--interface', 'cli0', '--dports', '8080,9090'];
  // UDP (a protocol: udp listener on the same port) in its own chain, sharing the ip rule and route.
  const udpArgs = ['--mode', 'tproxy', '--protocol', 'udp', '--port', '15002', '--ipv6', '--interface', 'cli0', '--dports', '53'];

  before(async () => {
    lab = await Lab.create({ name: 'ipttp' });
    await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'T']);
    await lab.startServer('identity', ['--listen', '[fd00:2::2]:9090', '--id', 'T6']);
    await startDns(lab, ['10.10.2.2', 'fd00:2::2']);
    await seedExistingRules(lab);
    for (const family of [4, 6] as const) {
      await lab.iptables('gw', family, ['-A', 'FORWARD', '-i', 'cli0', '-p', 'tcp', '-j', 'DROP']);
      await lab.iptables('gw', family, ['-A', 'FORWARD', '-i', 'cli0', '-p', 'udp', '-j', 'DROP']);
    }
    pristine = await snapshot(lab);
    sg = await Splicegate.start(lab, {
      listeners: [
        { name: 'tproxy', address: '0.0.0.0:15002', transparent: true },
        { name: 'tproxy6', address: '[::]:15002', transparent: true },
        { name: 'udp', address: '0.0.0.0:15002', protocol: 'udp', transparent: true },
        { name: 'udp6', address: '[::]:15002', protocol: 'udp', transparent: true },
      ],
    });
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('install (twice) adds the rule and route and relays; uninstall restores rules, ip rules and routes', { timeout: 90000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const installed = await installTwice(lab, args);
      assert.match(installed, /-A SPLICEGATE-PREROUTING -i cli0 -p tcp -m multiport --dports 8080,9090 -j TPROXY --on-port 15002/);
      assert.match(installed, /from all fwmark 0x1\/0x1 lookup 100/);
      assert.match(installed, /local default dev lo table 100/);
      const s0 = await sg.stats();
      const [r4, r6] = await Promise.all([
        connectMany(lab, { target: '10.10.2.2:8080', n: 5, expectId: 'T', expectLocal: '10.10.2.2:8080' }),
        connectMany(lab, { target: '[fd00:2::2]:9090', n: 5, expectId: 'T6', expectLocal: '[fd00:2::2]:9090' }),
      ]);
      assert.equal(r4.ok, 5, JSON.stringify(r4));
      assert.equal(r6.ok, 5, JSON.stringify(r6));
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_total') >= 10, 5000, 'ten relayed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 10);
      assert.equal(delta(s1, s0, 'no_original_dst'), 0);
      // --protocol udp beside it: DNS over both families through the proxy, answered from the server.
      const both = await installTwice(lab, udpArgs);
      assert.match(both, /-A SPLICEGATE-UDP -i cli0 -p udp -m udp --dport 53 -j TPROXY --on-port 15002/);
      assert.match(both, /-A SPLICEGATE-PREROUTING -i cli0 -p tcp/, 'the TCP rules stay');
      for (const server of ['10.10.2.2', 'fd00:2::2']) {
        const r = await dig(lab, server);
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, DNS_ANSWER_LINE, r.out);
        assert.doesNotMatch(r.out, /reply from unexpected source/, r.out);
      }
      const s2 = await sg.stats();
      assert.equal(counter(s2, 'udp_datagrams_out') - counter(s1, 'udp_datagrams_out'), 2);
      await cliOk(lab, ['uninstall', '--ipv6', '--mode', 'tproxy']);
      assert.equal(await snapshot(lab), pristine);
    }),
  );
});

describe('iptables install: sidecar, redirect, IPv4 and IPv6', () => {
  let lab: Lab;
  let sg: Splicegate | undefined;
  let server: ServerHandle;
  let pristine: string;
  let configPath: string;

  before(async () => {
    lab = await Lab.create({ name: 'iptside' });
    server = await lab.startServer('identity', ['--listen', '10.10.2.2:8080', '--id', 'S']);
    await lab.startServer('identity', ['--listen', '[fd00:2::2]:8080', '--id', 'S6']);
    await seedExistingRules(lab);
    pristine = await snapshot(lab);
    sg = await Splicegate.start(lab, {
      listeners: [
        { name: 'sidecar', address: '0.0.0.0:15001' },
        { name: 'sidecar6', address: '[::]:15001' },
      ],
      cluster: { upstream_mark: MARK },
    });
    // The installer reads the port and the mark from the same config file splicegate runs with.
    configPath = path.join(lab.tmpDir(), 'iptables-sidecar.yaml');
    fs.writeFileSync(configPath, sg.configText);
  });

  after(async () => {
    await sg?.dispose();
    await lab?.destroy();
  });

  it('--config: local connects of both families go through splicegate and never loop', { timeout: 90000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      const installed = await installTwice(lab, ['--topology', 'sidecar', '--config', configPath, '--ipv6', '--dports', '8080']);
      assert.match(installed, /-A SPLICEGATE-OUTPUT -m mark --mark 0x100 -j RETURN/);
      for (const [target, id] of [
        ['10.10.2.2:8080', 'S'],
        ['[fd00:2::2]:8080', 'S6'],
      ] as const) {
        const s0 = await sg.stats();
        const p = await probeFromGateway(lab, { target, waitMs: 1500 });
        assert.equal(parseJsonObject(p.firstLine ?? '')?.['id'], id, JSON.stringify(p));
        const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_total') >= 1 && s.downstream_cx_active === 0, 5000, `${target} relayed`);
        assert.equal(delta(s1, s0, 'downstream_cx_total'), 1, target);
        assert.equal(delta(s1, s0, 'upstream_cx_total'), 1, target);
        assert.equal(delta(s1, s0, 'loop_rejected'), 0, target);
      }
    }),
  );

  it("the seed article's rule: only one user's port-80-style connects are redirected", { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      // Re-installing with other flags replaces the chain's rules (flush and refill).
      await installTwice(lab, ['--topology', 'sidecar', '--port', '15001', '--dports', '8080', '--only-uid', String(NOBODY), '--exclude-mark', '0x100']);
      const s0 = await sg.stats();
      const p = await probeFromGateway(lab, { target: '10.10.2.2:8080', uid: NOBODY, waitMs: 1500 });
      assert.equal(parseJsonObject(p.firstLine ?? '')?.['id'], 'S', JSON.stringify(p));
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_total') >= 1, 5000, 'relayed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 1);
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
      const seen = server.proc.eventsNamed('conn').length;
      const direct = await probeFromGateway(lab, { target: '10.10.2.2:8080', waitMs: 1500 });
      assert.equal(parseJsonObject(direct.firstLine ?? '')?.['id'], 'S', JSON.stringify(direct));
      await server.proc.waitForEvents((e) => e['event'] === 'conn', seen + 1, 3000, 'direct conn');
      assert.equal(delta(await sg.stats(), s1, 'downstream_cx_total'), 0, 'root went direct');
    }),
  );

  it("--exclude-uid alone: splicegate's user (root here) is excluded, other users are relayed, no loop", { timeout: 60000 }, () =>
    withDiagnostics(lab, sg, async () => {
      if (!sg) throw new Error('no splicegate');
      // No mark rule this time: only the owner match keeps splicegate's own connects out.
      const installed = await installTwice(lab, ['--topology', 'sidecar', '--port', '15001', '--dports', '8080', '--exclude-uid', '0']);
      // (IPv4 only: the IPv6 chain from the first test keeps its rules until uninstall --ipv6.)
      const v4 = installed.slice(0, installed.indexOf('== ip6tables-save'));
      assert.doesNotMatch(v4, /--mark/);
      assert.match(installed, /-A SPLICEGATE-OUTPUT -m owner --uid-owner 0 -j RETURN/);
      const s0 = await sg.stats();
      const p = await probeFromGateway(lab, { target: '10.10.2.2:8080', uid: NOBODY, waitMs: 1500 });
      assert.equal(parseJsonObject(p.firstLine ?? '')?.['id'], 'S', JSON.stringify(p));
      const s1 = await sg.waitStats((s) => delta(s, s0, 'upstream_cx_total') >= 1 && s.downstream_cx_active === 0, 5000, 'relayed');
      assert.equal(delta(s1, s0, 'downstream_cx_total'), 1);
      assert.equal(delta(s1, s0, 'loop_rejected'), 0);
    }),
  );

  it('uninstall restores the rules exactly', { timeout: 30000 }, () =>
    withDiagnostics(lab, sg, async () => {
      await cliOk(lab, ['uninstall', '--ipv6']);
      assert.equal(await snapshot(lab), pristine);
    }),
  );
});

describe('iptables install: failures', () => {
  let lab: Lab;
  let pristine: string;

  before(async () => {
    lab = await Lab.create({ name: 'iptfail' });
    await seedExistingRules(lab);
    pristine = await snapshot(lab);
  });

  after(async () => {
    await lab?.destroy();
  });

  it('a failing command exits 1 naming the command and its stderr', { timeout: 30000 }, async () => {
    // A user name that does not exist: iptables rejects the owner match.
    const r = await cli(lab, ['install', '--topology', 'sidecar', '--port', '15001', '--exclude-uid', 'no-such-user-sg']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /command failed \(exit \d+\): iptables -w -t nat -A SPLICEGATE-OUTPUT -m owner --uid-owner no-such-user-sg -j RETURN/);
    assert.match(r.stderr, /no-such-user-sg/);
    assert.match(r.stderr, /'splicegate iptables uninstall' removes what was added/);
    const partial = await snapshot(lab);
    assert.doesNotMatch(partial, /-j SPLICEGATE-OUTPUT/, 'no jump into a half-filled chain');
  });

  it('without iptables in PATH it says so', { timeout: 30000 }, async () => {
    const r = await lab.exec('gw', 'env', ['PATH=/nonexistent', process.execPath, cliPath, 'iptables', 'install', '--port', '15001']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /iptables not found in PATH: install iptables/);
  });

  it('uninstall removes what the failed install added, and a second uninstall changes nothing', { timeout: 30000 }, async () => {
    await cliOk(lab, ['uninstall']);
    assert.equal(await snapshot(lab), pristine);
    await cliOk(lab, ['uninstall', '--ipv6', '--mode', 'tproxy']);
    assert.equal(await snapshot(lab), pristine);
  });
});
