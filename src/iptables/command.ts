// `splicegate iptables install|uninstall|print`: resolve the flags, build the plan, then run it or
// print it. Failed commands are reported here (exit 1) with the command and its stderr.

import { loadConfigFile } from '../config/load';
import { CommandFailedError, executePlan, type Runner, execRunner } from './execute';
import { IptablesUsageError, resolveOptions, type RawFlags, type RuleOptions } from './options';
import { installPlan, renderShell, uninstallPlan } from './plan';

export const IPTABLES_ACTIONS = ['install', 'uninstall', 'print'] as const;
export type IptablesAction = (typeof IPTABLES_ACTIONS)[number];

export interface IptablesInvocation {
  action: string | undefined;
  flags: RawFlags;
  configPath: string | undefined;
  /** print: show the uninstall commands instead of the install ones. */
  printUninstall: boolean;
}

export { IptablesUsageError };

function actionOf(text: string | undefined): IptablesAction {
  const found = IPTABLES_ACTIONS.find((a) => a === text);
  if (found === undefined) {
    throw new IptablesUsageError(text === undefined ? 'iptables needs an action: install, uninstall or print' : `unknown action '${text}' (install, uninstall or print)`);
  }
  return found;
}

function summary(o: RuleOptions): string {
  const families = o.families.map((f) => `IPv${f}`).join('+');
  const exclusions = [
    ...(o.excludeMark === 0 ? [] : [`mark 0x${o.excludeMark.toString(16)}`]),
    ...(o.excludeUid === undefined ? [] : [`uid ${o.excludeUid}`]),
  ];
  return `${o.mode}${o.protocol === 'udp' ? ' udp' : ''} ${o.topology} ${families} -> port ${o.port}${exclusions.length === 0 ? '' : `, excluding ${exclusions.join(' and ')}`}`;
}

/** Returns the exit status; throws IptablesUsageError (exit 2) for bad flags. */
export async function runIptables(inv: IptablesInvocation, run: Runner = execRunner): Promise<number> {
  const action = actionOf(inv.action);
  if (inv.printUninstall && action !== 'print') throw new IptablesUsageError('--uninstall only goes with print');
  const config = inv.configPath === undefined ? undefined : loadConfigFile(inv.configPath);
  const removing = action === 'uninstall' || inv.printUninstall;
  const options = resolveOptions(inv.flags, config, !removing);
  const steps = removing ? uninstallPlan(options) : installPlan(options);
  if (action === 'print') {
    process.stdout.write(renderShell(steps));
    return 0;
  }
  try {
    await executePlan(steps, run);
  } catch (err) {
    if (!(err instanceof CommandFailedError)) throw err;
    // Each family's jump is added after its chain is complete, so a failed install never sends
    // traffic into a half-filled chain; uninstall clears whatever it did add.
    const hint = action === 'install' ? `\n(stopped there; 'splicegate iptables uninstall${options.families.includes(6) ? ' --ipv6' : ''}${options.mode === 'tproxy' ? ' --mode tproxy' : ''}' removes what was added)` : '';
    process.stderr.write(`splicegate iptables ${action}: ${err.message}${hint}\n`);
    return 1;
  }
  process.stdout.write(action === 'install' ? `installed: ${summary(options)}\n` : `uninstalled: splicegate chains (${options.families.map((f) => `IPv${f}`).join('+')})${options.mode === 'tproxy' ? ` and the tproxy ip rule/route (table ${options.routeTable})` : ''}\n`);
  return 0;
}
