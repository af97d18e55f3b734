// Reading a JSON-lines file a splicegate wrote (the access log): one object per non-empty line,
// each checked to have exactly `keys`, in that order (the line format is a contract).

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
