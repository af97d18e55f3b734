// Socket activation's pure parts: reading LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES as sd_listen_fds(3)
// does, and deciding which listener takes which passed fd (name first, then bound address), with
// a fake inspector. The real sockets and the takeover are tested in integration/socket-activation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSocketAddress } from '../src/config/address';
import type { ListenerConfig } from '../src/config/types';
import type { NativeSocketInfo } from '../src/native/binding';
import { canonicalAddress, passedFds, planActivation, SocketActivationError, takeActivatedSockets } from '../src/proxy/socket-activation';

function listener(name: string, address: string): Pick<ListenerConfig, 'name' | 'address'> {
  const parsed = parseSocketAddress(address);
  if (!parsed.ok) throw new Error(parsed.message);
  return { name, address: parsed.value };
}

test('LISTEN_* are read only when LISTEN_PID is this process', () => {
  assert.deepEqual(passedFds({}, 42), []);
  assert.deepEqual(passedFds({ LISTEN_PID: '41', LISTEN_FDS: '2' }, 42), [], "another process's variables");
  assert.deepEqual(passedFds({ LISTEN_PID: '42', LISTEN_FDS: '2' }, 42), [
    { fd: 3, name: undefined },
    { fd: 4, name: undefined },
  ]);
  assert.deepEqual(passedFds({ LISTEN_PID: '42', LISTEN_FDS: '2', LISTEN_FDNAMES: 'egress:splicegate.socket' }, 42), [
    { fd: 3, name: 'egress' },
    { fd: 4, name: 'splicegate.socket' },
  ]);
  assert.deepEqual(passedFds({ LISTEN_PID: '42', LISTEN_FDS: '0' }, 42), []);
  assert.throws(() => passedFds({ LISTEN_PID: '42', LISTEN_FDS: 'two' }, 42), SocketActivationError);
  assert.throws(() => passedFds({ LISTEN_PID: 'me', LISTEN_FDS: '1' }, 42), SocketActivationError);
  assert.throws(() => passedFds({ LISTEN_PID: '42', LISTEN_FDS: '2', LISTEN_FDNAMES: 'one' }, 42), /1 names for LISTEN_FDS=2/);
});

test('addresses compare as the kernel prints them', () => {
  assert.equal(canonicalAddress(listener('a', '[0:0::0]:15006').address), '[::]:15006');
  assert.equal(canonicalAddress(listener('a', '[2001:DB8:0:0::1]:443').address), '[2001:db8::1]:443');
  assert.equal(canonicalAddress(listener('a', '0.0.0.0:15001').address), '0.0.0.0:15001');
});

test('a passed fd goes to the listener of its name, else of its address; the rest is reported', () => {
  const listeners = [listener('egress', '0.0.0.0:15001'), listener('egress6', '[::]:15006'), listener('own', '0.0.0.0:15003'), listener('named', '0.0.0.0:15004')];
  const sockets: Record<number, NativeSocketInfo | string> = {
    3: { type: 'stream', family: 'ipv4', listening: true, address: '0.0.0.0:15001' },
    4: { type: 'stream', family: 'ipv6', listening: true, address: '[::]:15006' },
    5: { type: 'dgram', family: 'ipv4', listening: false, address: '0.0.0.0:15001' },
    6: { type: 'stream', family: 'ipv4', listening: false, address: '0.0.0.0:15003' },
    7: { type: 'stream', family: 'ipv4', listening: true, address: '127.0.0.1:9999' },
    8: 'ENOTSOCK',
    9: { type: 'stream', family: 'ipv4', listening: true, address: '0.0.0.0:15001' },
    // Named: taken by name whatever it is (the takeover checks it and fails the start if wrong).
    10: { type: 'stream', family: 'ipv4', listening: true, address: '0.0.0.0:15099' },
    // Named like a listener already served (one name for every socket of a unit): by address.
    11: { type: 'stream', family: 'ipv4', listening: true, address: '0.0.0.0:15003' },
  };
  const inspect = (fd: number): NativeSocketInfo => {
    const s = sockets[fd];
    if (typeof s === 'string') throw Object.assign(new Error(s), { code: s });
    if (s === undefined) throw Object.assign(new Error('EBADF'), { code: 'EBADF' });
    return s;
  };
  const passed = [3, 4, 5, 6, 7, 8, 9, 10, 11].map((fd) => ({ fd, name: fd >= 10 ? 'named' : 'splicegate.socket' }));
  const plan = planActivation(listeners, passed, inspect);
  assert.deepEqual([...plan.adopt].sort((a, b) => a[0] - b[0]), [
    [0, { fd: 3, matchedBy: 'address' }],
    [1, { fd: 4, matchedBy: 'address' }],
    [2, { fd: 11, matchedBy: 'address' }],
    [3, { fd: 10, matchedBy: 'name' }],
  ]);
  assert.deepEqual(
    plan.unused.map((u) => [u.fd, u.why, u.close]),
    [
      [5, 'not a TCP socket (ipv4 dgram)', true],
      [6, 'not listening (0.0.0.0:15003)', true],
      [7, 'no listener on 127.0.0.1:9999', true],
      // Not a socket: maybe not ours to close (a LISTEN_FDS larger than what was passed).
      [8, 'not a socket', false],
      [9, 'its listener already takes another fd (0.0.0.0:15001)', true],
    ],
  );
});

test('takeActivatedSockets unsets the variables, logs each decision and closes what no listener takes', () => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: '42', LISTEN_FDS: '1', LISTEN_FDNAMES: 'egress', OTHER: 'kept' };
  const lines: string[] = [];
  const log = { info: (m: string, f?: object) => lines.push(`info ${m} ${JSON.stringify(f)}`), warn: (m: string, f?: object) => lines.push(`warn ${m} ${JSON.stringify(f)}`) };
  const listeners = [listener('egress', '0.0.0.0:15001'), listener('own', '0.0.0.0:15003')] as ListenerConfig[];
  const adopt = takeActivatedSockets({ inspectSocket: () => assert.fail('named fds are not inspected') }, listeners, log, env, 42);
  assert.deepEqual([...adopt], [[0, 3]]);
  assert.deepEqual(env, { OTHER: 'kept' });
  assert.deepEqual(lines, [
    'info listener socket passed by the service manager {"listener":"egress","fd":3,"matched_by":"name"}',
    'info no socket passed for listener: it binds its own {"listener":"own","address":"0.0.0.0:15003"}',
  ]);
  // Not activated: nothing logged, nothing taken.
  lines.length = 0;
  assert.deepEqual([...takeActivatedSockets({ inspectSocket: () => assert.fail() }, listeners, log, {}, 42)], []);
  assert.deepEqual(lines, []);
});

test('a UDP listener takes no passed socket, by name or by address: the TCP listener on its address does', () => {
  const tcp = listener('tcp', '0.0.0.0:15001');
  const udp = { ...listener('udp', '0.0.0.0:15001'), protocol: 'udp' as const };
  const inspect = (): NativeSocketInfo => ({ type: 'stream', family: 'ipv4', listening: true, address: '0.0.0.0:15001' });
  const byName = planActivation([udp, tcp], [{ fd: 3, name: 'udp' }], inspect);
  assert.deepEqual([...byName.adopt], [[1, { fd: 3, matchedBy: 'address' }]]);
  const alone = planActivation([udp], [{ fd: 3, name: 'splicegate.socket' }], inspect);
  assert.deepEqual([...alone.adopt], []);
  assert.deepEqual(alone.unused.map((u) => [u.fd, u.why, u.close]), [[3, 'no listener on 0.0.0.0:15001', true]]);
});
