// Helpers for the config tests that assert on ConfigError problems: what a bad text reports, and
// the one problem at a path (a wrong path fails listing what was reported instead).

import assert from 'node:assert/strict';
import { ConfigError, parseConfigText, type ConfigProblem } from '../src/config/load';

/** The problems parsing `text` reports; fails when it parses. */
export function problemsOf(text: string): ConfigProblem[] {
  try {
    parseConfigText(text, 'test.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return assert.fail('expected a ConfigError, but parsing succeeded');
}

/** The problem at `path`, whose message must include every one of `parts`. */
export function problemAt(problems: ConfigProblem[], path: string, ...parts: string[]): ConfigProblem {
  const found = problems.find((p) => p.path === path);
  assert.ok(found, `no problem at ${path}; got: ${JSON.stringify(problems)}`);
  for (const part of parts) assert.ok(found.message.includes(part), `problem at ${path} is "${found.message}", expected "${part}"`);
  return found;
}
