// The one warning for running out of file descriptors: when downstream_cx_accept_paused first
// rises, a worker found no fd for an accepted client or its upstream socket and stopped accepting
// until the next tick (clients wait in the listen backlog; none is reset or dropped). The core
// counts each pause; this says once, in the log, what happened and what to change, instead of a
// line per pause (a storm exactly when the host is short of resources).

import type { SplicegateConfig } from '../config/types';
import type { CounterRule } from '../stats/counter-watch';
import type { Logger } from '../util/logger';

/** config: the config, or a getter for the one serving when the warning fires (it changes on reload). */
export function fdWarningRule(config: SplicegateConfig | (() => SplicegateConfig), fdLimit: number, log: Logger): CounterRule {
  const current = typeof config === 'function' ? config : () => config;
  return {
    counter: 'downstream_cx_accept_paused',
    onFirstRise(value) {
      const configured = current().cluster.maxDownstreamConnections;
      log.warn('out of file descriptors: accepting paused until fds free up; waiting clients stay in the listen backlog, counted in downstream_cx_accept_paused', {
        downstream_cx_accept_paused: value,
        nofile: fdLimit,
        max_downstream_connections: configured > 0 ? configured : 'derived from nofile',
        fix: 'raise the open-files limit (LimitNOFILE=) or lower cluster.max_downstream_connections below nofile/2',
      });
    },
  };
}
