// SIGHUP's default action ends the process and SIGUSR1's opens Node's inspector on 127.0.0.1:9229.
// `splicegate run` takes both over in runProxy, but loading the program before that (the config
// loader, the logger, the addon) takes a noticeable time on a busy host, and `systemctl reload` or
// a logrotate SIGUSR1 can land in it while the service (re)starts. The CLI imports this module
// first, so that from then on such a signal is only held; runProxy takes the held ones over.
// What is left is Node's own bootstrap, before any of the program's code runs.

const held = new Set<'SIGHUP' | 'SIGUSR1'>();
const holders = {
  SIGHUP: (): void => {
    held.add('SIGHUP');
  },
  SIGUSR1: (): void => {
    held.add('SIGUSR1');
  },
};
let holding = false;

/** Hold SIGHUP and SIGUSR1 until takeHeldStartupSignals is called. */
export function holdStartupSignals(): void {
  if (holding) return;
  holding = true;
  process.on('SIGHUP', holders.SIGHUP);
  process.on('SIGUSR1', holders.SIGUSR1);
}

/**
 * Stop holding and say which of the two arrived meanwhile. Call it in the same synchronous step as
 * installing the real handlers: signals reach JavaScript through the event loop, so none can fall
 * between the two.
 */
export function takeHeldStartupSignals(): ReadonlySet<'SIGHUP' | 'SIGUSR1'> {
  if (holding) {
    process.off('SIGHUP', holders.SIGHUP);
    process.off('SIGUSR1', holders.SIGUSR1);
    holding = false;
  }
  const taken = new Set(held);
  held.clear();
  return taken;
}

// Only the proxy holds them: `splicegate validate` and the other short commands keep the default
// actions, as any command-line tool does.
if (process.argv[2] === 'run') holdStartupSignals();
