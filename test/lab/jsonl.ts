// Reading a JSON-lines file a splicegate wrote (the access log): one object per non-empty line,
// each checked to have exactly `keys`, in that order (the line format is a contract); and the
// access log's two line shapes with their key order.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';

/** The file's records; [] while it does not exist yet. */
export function readJsonLines<T>(file: string, keys: readonly string[]): T[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => {
      const parsed = JSON.parse(l) as T & object;
      assert.deepEqual(Object.keys(parsed), keys, `every key, in order: ${l}`);
      return parsed;
    });
}

/** One access-log line of a relayed connection (docs/CONFIG.md#access-log), keys in file order. */
export interface AccessLine {
  time: string;
  type: string;
  listener: string;
  client: string | null;
  destination: string | null;
  destination_source: string | null;
  policy: string | null;
  rule: string | null;
  bytes_sent: number;
  bytes_received: number;
  connect_ms: number | null;
  ttfb_ms: number | null;
  duration_ms: number;
  close_reason: string;
  refusal: string | null;
  worker: number;
}

/** An HTTP listener's request line: the connection's fields, then the request's. */
export interface AccessRequestLine extends AccessLine {
  method: string | null;
  status: number | null;
  error: string | null;
}

export const ACCESS_LINE_KEYS = ['time', 'type', 'listener', 'client', 'destination', 'destination_source', 'policy', 'rule',
  'bytes_sent', 'bytes_received', 'connect_ms', 'ttfb_ms', 'duration_ms', 'close_reason', 'refusal', 'worker'] as const;
export const ACCESS_REQUEST_LINE_KEYS = [...ACCESS_LINE_KEYS, 'method', 'status', 'error'] as const;
