// Shared by the config fuzz targets (config-text, envoy-text): what a refused config must throw.

import { ConfigError, formatProblems } from '../../src/config/load';

/**
 * Rethrows anything but a ConfigError; a ConfigError must list at least one problem, each with a
 * path and a message, and format (what `validate` prints) without throwing.
 */
export function checkRefusal(err: unknown): void {
  if (!(err instanceof ConfigError)) throw err;
  if (err.problems.length === 0) throw new Error('ConfigError without a problem');
  for (const p of err.problems) {
    if (typeof p.path !== 'string' || typeof p.message !== 'string' || p.message === '') {
      throw new Error(`malformed problem ${JSON.stringify(p)}`);
    }
  }
  formatProblems(err);
}
