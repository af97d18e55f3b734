// Which Host a request to the admin endpoint may name. The endpoint listens on loopback by
// default, yet a web page open in a browser on the same host can still read it: the page's own
// name is made to resolve to 127.0.0.1 after it loaded (DNS rebinding), and the browser then
// treats the admin answers as same-origin. Such a request always carries the page's *name* in
// Host, never an IP literal, so answering only IP literals and the names the operator listed
// (`admin.allowed_hosts`, default `localhost`) closes that path without touching curl, probes
// or scrapers, which address the endpoint by IP.

import { isIPv4, isIPv6 } from 'node:net';
import { ANY_HOST, canonicalHostName } from '../config/host-name';

/** The host part of a Host header value: "name:port", "[v6]:port", "1.2.3.4", ... */
function hostPart(value: string): string {
  if (value.startsWith('[')) {
    // Only "[v6]" or "[v6]:port" is a bracketed literal: "[::1]rebind.example" and "[127.0.0.1]"
    // stay whole (names, and not valid ones).
    const m = /^\[([^\]]*)\](?::\d*)?$/.exec(value);
    return m && isIPv6(m[1]!) ? m[1]! : value;
  }
  const colon = value.lastIndexOf(':');
  return colon >= 0 && /^\d*$/.test(value.slice(colon + 1)) ? value.slice(0, colon) : value;
}

export type HostVerdict = { allowed: true } | { allowed: false; name: string };

/**
 * May a request with this Host header be answered? No Host (HTTP/1.0 tools) and IP literals are
 * always answered: a browser sends the name it was pointed at, so neither can come from a
 * rebinding page.
 */
export function checkHost(header: string | undefined, allowed: readonly string[]): HostVerdict {
  if (header === undefined) return { allowed: true };
  const host = hostPart(header.trim());
  if (isIPv4(host) || isIPv6(host)) return { allowed: true };
  const name = canonicalHostName(host);
  if (allowed.includes(ANY_HOST) || allowed.includes(name)) return { allowed: true };
  return { allowed: false, name: host };
}
