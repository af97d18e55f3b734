// Smoke test of the lab itself (no splicegate): topology, forwarding, fixtures, rules, teardown.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ADDR, hostPort, Lab } from '../lab/lab';
import { connectMany, halfClose, HoldClient, probe, transfer } from '../lab/clients';
import { parseStats, STAT_NAMES } from '../lab/splicegate';

function netnsList(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

describe('lab', () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.create({ name: 'smoke' });
  });

  after(async () => {
    await lab.destroy();
  });

  it('creates three namespaces with a unique prefix', () => {
    const names = netnsList();
    for (const n of Object.values(lab.ns)) assert.ok(names.includes(n), `${n} missing from ${names.join(',')}`);
    assert.match(lab.prefix, new RegExp(`-${process.pid}-\\d+$`));
  });

  it('exec runs inside the namespace and reports exit codes', async () => {
    const r = await lab.exec('gw', 'ip', ['-o', 'addr', 'show']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /10\.10\.1\.1\/24/);
    assert.match(r.stdout, /10\.10\.2\.1\/24/);
    assert.match(r.stdout, /fd00:2::1\/64/);
    const f = await lab.exec('cli', 'bash', ['-c', 'exit 3']);
    assert.equal(f.code, 3);
    const fw = await lab.exec('gw', 'sysctl', ['-n', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']);
    assert.deepEqual(fw.stdout.trim().split('\n'), ['1', '1']);
  });

  it('raises nofile when asked', async () => {
    const r = await lab.exec('srv', 'bash', ['-c', 'ulimit -n'], { nofile: 20000 });
    assert.equal(r.stdout.trim(), '20000');
  });

  it('forwards v4 and v6 from client to server through the gateway (identity + echo)', async () => {
    await lab.addServerAddress('10.10.2.3');
    await lab.addServerAddress('fd00:2::3');
    const a = await lab.startServer('identity', ['--listen', hostPort(ADDR.server4, 8080), '--id', 'A']);
    const b = await lab.startServer('identity', ['--listen', '10.10.2.3:9090', '--id', 'B']);
    const c = await lab.startServer('identity', ['--listen', '[fd00:2::3]:8080', '--id', 'C']);
    assert.equal(a.address, '10.10.2.2:8080');
    assert.equal(c.address, '[fd00:2::3]:8080');
    const [ra, rb, rc] = await Promise.all([
      connectMany(lab, { target: '10.10.2.2:8080', n: 20, expectId: 'A', expectLocal: '10.10.2.2:8080' }),
      connectMany(lab, { target: '10.10.2.3:9090', n: 20, expectId: 'B', expectLocal: '10.10.2.3:9090' }),
      connectMany(lab, { target: '[fd00:2::3]:8080', n: 20, expectId: 'C', expectLocal: '[fd00:2::3]:8080' }),
    ]);
    for (const r of [ra, rb, rc]) assert.equal(r.ok, 20, JSON.stringify(r.errors) + lab.diagnostics());
    // Plain forwarding: the server sees the client's own address.
    assert.deepEqual(ra.remotes, { '10.10.1.2': 20 });
    assert.deepEqual(rc.remotes, { '[fd00:1::2]': 20 });
    await a.proc.waitForEvents((e) => e['event'] === 'conn' && e['remote'] !== undefined, 20, 5000, 'A conns');
    await b.proc.waitForEvents((e) => e['event'] === 'conn', 20, 5000, 'B conns');
    // A mismatch must be reported as a failure (the check can fail).
    const wrong = await connectMany(lab, { target: '10.10.2.2:8080', n: 3, expectId: 'B' });
    assert.equal(wrong.ok, 0);
    assert.equal(wrong.errors['MISMATCH'], 3);
  });

  it('transfers bulk data both ways and supports half-close through forwarding', async () => {
    const s = await lab.startServer('sink-source', ['--listen', '10.10.2.2:7000']);
    const r = await transfer(lab, { target: '10.10.2.2:7000', send: 8 * 1024 * 1024, recv: 4 * 1024 * 1024 });
    assert.equal(r.ok, true, JSON.stringify(r));
    const [done] = await s.proc.waitForEvents((e) => e['event'] === 'done', 1, 5000, 'sink-source done');
    assert.ok(done);
    assert.equal(done['recvSha256'], r.sentSha256);
    assert.equal(done['sentSha256'], r.recvSha256);
    assert.equal(r.recvBytes, 4 * 1024 * 1024);

    await lab.startServer('half-close', ['--listen', '10.10.2.2:7001', '--reply-bytes', '100000']);
    const h = await halfClose(lab, { target: '10.10.2.2:7001', send: 300000 });
    assert.equal(h.ok, true, JSON.stringify(h));
    assert.equal(h.server?.bytes, 300000);
    assert.equal(h.replyBytes, 100000);
  });

  it('probe reports refused and delayed servers', async () => {
    const refused = await probe(lab, { target: '10.10.2.2:7777', waitMs: 2000 });
    assert.equal(refused.connected, false);
    assert.equal(refused.connectError, 'ECONNREFUSED');
    await lab.startServer('delay', ['--listen', '10.10.2.2:7002', '--delay-ms', '400']);
    const d = await probe(lab, { target: '10.10.2.2:7002', waitMs: 3000 });
    assert.equal(d.connected, true);
    assert.equal(d.closeKind, 'timeout');
    assert.ok(d.firstLine?.includes('"id":"delay"'), JSON.stringify(d));
  });

  it('hold client and server keep connections open until released', async () => {
    const s = await lab.startServer('hold', ['--listen', '10.10.2.2:7003'], { nofile: 20000 });
    const h = new HoldClient(lab, { target: '10.10.2.2:7003', n: 300, nofile: 20000 });
    const held = await h.waitHeld(20000);
    assert.equal(held.stillOpen, 300);
    await s.proc.waitForEvents((e) => e['event'] === 'active' && e['active'] === 300, 1, 5000, 'server active=300');
    const rel = await h.release(10000);
    assert.equal(rel.droppedWhileHeld, 0);
    assert.equal(rel.closed, 300);
    await s.proc.waitForEvents((e) => e['event'] === 'active' && e['active'] === 0, 1, 5000, 'server active=0');
  });

  it('REDIRECT rules divert client traffic to a local port in the gateway (v4 and v6)', async () => {
    // A stand-in "proxy": an identity server in the gateway on the redirect port.
    await lab.startServer('identity', ['--listen', '0.0.0.0:15001', '--id', 'gw'], { ns: 'gw' });
    await lab.startServer('identity', ['--listen', '[::]:15006', '--id', 'gw6'], { ns: 'gw' });
    await lab.redirect({ dport: 8080, toPort: 15001, family: 4, daddr: '10.10.2.2' });
    await lab.redirect({ dport: [8080], toPort: 15006, family: 6 });
    const r = await connectMany(lab, { target: '10.10.2.2:8080', n: 5, expectId: 'gw', expectLocal: '10.10.1.1:15001' });
    assert.equal(r.ok, 5, JSON.stringify(r));
    const r6 = await connectMany(lab, { target: '[fd00:2::2]:8080', n: 5, expectId: 'gw6', expectLocal: '[fd00:1::1]:15006' });
    assert.equal(r6.ok, 5, JSON.stringify(r6));
    // Not caught (other daddr): still forwarded to the real server.
    const r3 = await connectMany(lab, { target: '10.10.2.3:9090', n: 2, expectId: 'B' });
    assert.equal(r3.ok, 2, JSON.stringify(r3));
  });

  it('installs TPROXY rules and the local route', async () => {
    await lab.tproxy({ dport: 9999, onPort: 15002, mark: 1 });
    await lab.tproxy({ dport: 9999, onPort: 15002, mark: 1, family: 6 });
    const m = await lab.execOk('gw', 'iptables', ['-t', 'mangle', '-S', 'PREROUTING']);
    assert.match(m, /-i cli0 -p tcp -m tcp --dport 9999 -j TPROXY --on-port 15002 --on-ip 0\.0\.0\.0 --tproxy-mark 0x1\/0x1/);
    const m6 = await lab.execOk('gw', 'ip6tables', ['-t', 'mangle', '-S', 'PREROUTING']);
    assert.match(m6, /--dport 9999 -j TPROXY --on-port 15002/);
    const rules = await lab.execOk('gw', 'ip', ['rule', 'show']);
    assert.match(rules, /fwmark 0x1\/0x1 lookup 100/);
    const routes = await lab.execOk('gw', 'ip', ['-6', 'route', 'show', 'table', '100']);
    assert.match(routes, /local (::\/0|default) dev lo/);
  });

  it('admin() talks HTTP inside the gateway namespace', async () => {
    const down = await lab.admin('/ready', { address: '127.0.0.1:9901', timeoutMs: 1000 });
    assert.equal(down.status, 0);
    assert.equal(down.error, 'ECONNREFUSED');
  });

  it('parseStats accepts top-level, nested and list forms and rejects missing fields', () => {
    const names = STAT_NAMES;
    const flat: Record<string, number> = {};
    names.forEach((n, i) => (flat[n] = i));
    assert.equal(parseStats(JSON.stringify(flat)).loop_rejected, names.indexOf('loop_rejected'));
    assert.equal(parseStats(JSON.stringify({ counters: flat })).bytes_received, names.indexOf('bytes_received'));
    assert.equal(parseStats(JSON.stringify({ stats: names.map((n, i) => ({ name: `splicegate.${n}`, value: i })) })).no_original_dst, names.indexOf('no_original_dst'));
    assert.throws(() => parseStats(JSON.stringify({ downstream_cx_total: 1 })), /missing/);
  });
});

describe('lab teardown', () => {
  it('destroy() kills processes and leaves no namespaces behind', async () => {
    const lab = await Lab.create({ name: 'teardown' });
    const p = lab.start('srv', 'sleep', ['300']);
    const q = lab.start('cli', 'bash', ['-c', 'trap "" TERM; sleep 300 & wait']);
    assert.ok(p.running && q.running);
    const t0 = Date.now();
    await lab.destroy(500);
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(p.running, false);
    assert.equal(q.running, false);
    const left = netnsList().filter((n) => n.startsWith(lab.prefix));
    assert.deepEqual(left, []);
    assert.throws(() => lab.spawn('cli', 'true', []), /destroyed/);
  });

  it('two labs in one process get distinct prefixes and both tear down', async () => {
    const a = await Lab.create({ name: 'x' });
    const b = await Lab.create({ name: 'x' });
    try {
      assert.notEqual(a.prefix, b.prefix);
    } finally {
      await a.destroy();
      await b.destroy();
    }
    assert.deepEqual(
      netnsList().filter((n) => n.startsWith(a.prefix) || n.startsWith(b.prefix)),
      [],
    );
  });
});
