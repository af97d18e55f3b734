// Fuzz target (Jazzer.js): the Envoy bootstrap converter (`run --envoy`, `convert --envoy`, and a
// reload of a running proxy started with --envoy). Any bytes, read as the UTF-8 text of an Envoy
// YAML or JSON file, strict and lenient, must give either a converted config that splicegate's
// schema accepted, or a ConfigError listing at least one problem; any other exception, a hang
// (-timeout) or a memory blow-up (-rss_limit_mb) is a finding. Run by scripts/fuzz.sh.

import { ConfigError, formatProblems } from '../../src/config/load';
import { convertEnvoyText } from '../../src/envoy/load';

export function fuzz(data: Buffer): void {
  const text = data.toString('utf8');
  for (const lenient of [false, true]) {
    let load;
    try {
      load = convertEnvoyText(text, 'fuzz.yaml', lenient);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      if (err.problems.length === 0) throw new Error('ConfigError without a problem');
      for (const p of err.problems) {
        if (typeof p.path !== 'string' || typeof p.message !== 'string' || p.message === '') {
          throw new Error(`malformed problem ${JSON.stringify(p)}`);
        }
      }
      formatProblems(err); // what `validate --envoy` prints must not throw either
      continue;
    }
    if (load.config.listeners.length === 0) throw new Error('a conversion without listeners was accepted');
    if (!load.yaml.startsWith('# Converted from the Envoy bootstrap')) throw new Error('the converted YAML lost its header');
  }
}
