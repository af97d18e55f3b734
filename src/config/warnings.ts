// Settings that are valid but rarely what was meant. They do not stop `run`; `validate` prints
// them (exit status still 0) and `run` logs them once at start.

import type { SplicegateConfig } from './types';

export interface ConfigWarning {
  /** Where in the file, as in ConfigProblem: "listeners[1].http.trusted_sources". */
  path: string;
  message: string;
}

export function configWarnings(config: SplicegateConfig): ConfigWarning[] {
  const warnings: ConfigWarning[] = [];
  config.listeners.forEach((listener, index) => {
    // The empty default is the safe one (a client cannot pick the destination), but with it the
    // header and CONNECT do nothing at all, which surprises anyone following Envoy's
    // use_http_header setup.
    if (listener.http !== undefined && listener.http.trustedSources.length === 0) {
      const connect = listener.http.connect ? ' and every CONNECT gets 403 connect_untrusted' : '';
      warnings.push({
        path: `listeners[${index}].http.trusted_sources`,
        message: `empty: the ${listener.http.headerName} header is honoured from nobody, so every request goes to its connection's original destination (or gets 503 no_destination)${connect}; list the client CIDRs allowed to choose a destination`,
      });
    }
  });
  return warnings;
}
