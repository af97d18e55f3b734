// Fuzz target (Jazzer.js): the Envoy bootstrap converter (`run --envoy`, `convert --envoy`, and a
// reload of a running proxy started with --envoy). Any bytes, read as the UTF-8 text of an Envoy
// YAML or JSON file, strict and lenient, must give either a converted config that splicegate's
// schema accepted, or a ConfigError listing at least one problem; any other exception, a hang
// (-timeout) or a memory blow-up (-rss_limit_mb) is a finding. Run by scripts/fuzz.sh.

import { convertEnvoyText } from '../../src/envoy/load';
import { checkRefusal } from './config-error';

export function fuzz(data: Buffer): void {
  const text = data.toString('utf8');
  for (const lenient of [false, true]) {
    let load;
    try {
      load = convertEnvoyText(text, 'fuzz.yaml', lenient);
    } catch (err) {
      checkRefusal(err);
      continue;
    }
    if (load.config.listeners.length === 0) throw new Error('a conversion without listeners was accepted');
    if (!load.yaml.startsWith('# Converted from the Envoy bootstrap')) throw new Error('the converted YAML lost its header');
  }
}
