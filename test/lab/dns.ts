// A real DNS server and client for the UDP tests: dnsmasq in a lab namespace answering one static
// record, and dig.

import { Lab, Ns } from './lab';
import { LabProcess } from './process';
import { waitFor } from './util';

export const DNS_NAME = 'test.splicegate';
export const DNS_ANSWER = '10.99.0.7';

/** dnsmasq in `ns` (default srv) answering DNS_NAME on the given addresses, once it answers from the gateway. */
export async function startDns(lab: Lab, addresses: string[], ns: Ns = 'srv'): Promise<LabProcess> {
  const proc = lab.start(ns, 'dnsmasq', [
    '--keep-in-foreground', '--no-resolv', '--no-hosts', '--conf-file=/dev/null', '--pid-file=', '--user=root',
    '--bind-interfaces', `--listen-address=${addresses.join(',')}`, '--port=53', `--host-record=${DNS_NAME},${DNS_ANSWER}`,
    '--log-facility=-',
  ], { stdin: 'ignore', label: 'dnsmasq' });
  // The gateway reaches the server without the proxy.
  for (const address of addresses) {
    await waitFor(async () => {
      const r = await lab.exec('gw', 'dig', [`@${address}`, DNS_NAME, 'A', '+short', '+tries=1', '+timeout=1'], { timeoutMs: 5000 });
      return r.stdout.trim() === DNS_ANSWER ? true : undefined;
    }, { timeoutMs: 10000, what: `dnsmasq answering on ${address}`, diagnostics: () => proc.diagnostics() });
  }
  return proc;
}

export interface DigResult {
  code: number | null;
  out: string;
}

/** dig @server DNS_NAME A from the client namespace, one try; stdout and stderr together. */
export async function dig(lab: Lab, server: string, extra: string[] = []): Promise<DigResult> {
  const r = await lab.exec('cli', 'dig', [`@${server}`, '-p', '53', DNS_NAME, 'A', '+tries=1', '+timeout=2', ...extra], { timeoutMs: 15000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

/** The answer line for DNS_NAME, as dig prints it. */
export const DNS_ANSWER_LINE = new RegExp(`^${DNS_NAME.replace(/\./g, '\\.')}\\.\\s+\\d+\\s+IN\\s+A\\s+${DNS_ANSWER.replace(/\./g, '\\.')}$`, 'm');
