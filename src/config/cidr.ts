// Address ranges in the config are CIDRs ("10.0.0.0/8", "2001:db8::/32") or single literal IPs
// ("10.1.2.3" = /32, "::1" = /128). A prefix with host bits set ("10.0.0.1/8") is refused rather
// than silently widened: whoever wrote it meant either one host or the network, and trusting the
// wrong one of the two is a security mistake, not a typo.

import { isIPv4, isIPv6 } from 'node:net';
import { Parsed, showValue } from './parsed';
import type { Cidr } from './types';

const EXPECTED = 'expected a CIDR like "10.0.0.0/8" or "2001:db8::/32", or a single IP';

/** Parse "ip/prefix" or a bare "ip"; IPv4 without leading zeros, IPv6 without zone or brackets. */
export function parseCidr(text: string): Parsed<Cidr> {
  const fail = (hint: string): Parsed<Cidr> => ({ ok: false, message: `${EXPECTED}, got ${showValue(text)} (${hint})` });
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const family = isIPv4(ip) ? 4 : isIPv6(ip) && !ip.includes('%') ? 6 : undefined;
  if (family === undefined) {
    if (ip.includes('%')) return fail('a zone such as "%eth0" is not allowed');
    if (ip.startsWith('[')) return fail('no brackets around IPv6 here');
    return fail(/[a-z]/i.test(ip) && !/^[0-9a-f:.]*$/i.test(ip) ? 'hostnames are not allowed, use a literal IP address' : 'not an IP address');
  }
  const maxLength = family === 4 ? 32 : 128;
  let prefixLength = maxLength;
  if (slash >= 0) {
    const lengthText = text.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(lengthText) || Number(lengthText) > maxLength) {
      return fail(`the prefix length must be 0..${maxLength}`);
    }
    prefixLength = Number(lengthText);
  }
  const bytes = ipBytes(ip, family);
  const network = maskBytes(bytes, prefixLength);
  if (!network.every((b, i) => b === bytes[i])) {
    const suggestion = `${formatIp(network, family)}/${prefixLength}`;
    return fail(`host bits are set: did you mean "${suggestion}", or "${ip}" for the single host?`);
  }
  const address = formatIp(network, family);
  return { ok: true, value: { family, address, prefixLength, text: `${address}/${prefixLength}` } };
}

/** The address's bytes (4 or 16); `ip` has already been validated as that family. */
function ipBytes(ip: string, family: 4 | 6): number[] {
  if (family === 4) return ip.split('.').map(Number);
  // An IPv4 tail ("::ffff:1.2.3.4") becomes its two hex groups first.
  let text = ip;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const [a = 0, b = 0, c = 0, d = 0] = tail.split('.').map(Number);
    text = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', rest] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const restGroups = rest === undefined || rest === '' ? [] : rest.split(':');
  const zeros = rest === undefined ? 0 : 8 - headGroups.length - restGroups.length;
  const groups = [...headGroups, ...Array<string>(zeros).fill('0'), ...restGroups].map((g) => parseInt(g, 16));
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

function maskBytes(bytes: number[], prefixLength: number): number[] {
  return bytes.map((b, i) => {
    const bits = Math.min(Math.max(prefixLength - i * 8, 0), 8);
    return b & ((0xff00 >> bits) & 0xff);
  });
}

/** Dotted quad, or lowercase IPv6 with the longest run of zero groups compressed (RFC 5952). */
function formatIp(bytes: number[], family: 4 | 6): string {
  if (family === 4) return bytes.join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  let bestStart = -1;
  let bestLength = 1; // a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i += 1;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j += 1;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
