// Flags of `splicegate iptables` turned into one checked RuleOptions. Every mistake is an
// IptablesUsageError (the CLI maps it to exit 2) raised before any command runs, so a bad flag can
// never leave half a rule set behind.

import type { SplicegateConfig } from '../config/types';

export type Mode = 'redirect' | 'tproxy';
export type Topology = 'gateway' | 'sidecar';

export type Protocol = 'tcp' | 'udp';

export interface RuleOptions {
  mode: Mode;
  /** udp: UDP datagrams to a protocol: udp listener (tproxy only), in the chain SPLICEGATE-UDP. */
  protocol: Protocol;
  topology: Topology;
  /** The splicegate listener the rules send connections to. */
  port: number;
  /** IPv4 always; IPv6 (ip6tables, ip -6) as well with --ipv6. */
  families: Array<4 | 6>;
  /** Connections carrying this mark (splicegate's cluster.upstream_mark) are left alone; 0 = none. */
  excludeMark: number;
  /** Connections of this user (the proxy's) are left alone (sidecar only). */
  excludeUid: string | undefined;
  /** Only this user's connections are caught (sidecar only; the seed article's --uid-owner rule). */
  onlyUid: string | undefined;
  /** Destination ports as iptables writes them ("80", "8000:8100"); empty = every port (of `protocol`). */
  dports: string[];
  /** gateway: the client-facing interface (-i); sidecar: the outgoing one (-o). */
  iface: string | undefined;
  /** tproxy: mark the TPROXY target sets and the ip rule matches. */
  tproxyMark: number;
  /** tproxy: routing table holding the "local default dev lo" route. */
  routeTable: number;
}

export class IptablesUsageError extends Error {}

/** The raw flag values the CLI parsed (strings, booleans for switches). */
export interface RawFlags {
  mode?: string | undefined;
  protocol?: string | undefined;
  topology?: string | undefined;
  port?: string | undefined;
  ipv6?: boolean | undefined;
  excludeUid?: string | undefined;
  excludeMark?: string | undefined;
  onlyUid?: string | undefined;
  dports?: string | undefined;
  iface?: string | undefined;
  tproxyMark?: string | undefined;
  routeTable?: string | undefined;
}

export const DEFAULT_TPROXY_MARK = 0x1;
export const DEFAULT_ROUTE_TABLE = 100;
/** iptables' multiport match takes at most 15 ports (a range counts twice). */
const MULTIPORT_MAX = 15;

/**
 * Check the flags (and take port and mark from `config` where the flags do not give them).
 * `forInstall` is false for uninstall, which removes the chains whatever they held: it needs
 * neither a port nor an exclusion.
 */
export function resolveOptions(flags: RawFlags, config: SplicegateConfig | undefined, forInstall = true): RuleOptions {
  const mode = oneOf('mode', flags.mode ?? 'redirect', ['redirect', 'tproxy'] as const);
  const topology = oneOf('topology', flags.topology ?? 'gateway', ['gateway', 'sidecar'] as const);
  if (mode === 'tproxy' && topology === 'sidecar') {
    throw new IptablesUsageError('--mode tproxy works with --topology gateway only (TPROXY catches forwarded traffic); use --mode redirect for a sidecar');
  }
  const protocol = oneOf('protocol', flags.protocol ?? 'tcp', ['tcp', 'udp'] as const);
  if (protocol === 'udp' && mode !== 'tproxy') {
    throw new IptablesUsageError('--protocol udp needs --mode tproxy (UDP has no REDIRECT original destination splicegate can read)');
  }
  const port = flags.port !== undefined ? portNumber('--port', flags.port) : portFromConfig(config, mode, protocol);
  if (port === undefined && forInstall) throw new IptablesUsageError("needs --port PORT (or --config FILE with the listener's address)");
  const families: Array<4 | 6> = flags.ipv6 === true ? [4, 6] : [4];
  if (forInstall && flags.port === undefined && config !== undefined && port !== undefined) {
    // IPv6 listeners are V6ONLY: each family caught needs its own listener, or its connects are refused.
    for (const family of families) {
      if (!config.listeners.some((l) => l.address.family === family && l.address.port === port && l.transparent === (mode === 'tproxy') && l.protocol === protocol)) {
        throw new IptablesUsageError(
          `the config has no IPv${family}${protocol === 'udp' ? ' UDP' : ''} listener on port ${port}: IPv${family} connections sent there would be refused${family === 6 ? ' (add one, e.g. "[::]:' + port + '", or leave out --ipv6)' : ''}`,
        );
      }
    }
  }
  const excludeMark = flags.excludeMark !== undefined ? markNumber('--exclude-mark', flags.excludeMark) : (config?.cluster.upstreamMark ?? 0);
  const excludeUid = flags.excludeUid === undefined ? undefined : user('--exclude-uid', flags.excludeUid);
  const onlyUid = flags.onlyUid === undefined ? undefined : user('--only-uid', flags.onlyUid);
  if (topology === 'gateway' && (excludeUid !== undefined || onlyUid !== undefined)) {
    // The owner match only sees locally generated packets: on a gateway it would match nothing.
    throw new IptablesUsageError('--exclude-uid and --only-uid apply to --topology sidecar only (a gateway catches traffic that arrives from other hosts)');
  }
  if (forInstall && topology === 'sidecar' && excludeMark === 0 && excludeUid === undefined) {
    throw new IptablesUsageError(
      "a sidecar install needs a loop exclusion: --exclude-mark MARK (splicegate's cluster.upstream_mark, or --config FILE that sets it) or --exclude-uid USER (the user splicegate runs as); without one splicegate's own upstream connects are redirected back to it",
    );
  }
  if (excludeUid !== undefined && onlyUid !== undefined && excludeUid === onlyUid) {
    throw new IptablesUsageError('--only-uid and --exclude-uid name the same user: nothing would be redirected');
  }
  const tproxyMark = flags.tproxyMark === undefined ? DEFAULT_TPROXY_MARK : markNumber('--tproxy-mark', flags.tproxyMark);
  if (mode === 'tproxy' && tproxyMark === 0) throw new IptablesUsageError('--tproxy-mark must not be 0');
  if (mode === 'tproxy' && excludeMark !== 0 && (excludeMark & tproxyMark) !== 0) {
    throw new IptablesUsageError(`--tproxy-mark 0x${tproxyMark.toString(16)} overlaps the excluded mark 0x${excludeMark.toString(16)}: pick bits the other does not use`);
  }
  const routeTable = flags.routeTable === undefined ? DEFAULT_ROUTE_TABLE : tableNumber(flags.routeTable);
  return {
    mode,
    protocol,
    topology,
    port: port ?? 0,
    families,
    excludeMark,
    excludeUid,
    onlyUid,
    dports: flags.dports === undefined ? [] : portList(flags.dports),
    iface: flags.iface === undefined ? undefined : interfaceName(flags.iface),
    tproxyMark,
    routeTable,
  };
}

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  const found = allowed.find((a) => a === value);
  if (found === undefined) throw new IptablesUsageError(`--${flag} must be ${allowed.join(' or ')}, got '${value}'`);
  return found;
}

function portNumber(flag: string, text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new IptablesUsageError(`${flag} expects a port 1-65535, got '${text}'`);
  }
  return Number(text);
}

/** The listener the rules should feed: transparent ones for tproxy, the others for redirect; of the protocol. */
function portFromConfig(config: SplicegateConfig | undefined, mode: Mode, protocol: Protocol): number | undefined {
  if (config === undefined) return undefined;
  const fitting = config.listeners.filter((l) => l.transparent === (mode === 'tproxy') && l.protocol === protocol);
  const ports = [...new Set(fitting.map((l) => l.address.port))];
  if (ports.length === 1) return ports[0];
  const kind = `${mode === 'tproxy' ? 'transparent' : 'non-transparent'}${protocol === 'udp' ? ' UDP' : ''}`;
  if (ports.length === 0) throw new IptablesUsageError(`the config has no ${kind} listener for --mode ${mode}: give --port`);
  throw new IptablesUsageError(`the config's ${kind} listeners use ports ${ports.join(', ')}: choose one with --port`);
}

function markNumber(flag: string, text: string): number {
  const value = /^0x[0-9a-f]{1,8}$/i.test(text) ? parseInt(text.slice(2), 16) : /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(value) || value > 0xffffffff) throw new IptablesUsageError(`${flag} expects a mark (decimal or 0x hex, 32 bits), got '${text}'`);
  return value;
}

function tableNumber(text: string): number {
  // 253-255 are the kernel's default/main/local tables; 0 is "unspec".
  if (!/^\d{1,10}$/.test(text) || Number(text) < 1 || Number(text) > 0xffffffff || [253, 254, 255].includes(Number(text))) {
    throw new IptablesUsageError(`--route-table expects a table number other than 0 and 253-255 (default, main, local), got '${text}'`);
  }
  return Number(text);
}

function user(flag: string, text: string): string {
  // A uid, or a user name as useradd accepts it: iptables resolves names itself.
  if (/^\d{1,10}$/.test(text) || /^[a-z_][a-z0-9_-]{0,31}\$?$/i.test(text)) return text;
  throw new IptablesUsageError(`${flag} expects a uid or a user name, got '${text}'`);
}

function portList(text: string): string[] {
  const items = text.split(',').map((s) => s.trim());
  const out: string[] = [];
  let slots = 0;
  for (const item of items) {
    const m = /^(\d{1,5})(?:[:-](\d{1,5}))?$/.exec(item);
    const first = m === null ? NaN : Number(m[1]);
    const last = m === null ? NaN : m[2] === undefined ? first : Number(m[2]);
    if (!(first >= 1 && first <= 65535 && last >= first && last <= 65535)) {
      throw new IptablesUsageError(`--dports expects ports or ranges like 80,443,8000-8100 (1-65535), got '${item}'`);
    }
    out.push(first === last ? String(first) : `${first}:${last}`);
    slots += first === last ? 1 : 2;
  }
  if (slots > MULTIPORT_MAX) throw new IptablesUsageError(`--dports: at most ${MULTIPORT_MAX} ports (a range counts as two), got ${slots}`);
  return out;
}

function interfaceName(text: string): string {
  // Linux names are at most 15 bytes; iptables takes a trailing '+' as a wildcard.
  if ((/^[A-Za-z0-9_.@:-]{1,15}\+?$/.test(text) && !text.startsWith('-')) || text === '+') return text;
  throw new IptablesUsageError(`--interface expects an interface name (at most 15 characters, '+' wildcard at the end), got '${text}'`);
}
