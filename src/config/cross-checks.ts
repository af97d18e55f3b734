// Checks of the config that span more than one field (the schema's superRefine steps): listener
// names and addresses unique and not overlapping, the admin address and upstream_port_override
// clear of the listeners, keys that would be silently ignored in the mode a listener has, and
// settings that exclude each other.

import type { z } from 'zod';
import { addressKey } from './address';
import { showValue } from './parsed';
import type { SocketAddress } from './types';

// An http: block on an original_dst listener would be silently ignored: refuse it instead.
export function checkHttpBlockMode(listeners: unknown, ctx: z.RefinementCtx): void {
  if (!Array.isArray(listeners)) return;
  listeners.forEach((item: unknown, index) => {
    if (!isRecord(item) || item['http'] === undefined) return;
    // The value here has its defaults applied, so an omitted mode reads as original_dst.
    if (item['mode'] === 'original_dst') {
      ctx.addIssue({ code: 'custom', path: [index, 'http'], message: 'an http: block needs mode: http (this listener is original_dst, the default mode)' });
    }
  });
}

// A UDP listener only works under TPROXY (the original destination comes with each datagram, from
// IP_RECVORIGDSTADDR) and relays datagrams as they are: say so instead of silently ignoring a key.
export function checkUdpListeners(listeners: unknown, ctx: z.RefinementCtx): void {
  if (!Array.isArray(listeners)) return;
  listeners.forEach((item: unknown, index) => {
    if (!isRecord(item) || item['protocol'] !== 'udp') return;
    if (item['transparent'] !== true) {
      ctx.addIssue({ code: 'custom', path: [index, 'transparent'], message: 'protocol: udp needs transparent: true (a TPROXY rule; UDP has no REDIRECT original destination to read)' });
    }
    if (item['mode'] !== undefined && item['mode'] !== 'original_dst') {
      ctx.addIssue({ code: 'custom', path: [index, 'mode'], message: `protocol: udp needs mode: original_dst, got ${showValue(item['mode'])}` });
    }
    if (item['proxy_protocol'] !== undefined) {
      ctx.addIssue({ code: 'custom', path: [index, 'proxy_protocol'], message: 'protocol: udp cannot read a PROXY header (datagrams are relayed as they are)' });
    }
  });
}

// Uniqueness runs even when some listener has other problems (`when` below), so one pass reports
// both "bad backlog" and "duplicate name". The value may then be partly unparsed, hence `unknown`
// and the defensive checks.
//
// Addresses must not overlap either, not just differ: listeners are not SO_REUSEPORT, so a wildcard
// beside a specific address of its family on the same port ("0.0.0.0:P" and "127.0.0.1:P", "[::]:P"
// and "[::1]:P") fails at bind in `run`, whichever comes first. IPv4 and IPv6 never collide, because
// IPv6 listeners are IPV6_V6ONLY. The later listener is the one reported.
export function checkListenersUnique(listeners: unknown, ctx: z.RefinementCtx): void {
  if (!Array.isArray(listeners)) return;
  const names = new Map<string, number>();
  const addresses: Array<{ index: number; address: SocketAddress; protocol: string }> = [];
  listeners.forEach((item: unknown, index) => {
    if (!isRecord(item)) return;
    const name = item['name'];
    if (typeof name === 'string') {
      const first = names.get(name);
      if (first === undefined) names.set(name, index);
      else ctx.addIssue({ code: 'custom', path: [index, 'name'], message: `duplicate listener name ${showValue(name)} (also used by listeners[${first}])` });
    }
    const addr = item['address'];
    if (!isSocketAddress(addr)) return;
    // A TCP and a UDP socket never collide: only listeners of one protocol are compared.
    const protocol = item['protocol'] === 'udp' ? 'udp' : 'tcp';
    const earlier = addresses.find((a) => a.protocol === protocol && listenersCollide(a.address, addr));
    addresses.push({ index, address: addr, protocol });
    if (earlier === undefined) return;
    const other = `listeners[${earlier.index}]${describeListener(listeners[earlier.index])}`;
    ctx.addIssue({
      code: 'custom',
      path: [index, 'address'],
      message:
        addressKey(earlier.address) === addressKey(addr)
          ? `duplicate listener address ${addr.text} (also used by ${other})`
          : `${addr.text} overlaps ${other} on ${earlier.address.text}: a wildcard address takes port ${addr.port} on every address of its family, so the second bind would fail`,
    });
  });
}

/** Would two listeners' binds collide? Same port and family, and equal or one of them a wildcard. */
function listenersCollide(a: SocketAddress, b: SocketAddress): boolean {
  if (a.port !== b.port || a.family !== b.family) return false;
  return isWildcard(a) || isWildcard(b) || addressKey(a) === addressKey(b);
}

// The admin server binds after the listeners; an overlapping ip:port would fail there, so say so
// up front (validate runs the same checks as run). Overlap is wider than equality: a wildcard
// address takes the port on every address of its family, and the admin server (Node) binds "::"
// dual-stack, so it also takes the port on every IPv4 address. Listeners are IPv6-only.
export function checkAdminNotListener(root: unknown, ctx: z.RefinementCtx): void {
  if (!isRecord(root) || !isRecord(root['admin']) || !Array.isArray(root['listeners'])) return;
  const admin = root['admin']['address'];
  if (!isSocketAddress(admin)) return;
  root['listeners'].forEach((item: unknown, index) => {
    if (!isRecord(item) || !isSocketAddress(item['address']) || item['protocol'] === 'udp') return;
    const listener = item['address'];
    if (!adminCollides(admin, listener)) return;
    const same = addressKey(admin) === addressKey(listener);
    ctx.addIssue({
      code: 'custom',
      path: ['admin', 'address'],
      message: same
        ? `${admin.text} is also the address of listeners[${index}]${describeListener(item)}`
        : `${admin.text} overlaps listeners[${index}]${describeListener(item)} on ${listener.text}: both would bind port ${admin.port}`,
    });
  });
}

function isWildcard(address: SocketAddress): boolean {
  return address.family === 4 ? address.host === '0.0.0.0' : addressKey(address) === `6/::/${address.port}`;
}

/** Would the admin server's bind fail because listener holds an overlapping ip:port? */
function adminCollides(admin: SocketAddress, listener: SocketAddress): boolean {
  if (admin.port !== listener.port) return false;
  const adminWildcard = isWildcard(admin);
  if (admin.family === 6 && adminWildcard && listener.family === 4) return true;
  if (admin.family !== listener.family) return false;
  return adminWildcard || isWildcard(listener) || addressKey(admin) === addressKey(listener);
}

// Connecting upstream to a listener's own port sends every relayed connection back into the proxy
// when the destination is this host or is redirected here again: a loop, never intended.
export function checkPortOverrideNotListener(root: unknown, ctx: z.RefinementCtx): void {
  if (!isRecord(root) || !isRecord(root['cluster']) || !Array.isArray(root['listeners'])) return;
  const override = root['cluster']['upstream_port_override'];
  if (typeof override !== 'number' || override === 0) return;
  root['listeners'].forEach((item: unknown, index) => {
    // UDP listeners are left out: the override applies to TCP upstreams only.
    if (isRecord(item) && item['protocol'] !== 'udp' && isSocketAddress(item['address']) && item['address'].port === override) {
      ctx.addIssue({
        code: 'custom',
        path: ['cluster', 'upstream_port_override'],
        message: `${override} is the port of listeners[${index}]${describeListener(item)} (${item['address'].text}): upstream connections would loop back into the proxy`,
      });
    }
  });
}

// A warm socket is connected before its client exists, so it cannot carry the client's address:
// say so rather than silently dropping one of the two settings.
export function checkOriginalSourceNotPreconnect(root: unknown, ctx: z.RefinementCtx): void {
  if (!isRecord(root) || !isRecord(root['cluster'])) return;
  if (root['cluster']['original_source'] === true && root['cluster']['preconnect'] !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['cluster', 'original_source'],
      message: 'original_source cannot be combined with preconnect: a warm socket is opened before its client is known',
    });
  }
}


function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isSocketAddress(value: unknown): value is SocketAddress {
  return isRecord(value) && typeof value['host'] === 'string' && typeof value['port'] === 'number' && (value['family'] === 4 || value['family'] === 6);
}

function describeListener(item: unknown): string {
  return isRecord(item) && typeof item['name'] === 'string' ? ` ${showValue(item['name'])}` : '';
}
