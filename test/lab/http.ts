// Real HTTP clients for the HTTP listener's lab tests: curl, wrk and the raw/WebSocket fixtures
// in the client namespace, and a throwaway CA for TLS behind CONNECT.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Lab } from './lab';
import { JsonObject } from './util';

export interface CurlResult {
  /** curl's exit code (0 = transfer done; 56/52/7... = failures, see curl(1)). */
  code: number | null;
  /** Status of the last response (the origin's, after any proxy CONNECT response); 0 if none. */
  status: number;
  /** Lower-case header names of the last response, first value. */
  headers: Record<string, string>;
  body: string;
  /** Every status line curl printed, in order (a CONNECT tunnel shows the proxy's 200 first). */
  statusLines: string[];
  stderr: string;
}

/**
 * Run curl in the client namespace with `-sS -i`; `args` are the rest (URL, -H, -x, ...).
 * The response heads are split off the body: with `-p -x` curl prints the proxy's CONNECT
 * response head before the origin's.
 */
export async function curl(lab: Lab, args: string[], timeoutS = 10): Promise<CurlResult> {
  const r = await lab.exec('cli', 'curl', ['-sS', '-i', '--max-time', String(timeoutS), ...args], { timeoutMs: timeoutS * 1000 + 10000 });
  let rest = r.stdout;
  const statusLines: string[] = [];
  let headers: Record<string, string> = {};
  let status = 0;
  while (/^HTTP\/[\d.]+ \d{3}/.test(rest)) {
    const end = rest.indexOf('\r\n\r\n');
    const head = end < 0 ? rest : rest.slice(0, end);
    rest = end < 0 ? '' : rest.slice(end + 4);
    const lines = head.split('\r\n');
    const statusLine = lines[0] ?? '';
    statusLines.push(statusLine);
    status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(statusLine)?.[1] ?? 0);
    headers = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0) continue;
      const name = line.slice(0, i).trim().toLowerCase();
      if (!(name in headers)) headers[name] = line.slice(i + 1).trim();
    }
  }
  return { code: r.code, status, headers, body: rest, statusLines, stderr: r.stderr };
}

/** The JSON body http-echo answers with. */
export interface EchoBody {
  id: string;
  local: string;
  remote: string;
  conn: number;
  seq: number;
  method: string;
  url: string;
  headers: Record<string, string>;
  bodyBytes: number;
  /** sha256 (hex) of the request body as the server received it. */
  bodySha256: string;
}

export function echoBody(r: CurlResult): EchoBody {
  try {
    return JSON.parse(r.body) as EchoBody;
  } catch {
    throw new Error(`expected http-echo's JSON body, got status ${r.status} (curl exit ${r.code}): ${r.body.slice(0, 500)} ${r.stderr}`);
  }
}

export interface RawResult {
  connected: boolean;
  status: number | null;
  statusLine: string | null;
  headers: Record<string, string>;
  body: string;
  /** 'end': FIN; 'reset'; 'timeout': still open at wait-ms; 'response' (keepOpen): a full response arrived. */
  closeKind: 'end' | 'reset' | 'close' | 'error' | 'timeout' | 'response' | null;
  closedAfterMs: number | null;
  bytes: number;
}

/** One raw request (test/fixtures/clients/http-raw.js); `send` uses literal \r\n escapes. */
export async function httpRaw(lab: Lab, o: { target: string; send: string; padHeaderBytes?: number; waitMs?: number; keepOpen?: boolean }): Promise<RawResult> {
  const args = ['--target', o.target, '--send', o.send, '--wait-ms', String(o.waitMs ?? 5000)];
  if (o.padHeaderBytes !== undefined) args.push('--pad-header-bytes', String(o.padHeaderBytes));
  if (o.keepOpen) args.push('--keep-open');
  const { result } = await lab.runClient('http-raw', args, { timeoutMs: (o.waitMs ?? 5000) + 15000 });
  return result as unknown as RawResult;
}

export interface WsResult {
  ok: boolean;
  hello: JsonObject | null;
  echoed: number;
  mismatches: number;
  error: string | null;
}

export async function wsEcho(lab: Lab, o: { url: string; header?: string; count?: number; size?: number }): Promise<WsResult> {
  const args = ['--url', o.url, '--count', String(o.count ?? 5), '--size', String(o.size ?? 1000), '--timeout-ms', '10000'];
  if (o.header !== undefined) args.push('--header', o.header);
  const { result } = await lab.runClient('ws-echo', args, { timeoutMs: 25000 });
  return result as unknown as WsResult;
}

export interface WrkResult {
  requests: number;
  non2xx: number;
  socketErrors: number;
  output: string;
}

/** wrk with keep-alive connections from the client namespace; a bounded run, not a benchmark. */
export async function wrk(lab: Lab, o: { url: string; connections: number; durationS: number; header?: string }): Promise<WrkResult> {
  const args = ['-t1', `-c${o.connections}`, `-d${o.durationS}s`, '--timeout', '5s'];
  if (o.header !== undefined) args.push('-H', o.header);
  args.push(o.url);
  const r = await lab.exec('cli', 'wrk', args, { timeoutMs: o.durationS * 1000 + 20000 });
  if (r.code !== 0) throw new Error(`wrk exited ${r.code}: ${r.stderr}\n${r.stdout}`);
  const requests = Number(/(\d+) requests in/.exec(r.stdout)?.[1] ?? NaN);
  if (!Number.isFinite(requests)) throw new Error(`wrk: no request count in:\n${r.stdout}`);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  const socketErrors = se ? Number(se[1]) + Number(se[2]) + Number(se[3]) + Number(se[4]) : 0;
  return { requests, non2xx, socketErrors, output: r.stdout };
}

export interface TestCa {
  caPath: string;
  certPath: string;
  keyPath: string;
}

/**
 * A throwaway CA and a server certificate for `ip` (subjectAltName IP), in `dir`. EC P-256 keys:
 * fast to generate. openssl runs on files only; nothing touches the network.
 */
export function makeTestCa(dir: string, ip: string): TestCa {
  const file = (name: string): string => path.join(dir, name);
  const run = (args: string[]): void => {
    const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 30000 });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=splicegate lab CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  run(['req', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', `/CN=${ip}`]);
  fs.writeFileSync(file('server.ext'), `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  run(['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-out', file('server.pem'), '-days', '1', '-extfile', file('server.ext')]);
  return { caPath: file('ca.pem'), certPath: file('server.pem'), keyPath: file('server.key') };
}
