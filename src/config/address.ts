// Socket addresses are "ip:port" or "[ipv6]:port" with a literal IP. Hostnames are refused on
// purpose: resolving them would put DNS (and its failure modes) on the config-loading path, and a
// listener bound to "whatever localhost resolves to today" is not something to debug at 3 a.m.

import { isIPv4, isIPv6, SocketAddress as NetSocketAddress } from 'node:net';
import type { SocketAddress } from './types';
import { Parsed, showValue } from './parsed';

const EXPECTED = 'expected "ip:port" or "[ipv6]:port"';

/** Parse "ip:port" / "[ipv6]:port"; port must be 1..65535 (a listener on port 0 is never intended). */
export function parseSocketAddress(text: string): Parsed<SocketAddress> {
  const fail = (hint?: string): Parsed<SocketAddress> => ({
    ok: false,
    message: `${EXPECTED}, got ${showValue(text)}${hint === undefined ? '' : ` (${hint})`}`,
  });

  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return fail();
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!isIPv6(host)) return fail(isIPv4(host) ? 'brackets are only for IPv6 addresses' : 'not an IPv6 address');
    // Both are valid IPv6 text that `run` cannot bind, so `validate` refuses them too.
    if (host.includes('%')) {
      return fail('IPv6 zone indexes ("%eth0") are not supported: use a global or unique-local address, or "[::]"');
    }
    const mapped = ipv4Mapped(host);
    if (mapped !== undefined) {
      return fail(`an IPv4-mapped IPv6 address: IPv6 listeners are IPv6-only, write "${mapped}:${portText}" to bind IPv4`);
    }
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return fail('missing ":port"');
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) {
      // "::1:80" is ambiguous (is 80 the port or the last group?), so IPv6 always needs brackets.
      return fail(isIPv6(host) || isIPv6(text) ? 'IPv6 addresses must be in brackets, e.g. "[::1]:80"' : undefined);
    }
    if (!isIPv4(host)) {
      return fail(/[a-z]/i.test(host) ? 'hostnames are not allowed, use a literal IP address' : 'not an IPv4 address');
    }
  }

  if (!/^\d{1,5}$/.test(portText)) return fail('the port must be a number');
  const port = Number(portText);
  if (port < 1 || port > 65535) {
    return { ok: false, message: `port must be 1..65535, got ${portText} in ${showValue(text)}` };
  }
  const family = isIPv6(host) ? 6 : 4;
  const textForm = family === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  return { ok: true, value: { host, port, family, text: textForm } };
}

/** The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d in any spelling), if it is one. */
export function ipv4Mapped(host: string): string | undefined {
  let normal: string;
  try {
    normal = new NetSocketAddress({ address: host, family: 'ipv6' }).address;
  } catch {
    return undefined;
  }
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(normal);
  return m?.[1];
}

/**
 * A key that is equal for two spellings of the same socket address ("[::]:80" and
 * "[0:0::0]:80"), used to find listeners that would bind the same ip:port. The IPv6 zone
 * ("%eth0") is kept because fe80::1%eth0 and fe80::1%eth1 are different addresses.
 */
export function addressKey(address: SocketAddress): string {
  const zoneAt = address.host.indexOf('%');
  const bare = zoneAt < 0 ? address.host : address.host.slice(0, zoneAt);
  const zone = zoneAt < 0 ? '' : address.host.slice(zoneAt);
  const normal = new NetSocketAddress({ address: bare, family: address.family === 6 ? 'ipv6' : 'ipv4' }).address;
  return `${address.family}/${normal.toLowerCase()}${zone}/${address.port}`;
}
