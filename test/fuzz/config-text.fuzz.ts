// Fuzz target (Jazzer.js): the config loader. Any bytes, read as the UTF-8 text of a config file,
// must give either a config or a ConfigError listing at least one problem; any other exception,
// a hang (-timeout) or a memory blow-up (-rss_limit_mb) is a finding. Run by scripts/fuzz.sh.

import { parseConfigText } from '../../src/config/load';
import { configWarnings } from '../../src/config/warnings';
import { checkRefusal } from './config-error';

export function fuzz(data: Buffer): void {
  let config;
  try {
    config = parseConfigText(data.toString('utf8'), 'fuzz.yaml');
  } catch (err) {
    checkRefusal(err);
    return;
  }
  if (config.listeners.length === 0) throw new Error('a config without listeners was accepted');
  // The typed config's promise to the data plane: an http block exactly on http listeners.
  for (const l of config.listeners) {
    if ((l.mode === 'http') !== (l.http !== undefined)) throw new Error(`listener ${l.name}: mode ${l.mode} with http ${JSON.stringify(l.http)}`);
  }
  configWarnings(config); // what validate and run print must not throw either
}
