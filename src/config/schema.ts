// The config file's structure, as a zod schema over the YAML's plain-JS value, and its mapping to
// the typed SplicegateConfig. The snake_case key names here are a contract: extend, never rename.
//
// All objects are strict: an unknown key is an error, because in a proxy config a typo such as
// "idle_timout" would otherwise silently fall back to the default.

import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { parseSocketAddress } from './address';
import { parseCidr } from './cidr';
import { ANY_HOST, canonicalHostName, HOST_NAME_RE } from './host-name';
import { bareNumberMessage, parseDuration } from './duration';
import { Parsed, showValue } from './parsed';
import { findYamlTypedValues, isAtOrBelow, yamlTypedMessage } from './yaml-types';
import { policySchema, toPolicyConfig } from './policy-schema';
import { checkAdminNotListener, checkHttpBlockMode, checkListenersUnique, checkOriginalSourceNotPreconnect, checkPortOverrideNotListener, checkUdpListeners } from './cross-checks';
import { closestMatch } from './suggest';
import type { HttpListenerConfig, SplicegateConfig } from './types';

export const MAX_WORKERS = 256;
export const MAX_BACKLOG = 65535;
export const MAX_UPSTREAM_MARK = 0xffffffff;
/** Listener names show up in logs and admin output; keep them to characters that need no quoting. */
export const LISTENER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Defaults as they would be written in the file (docs/CONFIG.md and `--help` quote these). */
export const DEFAULTS = {
  workers: 'auto',
  adminAddress: '127.0.0.1:9901',
  adminAllowedHosts: ['localhost'],
  mode: 'original_dst',
  transparent: false,
  backlog: 4096,
  connectTimeout: '5s',
  idleTimeout: '1h',
  cleanupInterval: '5s',
  upstreamMark: 0,
  maxHosts: 10000,
  maxConnections: 0,
  maxPending: 0,
  maxDownstreamConnections: 0,
  upstreamPortOverride: 0,
  drainTimeout: '10s',
  relayMode: 'auto',
  pipeSize: 0,
  copyBufferSize: 16384,
  driver: 'thread',
  recordLatency: true,
  proxyProtocolRequired: true,
  proxyProtocolTimeout: '3s',
  sendProxyProtocol: 'off',
  originalSource: false,
  httpHeaderName: 'x-envoy-original-dst-host',
  httpStripHeader: true,
  httpConnect: true,
  httpRequestHeadTimeout: '10s',
  httpMaxRequestHeadBytes: 65536,
  httpPoolMaxIdlePerHost: 16,
  httpPoolIdleTimeout: '60s',
  protocol: 'tcp',
  udpSessionTimeout: '60s',
  udpMaxSessionsPerWorker: 4096,
} as const;

/** Bound of cluster.udp_max_sessions_per_worker (each session holds one fd). */
export const MAX_UDP_SESSIONS_PER_WORKER = 1 << 20;

/** Bounds of listeners[].http.max_request_head_bytes: one small header block .. 1 MiB. */
export const MIN_REQUEST_HEAD_BYTES = 1024;
export const MAX_REQUEST_HEAD_BYTES = 1 << 20;
/** Bound of cluster.http_pool.max_idle_per_host (per worker share; 0 = keep no idle connection). */
export const MAX_IDLE_PER_HOST = 65536;

/** RFC 7230 token: the characters a header field name may have. */
const HEADER_TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Longest accepted header name; a name longer than this is a typo or an attack, not a header. */
export const MAX_HEADER_NAME_LENGTH = 256;

export const MAX_PIPE_SIZE = 1 << 20; // the kernel's default pipe-max-size for unprivileged users

/** A string field parsed by one of the scalar parsers; a parse failure becomes one zod issue. */
function parsedString<T>(parse: (text: string) => Parsed<T>, notAString: (input: unknown) => string) {
  return z.string({ error: (issue) => notAString(issue.input) }).transform((text, ctx) => {
    const result = parse(text);
    if (result.ok) return result.value;
    ctx.addIssue({ code: 'custom', message: result.message, input: text });
    return z.NEVER;
  });
}

const duration = parsedString(parseDuration, (input) =>
  typeof input === 'number'
    ? bareNumberMessage(input)
    : `expected a duration string like "250ms", "5s", "1m" or "1h", got ${showValue(input)}`,
);

const address = parsedString(
  parseSocketAddress,
  (input) => `expected "ip:port" or "[ipv6]:port" as a string, got ${showValue(input)}`,
);

const cidr = parsedString(
  parseCidr,
  (input) => `expected a CIDR string like "10.0.0.0/8" or "2001:db8::/32", got ${showValue(input)}`,
);

// A name the admin endpoint answers to besides IP literals (src/admin/host-check.ts), or "*".
const adminHostName = z
  .string({ error: (issue) => `expected a host name as a string, got ${showValue(issue.input)}` })
  .transform((text, ctx) => {
    if (text === ANY_HOST) return text;
    if (isIP(text) !== 0) {
      ctx.addIssue({ code: 'custom', message: `${text} is an IP address: those are always answered, list names only`, input: text });
      return z.NEVER;
    }
    if (!HOST_NAME_RE.test(text)) {
      ctx.addIssue({ code: 'custom', message: `expected a host name (letters, digits, "-" and ".") or "*", got ${showValue(text)}`, input: text });
      return z.NEVER;
    }
    return canonicalHostName(text);
  });

// Accepting a header lets the sender choose the client address and the original destination, so
// the trusted senders are always named: no default, no empty list (trust everyone only by
// writing "0.0.0.0/0" and "::/0"). The spec asks for a timeout of at least 3s, one TCP retransmit.
const proxyProtocol = z.strictObject({
  trusted_sources: z
    .array(cidr, { error: (issue) => (issue.input === undefined ? 'required: the CIDRs of the senders allowed to send a header' : undefined) })
    .min(1, { error: 'list at least one trusted source (a header lets its sender choose the client and destination addresses)' }),
  required: z.boolean().default(DEFAULTS.proxyProtocolRequired),
  timeout: duration.prefault(DEFAULTS.proxyProtocolTimeout),
});

// A header field name, lowercased: HTTP/1.1 names are case-insensitive, and the data plane
// compares one canonical form.
const headerName = z
  .string({ error: (issue) => `expected a header name as a string, got ${showValue(issue.input)}` })
  .transform((text, ctx) => {
    if (text.length === 0 || text.length > MAX_HEADER_NAME_LENGTH || !HEADER_TOKEN_RE.test(text)) {
      ctx.addIssue({
        code: 'custom',
        message: `expected a header name (an RFC 7230 token: letters, digits and !#$%&'*+-.^_\`|~, 1 to ${MAX_HEADER_NAME_LENGTH} characters), got ${showValue(text)}`,
        input: text,
      });
      return z.NEVER;
    }
    return text.toLowerCase();
  });

// The HTTP listener (docs/HTTP.md). Unlike PROXY protocol, an empty trusted_sources is allowed and
// is the default: the header is then honoured from nobody, and each request goes to its
// connection's original destination (validate and run warn about it, since it is rarely meant).
const httpListener = z.strictObject({
  header_name: headerName.prefault(DEFAULTS.httpHeaderName),
  trusted_sources: z.array(cidr).default([]),
  strip_header: z.boolean().default(DEFAULTS.httpStripHeader),
  connect: z.boolean().default(DEFAULTS.httpConnect),
  request_head_timeout: duration.prefault(DEFAULTS.httpRequestHeadTimeout),
  max_request_head_bytes: z
    .int({ error: (issue) => `expected a byte count from ${MIN_REQUEST_HEAD_BYTES} to ${MAX_REQUEST_HEAD_BYTES} (1 MiB), got ${showValue(issue.input)}` })
    .min(MIN_REQUEST_HEAD_BYTES)
    .max(MAX_REQUEST_HEAD_BYTES)
    .default(DEFAULTS.httpMaxRequestHeadBytes),
});

// The access log's file is opened by `run` after the listeners are up; checking here that it can be
// written makes `validate` (and a start) fail early with the path, instead of at the first line.
export const ACCESS_LOG_STDOUT = 'stdout';

function accessLogPathProblem(path: string): string | undefined {
  if (path === ACCESS_LOG_STDOUT) return undefined;
  if (path === '' || path.endsWith('/')) return `expected a file path or "stdout", got ${showValue(path)}`;
  const full = resolve(path);
  try {
    const st = statSync(full);
    if (st.isDirectory()) return `${full} is a directory; expected a file path or "stdout"`;
    // Opening a FIFO for writing waits for a reader: the main thread (admin, reload) would hang.
    if (st.isFIFO() || st.isSocket()) return `${full} is a ${st.isFIFO() ? 'FIFO' : 'socket'}; expected a regular file (or a device such as /dev/null) or "stdout"`;
  } catch {
    // Not there yet: it is created at start, in a directory that must exist and be writable.
  }
  const dir = dirname(full);
  try {
    if (!statSync(dir).isDirectory()) return `${dir} is not a directory`;
    accessSync(dir, fsConstants.W_OK);
  } catch (err) {
    const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
    return code === 'ENOENT' ? `directory ${dir} does not exist` : `directory ${dir} is not writable${code ? ` (${code})` : ''}`;
  }
  return undefined;
}

const accessLog = z.strictObject({
  path: z
    .string({ error: (issue) => (issue.input === undefined ? 'required: a file path or "stdout"' : `expected a file path or "stdout", got ${showValue(issue.input)}`) })
    .superRefine((path, ctx) => {
      const problem = accessLogPathProblem(path);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, input: path });
    }),
  format: z.enum(['json']).default('json'),
  sample: z
    .number({ error: (issue) => `expected a fraction from 0 to 1 (1 = every connection), got ${showValue(issue.input)}` })
    .min(0, { error: (issue) => `expected a fraction from 0 to 1 (1 = every connection), got ${showValue(issue.input)}` })
    .max(1, { error: (issue) => `expected a fraction from 0 to 1 (1 = every connection), got ${showValue(issue.input)}` })
    .default(1),
});

const workersMessage = (issue: { input?: unknown }): string =>
  `expected "auto" or an integer from 1 to ${MAX_WORKERS}, got ${showValue(issue.input)}`;
const workers = z.union(
  [
    z.literal('auto', { error: workersMessage }),
    z.int({ error: workersMessage }).min(1, { error: workersMessage }).max(MAX_WORKERS, { error: workersMessage }),
  ],
  { error: workersMessage },
);

const listener = z.strictObject({
  name: z.string().regex(LISTENER_NAME_RE, {
    error: (issue) =>
      `expected a name of letters, digits, "_", "." or "-" (at most 64, starting with a letter or digit), got ${showValue(issue.input)}`,
  }),
  address,
  mode: z.enum(['original_dst', 'http']).default(DEFAULTS.mode),
  // udp: TPROXY datagrams (checkUdpListeners: transparent, original_dst, no proxy_protocol).
  protocol: z.enum(['tcp', 'udp']).default(DEFAULTS.protocol),
  transparent: z.boolean().default(DEFAULTS.transparent),
  backlog: z
    .int({ error: (issue) => `expected an integer from 1 to ${MAX_BACKLOG}, got ${showValue(issue.input)}` })
    .min(1)
    .max(MAX_BACKLOG)
    .default(DEFAULTS.backlog),
  // Replaces the top-level policy for this listener (no merging: one place says what applies).
  policy: policySchema.optional(),
  proxy_protocol: proxyProtocol.optional(),
  // Only with mode: http (checkHttpBlockMode); omitted there = every default.
  http: httpListener.optional(),
});

const always = { when: () => true };

function countField(min: number, max: number) {
  return z.int({ error: (issue) => `expected an integer from ${min} to ${max}, got ${showValue(issue.input)}` }).min(min).max(max);
}

export const configFileSchema = z
  .strictObject({
    workers: workers.default(DEFAULTS.workers),
    admin: z
      .strictObject({
        address: address.prefault(DEFAULTS.adminAddress),
        allowed_hosts: z.array(adminHostName).default([...DEFAULTS.adminAllowedHosts]),
      })
      .prefault({}),
    listeners: z
      .array(listener, { error: (issue) => (issue.input === undefined ? 'required: at least one listener' : undefined) })
      .min(1, { error: 'at least one listener is required' })
      .superRefine(checkListenersUnique, always)
      .superRefine(checkHttpBlockMode, always)
      .superRefine(checkUdpListeners, always),
    // Destination policy (docs/POLICY.md); omitted = default allow with the special denies on.
    policy: policySchema.prefault({}),
    // prefault (not default): the empty object still goes through the schema, so the per-field
    // defaults below apply when the whole section is omitted.
    cluster: z
      .strictObject({
        connect_timeout: duration.prefault(DEFAULTS.connectTimeout),
        idle_timeout: duration.prefault(DEFAULTS.idleTimeout),
        cleanup_interval: duration.prefault(DEFAULTS.cleanupInterval),
        upstream_mark: z
          .int({ error: (issue) => `expected an integer from 0 to ${MAX_UPSTREAM_MARK} (0xffffffff), got ${showValue(issue.input)}` })
          .min(0)
          .max(MAX_UPSTREAM_MARK)
          .default(DEFAULTS.upstreamMark),
        max_hosts: countField(1, 10_000_000).default(DEFAULTS.maxHosts),
        max_connections: countField(0, 10_000_000).default(DEFAULTS.maxConnections),
        max_pending: countField(0, 10_000_000).default(DEFAULTS.maxPending),
        max_downstream_connections: countField(0, 10_000_000).default(DEFAULTS.maxDownstreamConnections),
        upstream_port_override: countField(0, 65535).default(DEFAULTS.upstreamPortOverride),
        // Off unless given: warm sockets are only safe for client-speaks-first protocols.
        preconnect: z
          .strictObject({
            ports: z.array(countField(1, 65535)).min(1, { error: 'list at least one destination port to preconnect to' }),
            per_host: countField(1, 64).default(1),
            ttl: duration.prefault('2s'),
          })
          .optional(),
        send_proxy_protocol: z.enum(['off', 'v1', 'v2']).default(DEFAULTS.sendProxyProtocol),
        // Bind upstream sockets to the client's IP (docs/CONFIG.md: needs return routing).
        original_source: z.boolean().default(DEFAULTS.originalSource),
        // Idle upstream keep-alive connections of HTTP listeners, per original host.
        http_pool: z
          .strictObject({
            max_idle_per_host: countField(0, MAX_IDLE_PER_HOST).default(DEFAULTS.httpPoolMaxIdlePerHost),
            idle_timeout: duration.prefault(DEFAULTS.httpPoolIdleTimeout),
          })
          .prefault({}),
        // UDP listeners' sessions (docs/CONFIG.md): idle timeout, and a per-worker cap (LRU).
        udp_session_timeout: duration.prefault(DEFAULTS.udpSessionTimeout),
        udp_max_sessions_per_worker: countField(1, MAX_UDP_SESSIONS_PER_WORKER).default(DEFAULTS.udpMaxSessionsPerWorker),
      })
      .prefault({}),
    drain_timeout: duration.prefault(DEFAULTS.drainTimeout),
    // Data-plane knobs; the defaults are what the benchmark chose. See docs/CONFIG.md.
    tuning: z
      .strictObject({
        relay_mode: z.enum(['auto', 'splice', 'copy']).default(DEFAULTS.relayMode),
        pipe_size: z
          .int({ error: (issue) => `expected a byte count from 0 (kernel default) to ${MAX_PIPE_SIZE}, got ${showValue(issue.input)}` })
          .min(0)
          .max(MAX_PIPE_SIZE)
          .default(DEFAULTS.pipeSize),
        copy_buffer_size: z
          .int({ error: (issue) => `expected a byte count from 1024 to 1048576, got ${showValue(issue.input)}` })
          .min(1024)
          .max(1 << 20)
          .default(DEFAULTS.copyBufferSize),
        driver: z.enum(['thread', 'uv']).default(DEFAULTS.driver),
        record_latency: z.boolean().default(DEFAULTS.recordLatency),
      })
      .prefault({}),
    // One JSON line per connection (docs/CONFIG.md); off when absent.
    access_log: accessLog.optional(),
  }, { error: (issue) => (issue.code === 'invalid_type' ? `expected a mapping of config keys, got ${showValue(issue.input)}` : undefined) })
  .superRefine(checkAdminNotListener, always)
  .superRefine(checkPortOverrideNotListener, always)
  .superRefine(checkOriginalSourceNotPreconnect, always);

export type ConfigFile = z.output<typeof configFileSchema>;

export interface SchemaProblem {
  segments: PropertyKey[];
  message: string;
  /** The problem is the key itself (unknown key), not its value. */
  atKey?: boolean;
}

export type Validated = { ok: true; config: SplicegateConfig } | { ok: false; problems: SchemaProblem[] };

/** Validate the plain-JS value of a config document; every problem is returned, not the first. */
export function validateConfigValue(value: unknown): Validated {
  const typed = findYamlTypedValues(value);
  const result = configFileSchema.safeParse(value, { error: genericMessage });
  if (result.success && typed.length === 0) return { ok: true, config: toSplicegateConfig(result.data) };
  // A YAML-typed value is one problem at its own path; what the schema made of it (nothing, or
  // unknown keys "0", "1" for binary data) is left out.
  const schemaProblems = result.success ? [] : withoutRepeats(result.error.issues.flatMap(toProblems));
  return {
    ok: false,
    problems: [
      ...typed.map((t): SchemaProblem => ({ segments: t.segments, message: yamlTypedMessage(t.shown) })),
      ...schemaProblems.filter((p) => !typed.some((t) => isAtOrBelow(p.segments, t.segments))),
    ],
  };
}

/**
 * One problem per path and message: zod reports a number beyond the safe integers twice (the int
 * check and the range check), in the same words.
 */
function withoutRepeats(problems: SchemaProblem[]): SchemaProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = JSON.stringify([p.segments.map(String), p.message, p.atKey === true]);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** snake_case file form -> camelCase typed config; "auto" workers resolved here. */
export function toSplicegateConfig(file: ConfigFile): SplicegateConfig {
  return {
    workers: file.workers === 'auto' ? autoWorkers() : file.workers,
    admin: { address: file.admin.address, allowedHosts: file.admin.allowed_hosts },
    listeners: file.listeners.map((l) => ({
      name: l.name,
      address: l.address,
      mode: l.mode,
      protocol: l.protocol,
      transparent: l.transparent,
      backlog: l.backlog,
      policy: l.policy === undefined ? null : toPolicyConfig(l.policy),
      proxyProtocol: l.proxy_protocol
        ? { trustedSources: l.proxy_protocol.trusted_sources, required: l.proxy_protocol.required, timeoutMs: l.proxy_protocol.timeout }
        : null,
      ...(l.mode === 'http' ? { http: toHttpListenerConfig(l.http) } : {}),
    })),
    policy: toPolicyConfig(file.policy),
    cluster: {
      connectTimeoutMs: file.cluster.connect_timeout,
      idleTimeoutMs: file.cluster.idle_timeout,
      cleanupIntervalMs: file.cluster.cleanup_interval,
      upstreamMark: file.cluster.upstream_mark,
      maxHosts: file.cluster.max_hosts,
      maxConnectionsPerHost: file.cluster.max_connections,
      maxPendingPerHost: file.cluster.max_pending,
      maxDownstreamConnections: file.cluster.max_downstream_connections,
      upstreamPortOverride: file.cluster.upstream_port_override,
      preconnect: file.cluster.preconnect
        ? { ports: file.cluster.preconnect.ports, perHost: file.cluster.preconnect.per_host, ttlMs: file.cluster.preconnect.ttl }
        : null,
      sendProxyProtocol: file.cluster.send_proxy_protocol,
      originalSource: file.cluster.original_source,
      httpPool: { maxIdlePerHost: file.cluster.http_pool.max_idle_per_host, idleTimeoutMs: file.cluster.http_pool.idle_timeout },
      udpSessionTimeoutMs: file.cluster.udp_session_timeout,
      udpMaxSessionsPerWorker: file.cluster.udp_max_sessions_per_worker,
    },
    drainTimeoutMs: file.drain_timeout,
    tuning: {
      relayMode: file.tuning.relay_mode,
      pipeSize: file.tuning.pipe_size,
      copyBufferSize: file.tuning.copy_buffer_size,
      driver: file.tuning.driver,
      recordLatency: file.tuning.record_latency,
    },
    accessLog: file.access_log
      ? {
          path: file.access_log.path === ACCESS_LOG_STDOUT ? ACCESS_LOG_STDOUT : resolve(file.access_log.path),
          format: file.access_log.format,
          sample: file.access_log.sample,
        }
      : null,
  };
}

// mode: http without an http: block takes every default; run it through the schema so the
// defaults stay in one place.
function toHttpListenerConfig(block: z.output<typeof httpListener> | undefined): HttpListenerConfig {
  const b = block ?? httpListener.parse({});
  return {
    headerName: b.header_name,
    trustedSources: b.trusted_sources,
    stripHeader: b.strip_header,
    connect: b.connect,
    requestHeadTimeoutMs: b.request_head_timeout,
    maxRequestHeadBytes: b.max_request_head_bytes,
  };
}

/** One worker per CPU this process may use (cgroup/affinity aware), within the allowed range. */
export function autoWorkers(): number {
  return Math.min(Math.max(availableParallelism(), 1), MAX_WORKERS);
}

// zod reports all unknown keys of one object as a single issue at the object's path; split it so
// each key gets its own problem at its own path ("listeners[0].bakclog"), with a suggestion.
function toProblems(issue: z.core.$ZodIssue): SchemaProblem[] {
  if (issue.code !== 'unrecognized_keys') return [{ segments: [...issue.path], message: issue.message }];
  const allowed = allowedKeysAt(issue.path);
  return issue.keys.map((key) => {
    const guess = closestMatch(key, allowed);
    const hint = guess !== undefined ? `did you mean "${guess}"?` : `expected one of: ${allowed.join(', ')}`;
    return { segments: [...issue.path, key], message: `unknown key ${showValue(key)} (${hint})`, atKey: true };
  });
}

/** The keys the schema accepts for the object at `path` (walking through defaults and arrays). */
function allowedKeysAt(path: readonly PropertyKey[]): string[] {
  let schema: z.core.$ZodType | undefined = unwrap(configFileSchema);
  for (const segment of path) {
    if (schema instanceof z.ZodObject && typeof segment === 'string') schema = unwrap(schema.shape[segment]);
    else if (schema instanceof z.ZodArray && typeof segment === 'number') schema = unwrap(schema.element);
    else return [];
  }
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
}

function unwrap(schema: z.core.$ZodType | undefined): z.core.$ZodType | undefined {
  let current = schema;
  for (;;) {
    if (current instanceof z.ZodDefault || current instanceof z.ZodPrefault || current instanceof z.ZodOptional) {
      current = current.unwrap();
    } else if (current instanceof z.ZodPipe) {
      current = current.in;
    } else {
      return current;
    }
  }
}

const TYPE_NAMES: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
};

/** Fallback wording for issues whose schema has no message of its own: "expected X, got Y". */
function genericMessage(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return 'required';
      return `expected ${TYPE_NAMES[issue.expected] ?? issue.expected}, got ${showValue(issue.input)}`;
    case 'too_small':
      if (issue.origin === 'array') return `expected at least ${String(issue.minimum)} item(s)`;
      return `must be at least ${String(issue.minimum)}, got ${showValue(issue.input)}`;
    case 'too_big':
      if (issue.origin === 'array') return `expected at most ${String(issue.maximum)} item(s)`;
      return `must be at most ${String(issue.maximum)}, got ${showValue(issue.input)}`;
    case 'invalid_value':
      if (issue.input === undefined) return 'required';
      return `expected ${issue.values.map((v) => showValue(v)).join(' or ')}, got ${showValue(issue.input)}`;
    default:
      return undefined;
  }
}
