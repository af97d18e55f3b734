// systemd socket activation (sd_listen_fds(3)): when LISTEN_PID is this process and LISTEN_FDS=n,
// fds 3 .. 3+n-1 are listening sockets the service manager opened for us (LISTEN_FDNAMES names
// them, from FileDescriptorName=). Each configured listener takes the passed socket named like it,
// else the one bound to its address; the socket is then used as is (never closed and re-bound), so
// connections systemd queued before splicegate started are served. A listener without a passed
// socket binds its own as usual; a passed socket no listener takes is reported and closed.

import { closeSync } from 'node:fs';
import type { ListenerConfig } from '../config/types';
import type { NativeBinding, NativeSocketInfo } from '../native/binding';
import type { Logger } from '../util/logger';

/** sd_listen_fds(3): the first passed fd. */
export const SD_LISTEN_FDS_START = 3;

export interface PassedFd {
  fd: number;
  /** From LISTEN_FDNAMES; systemd's default is the socket unit's name ("splicegate.socket"). */
  name: string | undefined;
}

export class SocketActivationError extends Error {}

/**
 * The fds passed to process `pid` per env, [] when LISTEN_PID is unset or another process's (a
 * parent's variables leaked into our environment). Malformed values throw SocketActivationError.
 */
export function passedFds(env: NodeJS.ProcessEnv, pid: number): PassedFd[] {
  const listenPid = env['LISTEN_PID'];
  if (listenPid === undefined || listenPid === '') return [];
  if (!/^\d+$/.test(listenPid)) throw new SocketActivationError(`LISTEN_PID=${JSON.stringify(listenPid)} is not a process id`);
  if (Number(listenPid) !== pid) return [];
  const count = env['LISTEN_FDS'] ?? '';
  if (!/^\d+$/.test(count)) throw new SocketActivationError(`LISTEN_FDS=${JSON.stringify(count)} is not a number of fds`);
  const n = Number(count);
  const namesText = env['LISTEN_FDNAMES'];
  const names = namesText === undefined || namesText === '' ? [] : namesText.split(':');
  if (names.length > 0 && names.length !== n) {
    throw new SocketActivationError(`LISTEN_FDNAMES has ${names.length} names for LISTEN_FDS=${n} fds`);
  }
  return Array.from({ length: n }, (_, i) => ({ fd: SD_LISTEN_FDS_START + i, name: names[i] === '' ? undefined : names[i] }));
}

/** sd_listen_fds(unset_environment=1): worker threads and anything spawned never see them. */
export function unsetActivationEnv(env: NodeJS.ProcessEnv): void {
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDS'];
  delete env['LISTEN_FDNAMES'];
}

/** "[::]:15006" as the kernel's getsockname prints it (inet_ntop), for matching by address. */
export function canonicalAddress(address: Pick<ListenerConfig['address'], 'host' | 'port' | 'family'>): string {
  if (address.family === 4) return `${address.host}:${address.port}`;
  return `${new URL(`http://[${address.host}]/`).hostname}:${address.port}`;
}

export interface ActivationPlan {
  /** Listener index (config order) -> the passed fd it takes over. */
  adopt: Map<number, { fd: number; matchedBy: 'name' | 'address' }>;
  /**
   * Passed fds no listener takes, with why: to report, and to close when they are sockets. A
   * number that is not a socket is left alone: with a LISTEN_FDS larger than what was really
   * passed it may be one of Node's own fds.
   */
  unused: Array<{ fd: number; name: string | undefined; why: string; close: boolean }>;
}

type Inspect = (fd: number) => NativeSocketInfo;

function describeInspectError(err: unknown): string {
  const code = err instanceof Error && 'code' in err ? String((err as { code: unknown }).code) : '';
  if (code === 'EBADF') return 'not an open fd';
  if (code === 'ENOTSOCK') return 'not a socket';
  return err instanceof Error ? err.message : String(err);
}

/**
 * Names first: a passed fd named like a listener is that listener's (its checks happen when it is
 * taken over, and a socket that does not fit the listener is a start error). Then addresses: an
 * unnamed (or otherwise named) listening TCP socket bound to exactly a listener's address.
 */
export function planActivation(
  listeners: readonly (Pick<ListenerConfig, 'name' | 'address'> & Partial<Pick<ListenerConfig, 'protocol'>>)[],
  passed: readonly PassedFd[],
  inspect: Inspect,
): ActivationPlan {
  // Only TCP listeners take passed sockets: a UDP listener always opens its own (udp_relay.h).
  const takes = (l: Partial<Pick<ListenerConfig, 'protocol'>>): boolean => l.protocol !== 'udp';
  const adopt = new Map<number, { fd: number; matchedBy: 'name' | 'address' }>();
  const unused: ActivationPlan['unused'] = [];
  const rest: PassedFd[] = [];
  for (const p of passed) {
    const index = listeners.findIndex((l) => l.name === p.name && takes(l));
    if (index >= 0 && !adopt.has(index)) adopt.set(index, { fd: p.fd, matchedBy: 'name' });
    // Not named for a listener, or named for one already served (FileDescriptorName= names every
    // socket of a .socket unit alike): matched by address instead.
    else rest.push(p);
  }
  for (const p of rest) {
    let info: NativeSocketInfo;
    try {
      info = inspect(p.fd);
    } catch (err) {
      unused.push({ ...p, why: describeInspectError(err), close: false });
      continue;
    }
    if (info.type !== 'stream' || (info.family !== 'ipv4' && info.family !== 'ipv6')) {
      unused.push({ ...p, why: `not a TCP socket (${info.family} ${info.type})`, close: true });
      continue;
    }
    if (!info.listening) {
      unused.push({ ...p, why: `not listening (${info.address})`, close: true });
      continue;
    }
    const index = listeners.findIndex((l, i) => takes(l) && !adopt.has(i) && canonicalAddress(l.address) === info.address);
    if (index < 0) {
      const taken = listeners.some((l) => takes(l) && canonicalAddress(l.address) === info.address);
      unused.push({ ...p, why: taken ? `its listener already takes another fd (${info.address})` : `no listener on ${info.address}`, close: true });
      continue;
    }
    adopt.set(index, { fd: p.fd, matchedBy: 'address' });
  }
  return { adopt, unused };
}

/**
 * Reads (and unsets) the activation variables, plans which listener takes which passed fd, logs
 * it, and closes the passed fds nobody takes. Returns listener index -> fd for ListenSockets.open.
 */
export function takeActivatedSockets(
  binding: Pick<NativeBinding, 'inspectSocket'>,
  listeners: readonly ListenerConfig[],
  log: Pick<Logger, 'info' | 'warn'>,
  env: NodeJS.ProcessEnv = process.env,
  pid: number = process.pid,
): Map<number, number> {
  const passed = passedFds(env, pid);
  unsetActivationEnv(env);
  if (passed.length === 0) return new Map();
  const plan = planActivation(listeners, passed, (fd) => binding.inspectSocket(fd));
  for (const [index, { fd, matchedBy }] of plan.adopt) {
    log.info('listener socket passed by the service manager', { listener: listeners[index]?.name ?? '?', fd, matched_by: matchedBy });
  }
  for (const [index, l] of listeners.entries()) {
    if (!plan.adopt.has(index)) log.info('no socket passed for listener: it binds its own', { listener: l.name, address: l.address.text });
  }
  for (const u of plan.unused) {
    if (!u.close) {
      log.warn('passed fd is not a socket: left alone', { fd: u.fd, name: u.name ?? '', reason: u.why });
      continue;
    }
    log.warn('passed socket not used by any listener: closed', { fd: u.fd, name: u.name ?? '', reason: u.why });
    closeSync(u.fd);
  }
  return new Map([...plan.adopt].map(([index, { fd }]) => [index, fd]));
}
