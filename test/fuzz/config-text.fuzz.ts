// Fuzz target (Jazzer.js): the config loader. Any bytes, read as the UTF-8 text of a config file,
// must give either a config or a ConfigError listing at least one problem; any other exception,
// a hang (-timeout) or a memory blow-up (-rss_limit_mb) is a finding. Run by scripts/fuzz.sh.

import { ConfigError, formatProblems, parseConfigText } from '../../src/config/load';
import { configWarnings } from '../../src/config/warnings';

export function fuzz(data: Buffer): void {
  let config;
  try {
    config = parseConfigText(data.toString('utf8'), 'fuzz.yaml');
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    if (err.problems.length === 0) throw new Error('ConfigError without a problem');
    for (const p of err.problems) {
      if (typeof p.path !== 'string' || typeof p.message !== 'string' || p.message === '') {
        throw new Error(`malformed problem ${JSON.stringify(p)}`);
      }
    }
    formatProblems(err); // what `splicegate validate` prints must not throw either
    return;
  }
  if (config.listeners.length === 0) throw new Error('a config without listeners was accepted');
  // The typed config's promise to the data plane: an http block exactly on http listeners.
  for (const l of config.listeners) {
    if ((l.mode === 'http') !== (l.http !== undefined)) throw new Error(`listener ${l.name}: mode ${l.mode} with http ${JSON.stringify(l.http)}`);
  }
  configWarnings(config); // what validate and run print must not throw either
}
