// The admin HTTP endpoint (loopback by default): readiness and stats for operators, probes and
// scrapers. It only reads what the supervisor hands it; it never blocks on the data plane.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { AdminStats, type AdminStatName } from './admin-stats';
import type { SocketAddress } from '../config/types';
import type { CounterValues } from '../stats/counters';
import { hostsText, type HostView } from '../stats/hosts';
import { prometheusText } from '../stats/prometheus';
import { latencyResponse, renderPrometheusHistograms } from '../latency/latency-views';
import { sharedCollect, type LatencySource } from '../latency/source';
import type { Logger } from '../util/logger';
import { acceptsHtml } from './dashboard/negotiate';
import { sendDashboard } from './dashboard/page';
import type { ServerInfo } from './server-info';
import { checkHost } from './host-check';

/** The config generation serving, as /ready shows it (docs/OPERATIONS.md, reload). */
export interface AdminGeneration {
  number: number;
  source: string;
  loadedAt: string;
}

export interface AdminState {
  /** Ready = every worker listens and no drain has begun. */
  readiness(): { ready: boolean; detail: string; generation?: AdminGeneration };
  /** POST /reload: re-read the config file; the answer's status and JSON body. */
  reload?: () => Promise<{ status: number; body: unknown }>;
  counters(): Promise<CounterValues>;
  hosts(): Promise<HostView[]>;
  latency: LatencySource;
  /** Reopens the access log's file (logrotate); false when there is no access log. */
  reopenLogs?: () => boolean;
  /** GET /server_info (the dashboard's header and listeners); the route exists when this does. */
  serverInfo?: () => ServerInfo;
  /** `admin.allowed_hosts` of the config in force (a reload changes it): src/admin/host-check.ts. */
  allowedHosts(): readonly string[];
  /** Present only when test hooks are enabled. */
  crashWorker?: (id: number) => boolean;
}

export interface AdminServer {
  /** "ip:port" as bound. */
  address: string;
  port: number;
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, query: URLSearchParams) => Promise<void> | void;

function reply(res: ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  // Already answered (e.g. 413 while a handler was still awaiting its data): the first answer stands.
  if (res.headersSent) return;
  // nosniff: some answers echo the request (a path, a format) and must stay text to a browser.
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(body);
}

function statsText(values: CounterValues): string {
  return Object.entries(values)
    .map(([name, value]) => `${name}: ${value}`)
    .join('\n') + '\n';
}

function routes(state: AdminState, adminStats: AdminStats): Map<string, { method: string; handler: Handler }> {
  const table = new Map<string, { method: string; handler: Handler }>();
  // The dashboard reads /latency?format=json and ?format=plots together: one collect serves both.
  const latency = sharedCollect(state.latency);
  table.set('/', {
    method: 'GET',
    // A browser gets the dashboard; curl (Accept: */*) and scripts keep the plain route list.
    handler: (req, res) => (acceptsHtml(req.headers.accept) ? sendDashboard(res) : reply(res, 200, [...table.keys()].join('\n') + '\n')),
  });
  table.set('/ready', {
    method: 'GET',
    handler: (_req, res, query) => {
      const { ready, detail, generation: g } = state.readiness();
      const format = query.get('format');
      if (format === 'json') {
        const generation = g ? { config_generation: g.number, config_file: g.source, config_loaded_at: g.loadedAt } : {};
        reply(res, ready ? 200 : 503, JSON.stringify({ ready, detail, ...generation }) + '\n', 'application/json');
      } else if (format === null || format === 'text') {
        const line = g ? `config_generation ${g.number} ${g.source} ${g.loadedAt}\n` : '';
        reply(res, ready ? 200 : 503, detail + '\n' + line);
      } else reply(res, 400, `unknown format "${format}" (use json or text)\n`);
    },
  });
  if (state.reload) {
    const reload = state.reload;
    table.set('/reload', {
      method: 'POST',
      handler: async (_req, res) => {
        const r = await reload();
        reply(res, r.status, JSON.stringify(r.body, null, 2) + '\n', 'application/json');
      },
    });
  }
  table.set('/stats', {
    method: 'GET',
    handler: async (_req, res, query) => {
      const values = { ...(await state.counters()), ...adminStats.snapshot() };
      const format = query.get('format');
      if (format === 'json') reply(res, 200, JSON.stringify(values, null, 2) + '\n', 'application/json');
      else if (format === null || format === 'text') reply(res, 200, statsText(values));
      else reply(res, 400, `unknown format "${format}" (use json or text)\n`);
    },
  });
  table.set('/stats/prometheus', {
    method: 'GET',
    handler: async (_req, res) => {
      const [dataPlane, histograms] = await Promise.all([state.counters(), renderPrometheusHistograms(latency)]);
      const counters = { ...dataPlane, ...adminStats.snapshot() };
      reply(res, 200, prometheusText(counters, [histograms]), 'text/plain; version=0.0.4; charset=utf-8');
    },
  });
  table.set('/latency', {
    method: 'GET',
    handler: async (_req, res, query) => {
      const r = await latencyResponse(latency, query.get('format'));
      reply(res, r.status, r.body, r.contentType);
    },
  });
  table.set('/clusters', {
    method: 'GET',
    handler: async (_req, res, query) => {
      const hosts = await state.hosts();
      const format = query.get('format');
      if (format === 'json') reply(res, 200, JSON.stringify({ cluster: 'original_dst', hosts }, null, 2) + '\n', 'application/json');
      else if (format === null || format === 'text') reply(res, 200, hostsText(hosts));
      else reply(res, 400, `unknown format "${format}" (use json or text)\n`);
    },
  });
  // logrotate's postrotate: `curl -X POST http://127.0.0.1:9901/logs/reopen` (docs/OPERATIONS.md).
  if (state.reopenLogs) {
    const reopen = state.reopenLogs;
    table.set('/logs/reopen', {
      method: 'POST',
      handler: (_req, res) => {
        if (reopen()) reply(res, 200, 'access log reopened\n');
        else reply(res, 404, 'no access_log in the config\n');
      },
    });
  }
  if (state.serverInfo) {
    const info = state.serverInfo;
    table.set('/server_info', {
      method: 'GET',
      handler: (_req, res) => reply(res, 200, JSON.stringify(info(), null, 2) + '\n', 'application/json'),
    });
  }
  if (state.crashWorker) {
    const crash = state.crashWorker;
    table.set('/debug/crash-worker', {
      method: 'POST',
      handler: (_req, res, query) => {
        const id = Number(query.get('id'));
        if (!Number.isInteger(id) || !crash(id)) reply(res, 404, `no listening worker ${query.get('id')}\n`);
        else reply(res, 202, `worker ${id} crashing\n`);
      },
    });
  }
  return table;
}

/**
 * Bounds on the admin server, so that no number or shape of admin requests can stop the process or
 * take the data plane's fds: connections over the cap are closed at accept, slow or silent clients
 * are cut at the header/request timeouts, and bodies (no route takes one) are refused over a few KiB.
 */
export interface AdminLimits {
  maxConnections: number;
  /** Complete headers must arrive within this (also covers a connection that sends nothing). */
  headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this. */
  requestTimeoutMs: number;
  /** How often Node checks the two timeouts above: they fire up to this late. */
  timeoutCheckMs: number;
  keepAliveTimeoutMs: number;
  maxHeaderBytes: number;
  maxBodyBytes: number;
  /**
   * Pipelined requests a connection may have waiting behind the one being answered; one more
   * closes the connection. A connection's requests are answered one at a time, in order.
   */
  maxPipelined: number;
}

export const ADMIN_LIMITS: Readonly<AdminLimits> = {
  maxConnections: 64,
  headersTimeoutMs: 5000,
  requestTimeoutMs: 10000,
  timeoutCheckMs: 1000,
  keepAliveTimeoutMs: 5000,
  maxHeaderBytes: 8192,
  maxBodyBytes: 4096,
  maxPipelined: 16,
};

/**
 * One connection's requests, handled one at a time. Node's HTTP server starts the handler of every
 * pipelined request as soon as it is parsed, so one connection that wrote 20,000 requests in one go
 * had thousands of handlers awaiting the workers together (and the process grew by gigabytes):
 * the connection cap bounded connections, not the work they ask for.
 */
interface ConnectionTurns {
  busy: boolean;
  waiting: Array<() => void>;
  closed: boolean;
}

// Node's own answers for parser errors, kept: only the counting is ours.
function clientErrorStatus(code: string | undefined): { status: number; text: string; stat: AdminStatName } {
  if (code === 'HPE_HEADER_OVERFLOW') return { status: 431, text: 'Request Header Fields Too Large', stat: 'admin_rq_too_large' };
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return { status: 408, text: 'Request Timeout', stat: 'admin_rq_timeout' };
  return { status: 400, text: 'Bad Request', stat: 'admin_rq_bad' };
}

/**
 * A POST sent by a web page: a page open in a browser on the host can send a "simple" POST to
 * 127.0.0.1:9901 without a preflight (or, by DNS rebinding, from a name that resolves there).
 * Browsers mark every such request with Origin or Sec-Fetch-Site; curl, systemd's ExecReload and
 * logrotate send neither, and the dashboard only GETs. So a POST carrying them is refused.
 */
function fromWebPage(req: IncomingMessage): boolean {
  const site = req.headers['sec-fetch-site'];
  return req.headers['origin'] !== undefined || (site !== undefined && site !== 'none');
}

function hostLines(req: IncomingMessage): number {
  let n = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]!.toLowerCase() === 'host') n += 1;
  return n;
}

/** A request target as routed: its path and query, and the authority of an absolute-form one. */
interface RequestTarget {
  url: URL;
  authority?: string;
}

/**
 * Reads the request target, client input: origin-form ("/path?query", "//x" a path too) and
 * absolute-form ("http://host:port/path", what a client sends to a proxy). Anything else (the
 * authority-form of CONNECT, "*", "http://[" that new URL() throws on) is undefined: a 400.
 */
function parseTarget(raw: string): RequestTarget | undefined {
  try {
    if (raw.startsWith('/')) return { url: new URL(`http://admin.invalid${raw}`) };
    if (!/^https?:\/\//i.test(raw)) return undefined;
    const url = new URL(raw);
    return url.host === '' ? undefined : { url, authority: url.host };
  } catch {
    return undefined;
  }
}

/** Declared body length over the limit; chunked bodies are counted as they arrive instead. */
function declaredBodyTooLarge(req: IncomingMessage, max: number): boolean {
  const length = req.headers['content-length'];
  return length !== undefined && Number(length) > max;
}

export function startAdminServer(
  address: SocketAddress,
  state: AdminState,
  log: Logger,
  stats: AdminStats = new AdminStats(),
  limits: Readonly<AdminLimits> = ADMIN_LIMITS,
): Promise<AdminServer> {
  const table = routes(state, stats);
  const refuseTooLarge = (res: ServerResponse): void => {
    stats.inc('admin_rq_too_large');
    // The unread body is not drained: close the connection after the answer instead.
    res.setHeader('connection', 'close');
    reply(res, 413, `request body over ${limits.maxBodyBytes} bytes\n`);
  };
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    stats.inc('admin_rq_total');
    const target = parseTarget(req.url ?? '/');
    if (target === undefined) {
      stats.inc('admin_rq_bad');
      res.setHeader('connection', 'close');
      return reply(res, 400, 'bad request target\n');
    }
    if (declaredBodyTooLarge(req, limits.maxBodyBytes)) return refuseTooLarge(res);
    const dispatch = (): void => route(req, res, target);
    // No route takes a body, but one may come (chunked, or a small declared one): count it as it
    // arrives, refuse it once over the limit, and route only after it ended.
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if (!hasBody) return dispatch();
    let bodyBytes = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      bodyBytes += chunk.length;
      if (bodyBytes > limits.maxBodyBytes && !refused) {
        refused = true;
        refuseTooLarge(res);
      }
    });
    req.on('end', () => {
      if (!refused) dispatch();
    });
  };
  const route = (req: IncomingMessage, res: ServerResponse, { url, authority }: RequestTarget): void => {
    // Node keeps the first Host line and drops the others; RFC 9112 3.2 makes more than one a 400.
    if (hostLines(req) > 1) {
      stats.inc('admin_rq_bad');
      res.setHeader('connection', 'close');
      return reply(res, 400, 'more than one Host header\n');
    }
    // RFC 9112 3.2.2: an absolute-form target's authority stands in for Host, so it is what a
    // rebinding page could name there; it is checked the same way.
    const host = checkHost(authority ?? req.headers.host, state.allowedHosts());
    if (!host.allowed) {
      stats.inc('admin_rq_refused');
      return reply(
        res,
        403,
        `host "${host.name}" is not in admin.allowed_hosts: this endpoint answers IP addresses and the names listed there ` +
          `(a web page could otherwise read it through DNS rebinding)\n`,
      );
    }
    const entry = table.get(url.pathname);
    if (!entry) return reply(res, 404, `not found: ${url.pathname}\n`);
    if (req.method !== entry.method && !(entry.method === 'GET' && req.method === 'HEAD')) {
      res.setHeader('allow', entry.method);
      return reply(res, 405, `method ${req.method} not allowed on ${url.pathname}\n`);
    }
    if (entry.method === 'POST' && fromWebPage(req)) {
      stats.inc('admin_rq_refused');
      return reply(res, 403, `POST ${url.pathname} from a web page refused (Origin / Sec-Fetch-Site): it is for curl, systemctl and logrotate\n`);
    }
    Promise.resolve()
      .then(() => entry.handler(req, res, url.searchParams))
      .catch((err: unknown) => {
        log.error('admin request failed', { path: url.pathname, error: err instanceof Error ? err.message : String(err) });
        if (!res.headersSent) reply(res, 500, 'internal error\n');
      });
  };
  const turns = new WeakMap<Socket, ConnectionTurns>();
  const handleSafely = (req: IncomingMessage, res: ServerResponse): void => {
    try {
      handle(req, res);
    } catch (err) {
      // Nothing a request carries may end the process: a bug here costs one 500, not the proxy.
      log.error('admin request failed', { error: err instanceof Error ? err.message : String(err) });
      if (!res.headersSent) reply(res, 500, 'internal error\n');
    }
  };
  const takeTurn = (req: IncomingMessage, res: ServerResponse): void => {
    const socket = req.socket;
    let t = turns.get(socket);
    if (t === undefined) {
      t = { busy: false, waiting: [], closed: false };
      turns.set(socket, t);
    }
    const own = t;
    if (own.closed) return;
    const run = (): void => {
      // 'close' follows the answer's end, or the connection's loss: either way the next may go.
      res.once('close', () => {
        const next = socket.destroyed ? undefined : own.waiting.shift();
        if (next) next();
        else own.busy = false;
      });
      handleSafely(req, res);
    };
    if (!own.busy) {
      own.busy = true;
      return run();
    }
    if (own.waiting.length >= limits.maxPipelined) {
      // Far more requests than any client waits for: the connection is closed, and what it still
      // had waiting is never handled.
      own.closed = true;
      own.waiting = [];
      stats.inc('admin_cx_pipeline_overflow');
      socket.destroy();
      return;
    }
    own.waiting.push(run);
  };
  const server: Server = createServer(
    {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      connectionsCheckingInterval: limits.timeoutCheckMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
    },
    takeTurn,
  );
  server.maxConnections = limits.maxConnections;
  // A client may half-close right after its request (`nc -N`, socat, some health checkers): legal
  // HTTP/1.1, and it still reads the answer. By default Node's HTTP server answers that FIN by
  // aborting the request and ending the socket, so every route that awaits the workers (/stats,
  // /clusters, /latency, /reload) lost its answer. With this flag Node sends the pending answer and
  // then ends the socket (lib/_http_server.js socketOnEnd). It has no documented equivalent in
  // Node 20; the headers/request timeouts still bound a client that never finishes its request.
  (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  server.on('drop', () => stats.inc('admin_cx_overflow'));
  server.on('connection', (socket: Socket) => {
    stats.inc('admin_cx_active');
    socket.once('close', () => stats.inc('admin_cx_active', -1));
  });
  // CONNECT (and an Upgrade Node hands over raw) has no route here. Without a listener Node just
  // drops the socket, leaving the client with no answer; say 405 like any other refused method.
  const refuseRaw = (req: IncomingMessage, socket: Duplex): void => {
    stats.inc('admin_rq_total');
    stats.inc('admin_rq_bad');
    socket.end(`HTTP/1.1 405 Method Not Allowed\r\nallow: GET, POST\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    setTimeout(() => socket.destroy(), 1000).unref();
    req.resume();
  };
  server.on('connect', refuseRaw);
  server.on('upgrade', refuseRaw);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // A reset or an abort is the client leaving, not a bad request.
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const { status, text, stat } = clientErrorStatus(err.code);
    stats.inc(stat);
    socket.end(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    // The server is half-open capable, so end() alone waits for the client's FIN; a client that
    // never sends one must not keep the fd.
    setTimeout(() => socket.destroy(), 1000).unref();
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      // Name the admin address so "address in use" says which of our sockets collided.
      const e = err as NodeJS.ErrnoException & { context?: string };
      e.context = `admin ${address.text}`;
      reject(e);
    });
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => log.error('admin server error', { error: err.message }));
      // The bound port (the config may say 0 in tests) in the config's canonical text form.
      const bound = server.address();
      const port = bound !== null && typeof bound === 'object' ? bound.port : address.port;
      resolve({
        address: address.family === 6 ? `[${address.host}]:${port}` : `${address.host}:${port}`,
        port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
