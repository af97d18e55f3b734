// The one warning for a redirect loop: when loop_rejected first rises, the proxy's own upstream
// connections are being sent back to it by a redirect rule that does not exclude them. The core
// refuses each one; this says once, in the log, how to fix the rules.

import type { SplicegateConfig } from '../config/types';
import type { CounterRule } from '../stats/counter-watch';
import type { Logger } from '../util/logger';

const EXAMPLE_MARK = 0x100;

/** config: the config, or a getter for the one serving when the warning fires (it changes on reload). */
export function loopWarningRule(config: SplicegateConfig | (() => SplicegateConfig), log: Logger, uid: number | undefined = process.getuid?.()): CounterRule {
  const current = typeof config === 'function' ? config : () => config;
  return {
    counter: 'loop_rejected',
    onFirstRise(value) {
      const { cluster, listeners } = current();
      const mark = cluster.upstreamMark;
      const markHex = `0x${(mark === 0 ? EXAMPLE_MARK : mark).toString(16)}`;
      const ports = [...new Set(listeners.map((l) => l.address.port))].join(',');
      log.warn('loop: splicegate\'s own upstream connections are redirected back to its listeners; each is refused and counted in loop_rejected', {
        loop_rejected: value,
        listener_ports: ports,
        fix:
          mark === 0
            ? `set cluster.upstream_mark (e.g. ${markHex}) and add "-m mark --mark ${markHex} -j RETURN" before the REDIRECT rule`
            : `cluster.upstream_mark is ${markHex}: add "-m mark --mark ${markHex} -j RETURN" before the REDIRECT rule`,
        or: `exclude the proxy's user in the REDIRECT rule: "-m owner ! --uid-owner ${uid ?? '<proxy uid>'}"`,
      });
    },
  };
}
