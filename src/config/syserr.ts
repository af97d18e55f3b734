// Human wording for errno codes ("EADDRINUSE" -> "EADDRINUSE (address already in use)"). Used for
// unreadable config files and by the CLI for bind/listen failures. libuv's own table, via
// util.getSystemErrorMap(), so the text matches what Node prints elsewhere.

import { getSystemErrorMap } from 'node:util';

let descriptions: Map<string, string> | undefined;

export function describeErrno(code: string): string {
  if (descriptions === undefined) {
    descriptions = new Map();
    for (const [name, text] of getSystemErrorMap().values()) descriptions.set(name, text);
  }
  const text = descriptions.get(code);
  return text === undefined ? code : `${code} (${text})`;
}
