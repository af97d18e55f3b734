// Unit tests for the perf sample classifier of `npm run bench:profile` (no lab, no perf needed):
//   npx tsc -p tsconfig.json && node --test dist/bench/test/perf-attribution.test.js
// The fixtures are real `perf script` output of this machine (kernel 6.18, perf 6.1), recorded by
// `node dist/bench/profile.js --only splicegate,haproxy --seconds 2 --keep-script DIR` and trimmed
// to a few whole samples per bucket: splicegate (pid 23428, its native loop thread is tid 23450)
// under keep-alive load, and HAProxy (pid 23559) under new-connection load. The expected bucket of
// every sample was read off its stack by hand.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { attribute, type Classified, classify, parsePerfScript, type ProxyIdentity, type Sample, syscallGroup } from '../lib/perf-attribution';

const fixtures = path.join(__dirname, '..', '..', '..', 'bench', 'test', 'fixtures');
const read = (name: string): Sample[] => parsePerfScript(fs.readFileSync(path.join(fixtures, name), 'utf8'));

const SPLICEGATE: ProxyIdentity = { pids: new Set([23428]), own: /\.node$/, runtime: /^\/usr\/bin\/node$/ };
const HAPROXY: ProxyIdentity = { pids: new Set([23559]), own: /^\/usr\/sbin\/haproxy$/, runtime: /(?!)/ };
const PERIOD = 1001001; // ns: -F 999

/** A short, comparable form of a classification. */
function key(c: Classified): string {
  if (c.who !== 'proxy') return c.who;
  if (c.space === 'user') return `user:${c.bucket}`;
  return `${c.context}/${c.part}${c.syscall === null ? '' : `(${c.syscall})`}`;
}

test('parsePerfScript reads the header and every frame, C++ symbols with parentheses included', () => {
  const s = read('perf-script-splicegate-keepalive.txt');
  assert.equal(s.length, 17);
  assert.ok(s.every((x) => x.period === PERIOD));
  // "ksoftirqd/1    22/22    [001]": padded columns.
  assert.deepEqual(
    s.map((x) => `${x.comm} ${x.pid}/${x.tid}`).slice(0, 4),
    ['node 23355/23355', 'node 23428/23428', 'ksoftirqd/1 22/22', 'node 23428/23450'],
  );
  const first = s[0];
  assert.ok(first);
  assert.equal(first.frames.length, 42);
  const lambda = first.frames.find((f) => f.sym.startsWith('node::LibuvStreamWrap::ReadStart()'));
  assert.equal(lambda?.dso, '/usr/bin/node');
  assert.equal(lambda?.sym, 'node::LibuvStreamWrap::ReadStart()::{lambda(uv_stream_s*, long, uv_buf_t const*)#2}::_FUN');
  const send = s[4];
  assert.ok(send);
  assert.equal(send.frames.length, 24);
  assert.deepEqual(send.frames[0], { ip: 0xffffffff81f96266n, sym: 'nf_confirm', dso: '[kernel.kallsyms]' });
  assert.deepEqual(send.frames[23], { ip: 0x10aba4n, sym: '__send', dso: '/usr/lib/x86_64-linux-gnu/libc.so.6' });
  assert.deepEqual(parsePerfScript(''), []);
});

test('splicegate under keep-alive load: every sample in its bucket', () => {
  const got = read('perf-script-splicegate-keepalive.txt').map((x) => key(classify(x, SPLICEGATE)));
  assert.deepEqual(got, [
    'other', // the benchmark runner: comm "node" too, but another pid
    'user:libc', // libstdc++ string::reserve
    'ksoftirqd', // RCU callbacks in ksoftirqd/1
    'user:own', // splicegate::Connection::onConnectReady
    'syscall:send/netfilter(sendto)', // nf_confirm < nf_hook_slow < ... < net_rx_action < ... < sendto: innermost marker wins
    'syscall:send/rps_ipi(sendto)', // x2apic_send_IPI < net_rps_send_ipi < net_rx_action < ... < sendto
    'syscall:epoll_wait/scheduler(epoll_wait)', // finish_task_switch < schedule < do_epoll_wait
    'syscall:send/ipi_rx(sendto)', // handle_softirqs < sysvec_call_function_single, inside tcp_sendmsg
    'syscall:send/rest(sendto)', // tcp_event_new_data_sent < tcp_write_xmit
    'syscall:send/softirq_rx(sendto)', // skb_defer_free_flush < net_rx_action < do_softirq < sendto
    'interrupt/softirq_rx', // tcp_ack ... net_rx_action < IPI that hit user space (Connection::relay)
    'syscall:recv/rest(recvfrom)',
    'user:runtime', // v8::Array::Length (/usr/bin/node)
    'user:runtime', // Builtins_Call_ReceiverIsAny (/usr/bin/node)
    'interrupt/ipi_rx', // handle_softirqs < sysvec_call_function_single over Relay::fill
    'page_fault/page_fault', // clear_page_erms ... < exc_page_fault from the main thread
    'user:runtime', // JIT code (/tmp/perf-23428.map)
  ]);
});

test('HAProxy under new-connection load: every sample in its bucket', () => {
  const got = read('perf-script-haproxy-close.txt').map((x) => key(classify(x, HAPROXY)));
  assert.deepEqual(got, [
    'syscall:accept/rest(accept4)', // memcg charge < sock_alloc < do_accept
    'syscall:connect/netfilter(connect)', // nf_nat_setup_info < nf_hook_slow < __ip_local_out
    'syscall:close/softirq_rx(close)', // tcp_ack < ... < net_rx_action < __fput
    'user:own', // run_tasks_from_lists (/usr/sbin/haproxy)
    'syscall:sockopt/rest(getsockopt)', // SO_ORIGINAL_DST: getorigdst < ip_getsockopt
    'syscall:other/rest(socket)',
    'kworker',
    'syscall:epoll_ctl/rest(epoll_ctl)',
    'user:libc', // __fcntl64_nocancel_adjusted
    'syscall:other/rest(clock_gettime)', // HAProxy's per-thread CPU clock, not served by the vDSO
  ]);
});

test('attribute sums the periods into disjoint buckets', () => {
  const a = attribute(read('perf-script-splicegate-keepalive.txt'), SPLICEGATE);
  const n = (k: number): number => k * PERIOD;
  assert.equal(a.samples, 17);
  assert.equal(a.totalNs, n(17));
  assert.equal(a.proxyNs, n(15));
  assert.deepEqual(a.user, { own: n(1), libc: n(1), runtime: n(3), other: 0 });
  assert.deepEqual(a.kernel, {
    'syscall:send': n(5),
    'syscall:epoll_wait': n(1),
    'syscall:recv': n(1),
    interrupt: n(2),
    page_fault: n(1),
  });
  assert.deepEqual(a.parts, { softirq_rx: n(2), rps_ipi: n(1), ipi_rx: n(2), netfilter: n(1), scheduler: n(1), wake_up: 0, irq: 0, page_fault: n(1), rest: n(2) });
  assert.deepEqual(a.matrix['syscall:send'], { netfilter: n(1), rps_ipi: n(1), ipi_rx: n(1), rest: n(1), softirq_rx: n(1) });
  assert.deepEqual(a.syscalls, { sendto: n(5), epoll_wait: n(1), recvfrom: n(1) });
  // Threads by tid: the native loop thread (23450) and the main thread (23428).
  assert.deepEqual(a.threads, { '23428': { comm: 'node', ns: n(5) }, '23450': { comm: 'node', ns: n(10) } });
  assert.deepEqual(a.others, { ksoftirqd: n(1), kworker: 0, idle: 0, other: n(1) });
  assert.deepEqual(a.otherComms, { node: n(1), 'ksoftirqd/N': n(1) });
  // Every sample is counted once in each view.
  const sum = (r: Record<string, number>): number => Object.values(r).reduce((x, y) => x + y, 0);
  assert.equal(sum(a.user) + sum(a.kernel), a.proxyNs);
  assert.equal(sum(a.parts), sum(a.kernel));
  assert.equal(a.proxyNs + sum(a.others), a.totalNs);
});

test('a syscall whose stack lost its __x64_sys_ frame is named from the libc wrapper; idle is pid 0', () => {
  const k = (ip: bigint, sym: string) => ({ ip, sym, dso: '[kernel.kallsyms]' });
  const who: ProxyIdentity = { pids: new Set([7]), own: /^\/opt\/proxy$/, runtime: /(?!)/ };
  const recv: Sample = {
    comm: 'proxy',
    pid: 7,
    tid: 8,
    period: 10,
    frames: [k(0xffffffff8225a6c1n, 'do_syscall_64'), k(0xffffffff81000130n, 'entry_SYSCALL_64_after_hwframe'), { ip: 0x10a974n, sym: '__libc_recv', dso: '/usr/lib/x86_64-linux-gnu/libc.so.6' }],
  };
  assert.equal(key(classify(recv, who)), 'syscall:recv/rest(recv)');
  const idle: Sample = { comm: 'swapper', pid: 0, tid: 0, period: 10, frames: [k(0xffffffff82256067n, 'default_idle')] };
  assert.equal(key(classify(idle, who)), 'idle');
  const own: Sample = { comm: 'proxy', pid: 7, tid: 7, period: 10, frames: [{ ip: 0x1234n, sym: '[unknown]', dso: '/opt/proxy' }] };
  assert.equal(key(classify(own, who)), 'user:own');
  assert.equal(syscallGroup('sendmsg'), 'send');
  assert.equal(syscallGroup('epoll_pwait'), 'epoll_wait');
  assert.equal(syscallGroup('futex'), 'other');
});
