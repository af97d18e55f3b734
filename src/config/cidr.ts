// CIDRs and port specs of the destination policy (docs/POLICY.md). A CIDR is refused when bits
// below its prefix are set ("10.0.5.1/24"): the writer meant either the host (/32) or the network
// (10.0.5.0/24), and guessing either way silently widens or narrows a security rule.

import { isIPv4, isIPv6 } from 'node:net';
import type { Cidr, PortRange } from './types';
import { Parsed, showValue } from './parsed';

/** IPv6 ranges whose addresses splicegate judges by the IPv4 address inside (policy.h). */
const EMBEDDED_V4: readonly { name: string; network: bigint; prefix: number; v4Shift: number }[] = [
  { name: 'IPv4-mapped (::ffff:0:0/96)', network: 0xffffn << 32n, prefix: 96, v4Shift: 0 },
  { name: 'NAT64 (64:ff9b::/96)', network: 0x64ff9bn << 96n, prefix: 96, v4Shift: 0 },
  { name: '6to4 (2002::/16)', network: 0x2002n << 112n, prefix: 16, v4Shift: 80 },
];

/** The address as one unsigned integer (32 or 128 bits). Input must already be a valid literal. */
export function ipValue(text: string, family: 4 | 6): bigint {
  if (family === 4) return text.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
  let head = text;
  let tailV4: bigint | undefined;
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    tailV4 = ipValue(text.slice(lastColon + 1), 4);
    head = text.slice(0, lastColon + 1) + '0:0';
  }
  const [left = '', right] = head.split('::');
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const leftGroups = groups(left);
  const rightGroups = right === undefined ? [] : groups(right);
  const missing = 8 - leftGroups.length - rightGroups.length;
  const all = [...leftGroups, ...new Array<string>(right === undefined ? 0 : missing).fill('0'), ...rightGroups];
  let value = all.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
  if (tailV4 !== undefined) value = (value & ~0xffffffffn) | tailV4;
  return value;
}

export function formatIp(value: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join('.');
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((value >> s) & 0xffffn).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function hostMask(prefix: number, family: 4 | 6): bigint {
  const bits = BigInt(family === 4 ? 32 : 128);
  return (1n << (bits - BigInt(prefix))) - 1n;
}

/** "10.0.5.0/24", "2001:db8::/32", or a bare address meaning just that host (/32, /128). */
export function parseCidr(text: string): Parsed<Cidr> {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const family = isIPv4(ip) ? 4 : isIPv6(ip) && !ip.includes('%') ? 6 : undefined;
  if (family === undefined) {
    const hint = ip.includes('%')
      ? ' (zone ids are not allowed)'
      : ip.startsWith('[')
        ? ' (no brackets around IPv6 here)'
        : /[g-z]/i.test(ip)
          ? ' (hostnames are not allowed)'
          : ' (not an IP address)';
    return { ok: false, message: `expected a CIDR like "10.0.0.0/8" or "2001:db8::/32", got ${showValue(text)}${hint}` };
  }
  const maxPrefix = family === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(maxPrefix) : text.slice(slash + 1);
  if (!/^(0|[1-9]\d{0,2})$/.test(prefixText) || Number(prefixText) > maxPrefix) {
    return { ok: false, message: `the prefix length must be 0..${maxPrefix}, got ${showValue(text)}` };
  }
  const prefix = Number(prefixText);
  const value = ipValue(ip, family);
  const host = value & hostMask(prefix, family);
  if (host !== 0n) {
    const network = formatIp(value & ~host, family);
    return {
      ok: false,
      message: `${showValue(text)} has bits set below its /${prefix} prefix: write "${network}/${prefix}" for the network, or "${ip}/${maxPrefix}" for the one address`,
    };
  }
  if (family === 6) {
    for (const range of EMBEDDED_V4) {
      if (prefix >= range.prefix && value >> BigInt(128 - range.prefix) === range.network >> BigInt(128 - range.prefix)) {
        return {
          ok: false,
          message: `${showValue(text)} is inside ${range.name}: splicegate judges those addresses by the IPv4 address they carry, so this rule could never match; write the IPv4 range instead${suggestV4(value, prefix, range)}`,
        };
      }
    }
  }
  const network = formatIp(value, family);
  return { ok: true, value: { family, network, prefix, text: `${network}/${prefix}` } };
}

function suggestV4(value: bigint, prefix: number, range: { prefix: number; v4Shift: number }): string {
  const v4Prefix = prefix - range.prefix;
  if (v4Prefix > 32) return '';
  const v4 = (value >> BigInt(range.v4Shift)) & 0xffffffffn;
  return ` ("${formatIp(v4, 4)}/${v4Prefix}")`;
}

const PORT_EXPECTED = 'expected a port "N" or a range "A-B" with 1 <= A <= B <= 65535';

/** "443", "6379-6380", or a YAML integer. */
export function parsePortSpec(input: string | number): Parsed<PortRange> {
  const text = String(input);
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  if (match === null) return { ok: false, message: `${PORT_EXPECTED}, got ${showValue(input)}` };
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  if (first < 1 || last > 65535 || first > last) return { ok: false, message: `${PORT_EXPECTED}, got ${showValue(input)}` };
  return { ok: true, value: { first, last } };
}
