// Envoy's scalar encodings in YAML (protobuf JSON mapping): durations as "6s"/"0.25s" (or
// {seconds, nanos}), wrapped integers as a number or {value: n}, addresses as socket_address.

import { isIPv4, isIPv6 } from 'node:net';

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A protobuf Duration as whole milliseconds (rounded up: a 0.1 ms timeout is not "no timeout"). */
export function envoyDurationMs(value: unknown): number | string {
  if (typeof value === 'string') {
    const m = /^(\d+)(?:\.(\d{1,9}))?s$/.exec(value);
    if (m === null) return `expected a protobuf duration like "5s" or "0.25s", got ${JSON.stringify(value)}`;
    const seconds = Number(m[1]);
    const nanos = m[2] === undefined ? 0 : Number(m[2].padEnd(9, '0'));
    return seconds * 1000 + Math.ceil(nanos / 1e6);
  }
  if (isRecord(value)) {
    const seconds = value['seconds'] ?? 0;
    const nanos = value['nanos'] ?? 0;
    const s = typeof seconds === 'string' ? Number(seconds) : seconds;
    if (typeof s === 'number' && Number.isSafeInteger(s) && s >= 0 && typeof nanos === 'number' && Number.isInteger(nanos) && nanos >= 0 && nanos < 1e9) {
      return s * 1000 + Math.ceil(nanos / 1e6);
    }
  }
  return `expected a protobuf duration like "5s" or "0.25s", got ${describe(value)}`;
}

/** Milliseconds as splicegate writes a duration: "6s", "250ms". */
export function splicegateDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** A uint32 given plainly or as a wrapper ({value: n}); numeric strings too (protobuf JSON allows them). */
export function envoyUint(value: unknown): number | string {
  const inner = isRecord(value) ? value['value'] : value;
  const n = typeof inner === 'string' && /^\d+$/.test(inner) ? Number(inner) : inner;
  if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff) return n;
  return `expected an unsigned integer, got ${describe(value)}`;
}

export interface EnvoySocketAddress {
  /** splicegate's "ip:port" / "[ipv6]:port". */
  text: string;
  port: number;
}

const SOCKET_ADDRESS_KEYS = new Set(['address', 'port_value', 'protocol', 'named_port', 'ipv4_compat']);

/** A protobuf bool, plain or as a BoolValue wrapper ({value: b}); undefined for anything else. */
export function envoyBool(value: unknown): boolean | undefined {
  const inner = isRecord(value) ? value['value'] : value;
  return typeof inner === 'boolean' ? inner : undefined;
}

/** address.socket_address -> "ip:port"; a message when it is not a TCP socket address with an IP literal. */
export function envoySocketAddress(address: unknown): EnvoySocketAddress | string {
  if (!isRecord(address)) return `expected an address mapping, got ${describe(address)}`;
  if (address['pipe'] !== undefined) return 'a unix socket (pipe) address: splicegate listens on TCP only';
  if (address['envoy_internal_address'] !== undefined) return 'an internal address: splicegate listens on TCP only';
  const sa = address['socket_address'];
  if (!isRecord(sa)) return 'expected address.socket_address';
  const host = sa['address'];
  const port = sa['port_value'];
  if (sa['protocol'] !== undefined && sa['protocol'] !== 'TCP') return `protocol ${describe(sa['protocol'])}: splicegate listens on TCP only`;
  if (sa['named_port'] !== undefined) return 'named_port is not supported: give port_value';
  // ipv4_compat makes an Envoy "::" listener take IPv4 too; a splicegate IPv6 listener is V6ONLY,
  // so dropping it would refuse the IPv4 clients. Other keys (network_namespace_filepath: the
  // listener lives in another namespace) change where the socket is: never dropped silently.
  if (sa['ipv4_compat'] !== undefined && sa['ipv4_compat'] !== false && typeof sa['address'] === 'string' && isIPv6(sa['address'])) {
    return 'ipv4_compat is not supported: splicegate IPv6 listeners take IPv6 only (add a listener on 0.0.0.0 for IPv4)';
  }
  const unknown = Object.keys(sa).filter((k) => !SOCKET_ADDRESS_KEYS.has(k));
  if (unknown.length > 0) return `socket_address.${unknown.join(', socket_address.')}: not supported (it changes where or how the socket is bound)`;
  if (typeof host !== 'string' || !(isIPv4(host) || isIPv6(host))) return `expected socket_address.address to be an IP literal, got ${describe(host)}`;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return `expected socket_address.port_value from 1 to 65535, got ${describe(port)}`;
  return { text: isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`, port };
}

export function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return 'a list';
  if (isRecord(value)) return 'a mapping';
  return String(value);
}
