// The configuration `splicegate run` uses without --config. It goes through the same schema as a
// file, so the defaults live in exactly one place (schema.ts) and this cannot drift from them.

import { ConfigError } from './problems';
import { validateConfigValue } from './schema';
import type { SplicegateConfig } from './types';

export const DEFAULT_CONFIG_SOURCE = '(built-in default config)';

/** What the embedded default looks like as a file; shown by `splicegate run --help`. */
export const DEFAULT_CONFIG_YAML = `listeners:
  - name: egress
    address: "0.0.0.0:15001"
    mode: original_dst
`;

const DEFAULT_CONFIG_VALUE = {
  listeners: [{ name: 'egress', address: '0.0.0.0:15001', mode: 'original_dst' }],
};

/** A fresh copy of the built-in default (callers may mutate it). */
export function defaultConfig(): SplicegateConfig {
  const result = validateConfigValue(DEFAULT_CONFIG_VALUE);
  if (!result.ok) {
    // Only reachable if the schema and the default above disagree: a bug, caught by the tests.
    throw new ConfigError(DEFAULT_CONFIG_SOURCE, result.problems.map((p) => ({ path: String(p.segments.join('.')), message: p.message })));
  }
  return result.config;
}
