// The admin HTTP endpoint (loopback by default): readiness and stats for operators, probes and
// scrapers. It only reads what the supervisor hands it; it never blocks on the data plane.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { SocketAddress } from '../config/types';
import type { CounterValues } from '../stats/counters';
import { hostsText, type HostView } from '../stats/hosts';
import { prometheusText } from '../stats/prometheus';
import { latencyResponse, renderPrometheusHistograms } from '../latency/latency-views';
import type { LatencySource } from '../latency/source';
import type { Logger } from '../util/logger';

export interface AdminState {
  /** Ready = every worker listens and no drain has begun. */
  readiness(): { ready: boolean; detail: string };
  counters(): Promise<CounterValues>;
  hosts(): Promise<HostView[]>;
  latency: LatencySource;
  /** Present only when test hooks are enabled. */
  crashWorker?: (id: number) => boolean;
}

export interface AdminServer {
  address: string;
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, query: URLSearchParams) => Promise<void> | void;

function reply(res: ServerResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
  res.end(body);
}

function statsText(values: CounterValues): string {
  return Object.entries(values)
    .map(([name, value]) => `${name}: ${value}`)
    .join('\n') + '\n';
}

function routes(state: AdminState): Map<string, { method: string; handler: Handler }> {
  const table = new Map<string, { method: string; handler: Handler }>();
  table.set('/', {
    method: 'GET',
    handler: (_req, res) => reply(res, 200, [...table.keys()].join('\n') + '\n'),
  });
  table.set('/ready', {
    method: 'GET',
    handler: (_req, res) => {
      const { ready, detail } = state.readiness();
      reply(res, ready ? 200 : 503, detail + '\n');
    },
  });
  table.set('/stats', {
    method: 'GET',
    handler: async (_req, res, query) => {
      const values = await state.counters();
      const format = query.get('format');
      if (format === 'json') reply(res, 200, JSON.stringify(values, null, 2) + '\n', 'application/json');
      else if (format === null || format === 'text') reply(res, 200, statsText(values));
      else reply(res, 400, `unknown format "${format}" (use json or text)\n`);
    },
  });
  table.set('/stats/prometheus', {
    method: 'GET',
    handler: async (_req, res) => {
      const [counters, histograms] = await Promise.all([state.counters(), renderPrometheusHistograms(state.latency)]);
      reply(res, 200, prometheusText(counters, [histograms]), 'text/plain; version=0.0.4; charset=utf-8');
    },
  });
  table.set('/latency', {
    method: 'GET',
    handler: async (_req, res, query) => {
      const r = await latencyResponse(state.latency, query.get('format'));
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

export function startAdminServer(address: SocketAddress, state: AdminState, log: Logger): Promise<AdminServer> {
  const table = routes(state);
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin.invalid');
    const route = table.get(url.pathname);
    if (!route) return reply(res, 404, `not found: ${url.pathname}\n`);
    if (req.method !== route.method && !(route.method === 'GET' && req.method === 'HEAD')) {
      res.setHeader('allow', route.method);
      return reply(res, 405, `method ${req.method} not allowed on ${url.pathname}\n`);
    }
    Promise.resolve(route.handler(req, res, url.searchParams)).catch((err: unknown) => {
      log.error('admin request failed', { path: url.pathname, error: err instanceof Error ? err.message : String(err) });
      if (!res.headersSent) reply(res, 500, 'internal error\n');
    });
  });
  server.keepAliveTimeout = 5000;
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
      resolve({
        address: address.text,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
