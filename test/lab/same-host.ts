// The sidecar topology in the lab: splicegate runs in the gateway namespace (see splicegate.ts) and
// so do the clients, whose own connects the nat OUTPUT chain redirects to it, as on a host where
// the proxy sits beside the applications. Helpers for those rules, for clients run as another
// user, and for the proxy's open file descriptors.

import * as fs from 'node:fs';
import { Lab } from './lab';
import { clientScript } from './paths';
import { LabProcess } from './process';
import { ProbeResult } from './clients';

export interface OutputRedirect {
  /** Destination port to catch. */
  dport: number;
  toPort: number;
  /** Only this user's connects (`-m owner --uid-owner`). */
  uid?: number;
}

/** `iptables -t nat -A OUTPUT -p tcp --dport D [-m owner --uid-owner U] -j REDIRECT --to-ports P` in the gateway. */
export async function redirectOutput(lab: Lab, o: OutputRedirect): Promise<void> {
  await lab.iptables('gw', 4, [
    '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', String(o.dport),
    ...(o.uid === undefined ? [] : ['-m', 'owner', '--uid-owner', String(o.uid)]),
    '-j', 'REDIRECT', '--to-ports', String(o.toPort),
  ]);
}

/** `iptables -t nat -A OUTPUT -p tcp -m mark --mark M -j RETURN`: the proxy's own (marked) connects are left alone. */
export async function excludeMarkFromOutput(lab: Lab, mark: number): Promise<void> {
  await lab.iptables('gw', 4, ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-m', 'mark', '--mark', `0x${mark.toString(16)}`, '-j', 'RETURN']);
}

/**
 * The probe client (one connection, how it ended) run in the gateway namespace, next to
 * splicegate; as `uid` (via setpriv) when given, so owner-match rules apply to it.
 */
export async function probeFromGateway(
  lab: Lab,
  o: { target: string; send?: string; waitMs?: number; uid?: number; untilLine?: boolean },
): Promise<ProbeResult & { proc: LabProcess }> {
  const waitMs = o.waitMs ?? 5000;
  const args = [clientScript('probe'), '--target', o.target, '--wait-ms', String(waitMs)];
  if (o.send !== undefined) args.push('--send', o.send);
  if (o.untilLine) args.push('--until-line');
  const argv = o.uid === undefined ? args : [`--reuid=${o.uid}`, `--regid=${o.uid}`, '--clear-groups', process.execPath, ...args];
  const proc = lab.start('gw', o.uid === undefined ? process.execPath : 'setpriv', argv, {
    stdin: 'ignore',
    label: `gw probe ${o.target}${o.uid === undefined ? '' : ` as uid ${o.uid}`}`,
  });
  const exit = await proc.waitExit(waitMs + 15000);
  if (!exit) {
    await proc.stop('SIGKILL', 1000);
    throw new Error(`probe did not finish\n${proc.diagnostics()}`);
  }
  const result = proc.eventsNamed('result').pop();
  if (!result || typeof result['connected'] !== 'boolean') throw new Error(`probe printed no result (exit ${JSON.stringify(exit)})\n${proc.diagnostics()}`);
  return { ...(result as unknown as ProbeResult), proc };
}

/** Open file descriptors of a process (same pid namespace as the tests; `ip netns exec` execs in place). */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}
