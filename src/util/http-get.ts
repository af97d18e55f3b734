// GET over node:http / node:https for the CLI's requests to an operator-given URL (an admin
// endpoint). Not fetch(): fetch refuses the ports the fetch standard blocks for browsers (6000,
// 6665-6669, 10080, ...), and an admin server may listen on any of them.

import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface HttpGetResult {
  status: number;
  body: string;
}

/** Bodies larger than this are refused rather than held in memory. */
const MAX_BODY_BYTES = 256 * 1024 * 1024;

/**
 * GETs url and reads the whole body as UTF-8. Rejects with an Error saying why (the caller names
 * the URL) when the server cannot be reached, does not answer within timeoutMs (the whole
 * exchange), or sends more than MAX_BODY_BYTES; any status is returned, the caller judges it.
 */
export function httpGet(url: URL, timeoutMs: number): Promise<HttpGetResult> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return Promise.reject(new Error(`${url.protocol} is not supported (http: or https:)`));
  }
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const fail = (why: string): void => reject(new Error(why));
    // agent: false, a connection of its own: the global agent keeps sockets alive between requests,
    // and a pooled one the server has since closed fails the next request with "socket hang up".
    const req = request(url, { method: 'GET', agent: false }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) {
          req.destroy();
          reject(new Error(`the answer is larger than ${MAX_BODY_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => fail(err.message));
    });
    // One deadline for the whole exchange: it also bounds a server that trickles bytes.
    // Rejected first: once the answer has begun, destroying the request reports only "aborted".
    const deadline = setTimeout(() => {
      fail(`no complete answer within ${timeoutMs} ms`);
      req.destroy();
    }, timeoutMs);
    req.on('close', () => clearTimeout(deadline));
    req.on('error', (err) => fail(err.message));
    req.end();
  });
}
