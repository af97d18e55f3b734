// The rule set as data: a list of steps (commands, some guarded by a test command) that both the
// executor and `print` read, so what is printed is exactly what install would run.
//
// Everything splicegate adds lives in its own chains, entered by one jump from a built-in chain;
// install flushes and refills those chains (a second install ends in the same state), uninstall
// removes the jumps and the chains and nothing else.

import type { RuleOptions } from './options';

export type Argv = readonly string[];

/** A command whose outcome decides a step: its exit status, or whether it printed anything. */
export interface Probe {
  argv: Argv;
  /** 'exit': true when it exits 0. 'output': true when it exits 0 and prints something. */
  truth: 'exit' | 'output';
}

export type Step =
  | { kind: 'run'; argv: Argv }
  /** Run argv unless the probe is true (create what is missing). */
  | { kind: 'unless'; probe: Probe; argv: Argv }
  /** Run argv while the probe is true (delete every copy). */
  | { kind: 'while'; probe: Probe; argv: Argv }
  /** Run the commands in order if the probe is true. */
  | { kind: 'if'; probe: Probe; argvs: Argv[] };

export const CHAIN_PREROUTING = 'SPLICEGATE-PREROUTING';
export const CHAIN_OUTPUT = 'SPLICEGATE-OUTPUT';
/** tproxy --protocol udp: a chain of its own, so the TCP and the UDP rule sets are installed independently. */
export const CHAIN_UDP = 'SPLICEGATE-UDP';

interface Hook {
  table: 'nat' | 'mangle';
  builtin: 'PREROUTING' | 'OUTPUT';
  chain: string;
  protocol: 'tcp' | 'udp';
}

/** Every place install may hook into; uninstall looks at all of them. */
const HOOKS: readonly Hook[] = [
  { table: 'nat', builtin: 'PREROUTING', chain: CHAIN_PREROUTING, protocol: 'tcp' },
  { table: 'nat', builtin: 'OUTPUT', chain: CHAIN_OUTPUT, protocol: 'tcp' },
  { table: 'mangle', builtin: 'PREROUTING', chain: CHAIN_PREROUTING, protocol: 'tcp' },
  { table: 'mangle', builtin: 'PREROUTING', chain: CHAIN_UDP, protocol: 'udp' },
];

function tool(family: 4 | 6): string {
  return family === 6 ? 'ip6tables' : 'iptables';
}

/** `iptables -w -t TABLE ...`: -w waits for the xtables lock instead of failing beside another writer. */
function ipt(family: 4 | 6, table: string, ...args: string[]): Argv {
  return [tool(family), '-w', '-t', table, ...args];
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function hookFor(o: RuleOptions): Hook {
  if (o.protocol === 'udp') return { table: 'mangle', builtin: 'PREROUTING', chain: CHAIN_UDP, protocol: 'udp' };
  if (o.mode === 'tproxy') return { table: 'mangle', builtin: 'PREROUTING', chain: CHAIN_PREROUTING, protocol: 'tcp' };
  return o.topology === 'sidecar'
    ? { table: 'nat', builtin: 'OUTPUT', chain: CHAIN_OUTPUT, protocol: 'tcp' }
    : { table: 'nat', builtin: 'PREROUTING', chain: CHAIN_PREROUTING, protocol: 'tcp' };
}

function jumpSpec(h: Hook): string[] {
  return [h.builtin, '-p', h.protocol, '-j', h.chain];
}

function dportMatch(dports: string[]): string[] {
  if (dports.length === 0) return [];
  if (dports.length === 1) return ['--dport', dports[0] ?? ''];
  return ['-m', 'multiport', '--dports', dports.join(',')];
}

/** The rules inside splicegate's chain, in order: exclusions first, then the catch rule. */
function chainRules(o: RuleOptions, family: 4 | 6): string[][] {
  const rules: string[][] = [];
  // The loop exclusion: splicegate's own upstream connects carry cluster.upstream_mark (SO_MARK).
  if (o.excludeMark !== 0) rules.push(['-m', 'mark', '--mark', hex(o.excludeMark), '-j', 'RETURN']);
  if (o.topology === 'sidecar') {
    if (o.excludeUid !== undefined) rules.push(['-m', 'owner', '--uid-owner', o.excludeUid, '-j', 'RETURN']);
    // Connects to this host's loopback are not egress (the admin port, the listener itself).
    rules.push(['-d', family === 6 ? '::1/128' : '127.0.0.0/8', '-j', 'RETURN']);
  } else {
    // A gateway intercepts what it forwards; connections to the host itself (ssh, kubelet, a
    // local server) are not egress, also when --interface is not given or names the interface
    // those arrive on.
    rules.push(['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'RETURN']);
  }
  const iface = o.iface === undefined ? [] : [o.topology === 'sidecar' ? '-o' : '-i', o.iface];
  const owner = o.onlyUid === undefined ? [] : ['-m', 'owner', '--uid-owner', o.onlyUid];
  const target =
    o.mode === 'tproxy'
      ? ['-j', 'TPROXY', '--on-port', String(o.port), '--tproxy-mark', `${hex(o.tproxyMark)}/${hex(o.tproxyMark)}`]
      : ['-j', 'REDIRECT', '--to-ports', String(o.port)];
  rules.push(['-p', o.protocol, ...iface, ...dportMatch(o.dports), ...owner, ...target]);
  return rules;
}

function ipRule(o: RuleOptions, family: 4 | 6, verb: 'show' | 'add' | 'del'): Argv {
  const mark = `${hex(o.tproxyMark)}/${hex(o.tproxyMark)}`;
  return ['ip', `-${family}`, 'rule', verb, 'fwmark', mark, 'lookup', String(o.routeTable)];
}

function localRoute(o: RuleOptions, family: 4 | 6, verb: 'replace' | 'del'): Argv {
  return ['ip', `-${family}`, 'route', verb, 'local', family === 6 ? '::/0' : '0.0.0.0/0', 'dev', 'lo', 'table', String(o.routeTable)];
}

function localRouteProbe(o: RuleOptions, family: 4 | 6): Probe {
  const argv = ['ip', `-${family}`, 'route', 'show', 'table', String(o.routeTable), 'type', 'local', 'exact', family === 6 ? '::/0' : '0.0.0.0/0'];
  return { argv, truth: 'output' };
}

export function installPlan(o: RuleOptions): Step[] {
  const steps: Step[] = [];
  const hook = hookFor(o);
  for (const family of o.families) {
    const chainExists: Probe = { argv: ipt(family, hook.table, '-n', '-L', hook.chain), truth: 'exit' };
    steps.push({ kind: 'unless', probe: chainExists, argv: ipt(family, hook.table, '-N', hook.chain) });
    // Refill from empty: the chain ends up holding exactly this rule set, however often it runs.
    steps.push({ kind: 'run', argv: ipt(family, hook.table, '-F', hook.chain) });
    for (const rule of chainRules(o, family)) steps.push({ kind: 'run', argv: ipt(family, hook.table, '-A', hook.chain, ...rule) });
    if (o.mode === 'tproxy') {
      // Packets TPROXY marked are delivered locally (to the transparent listener) by this route.
      steps.push({ kind: 'unless', probe: { argv: ipRule(o, family, 'show'), truth: 'output' }, argv: ipRule(o, family, 'add') });
      steps.push({ kind: 'run', argv: localRoute(o, family, 'replace') });
    }
    // The jump last: traffic enters the chain only once it is complete.
    const jump = jumpSpec(hook);
    steps.push({ kind: 'unless', probe: { argv: ipt(family, hook.table, '-C', ...jump), truth: 'exit' }, argv: ipt(family, hook.table, '-A', ...jump) });
  }
  return steps;
}

/** Removes every splicegate jump and chain of the families, and with --mode tproxy its ip rule and route. */
export function uninstallPlan(o: RuleOptions): Step[] {
  const steps: Step[] = [];
  for (const family of o.families) {
    for (const hook of HOOKS) {
      const jump = jumpSpec(hook);
      steps.push({ kind: 'while', probe: { argv: ipt(family, hook.table, '-C', ...jump), truth: 'exit' }, argv: ipt(family, hook.table, '-D', ...jump) });
    }
    for (const hook of HOOKS) {
      steps.push({
        kind: 'if',
        probe: { argv: ipt(family, hook.table, '-n', '-L', hook.chain), truth: 'exit' },
        argvs: [ipt(family, hook.table, '-F', hook.chain), ipt(family, hook.table, '-X', hook.chain)],
      });
    }
    if (o.mode === 'tproxy') {
      steps.push({ kind: 'while', probe: { argv: ipRule(o, family, 'show'), truth: 'output' }, argv: ipRule(o, family, 'del') });
      steps.push({ kind: 'if', probe: localRouteProbe(o, family), argvs: [localRoute(o, family, 'del')] });
    }
  }
  return steps;
}

/** A word as the shell reads it back unchanged. */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:,=+@%-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

function line(argv: Argv): string {
  return argv.map(shellWord).join(' ');
}

function test(p: Probe): string {
  return p.truth === 'exit' ? `${line(p.argv)} >/dev/null 2>&1` : `[ -n "$(${line(p.argv)} 2>/dev/null)" ]`;
}

/** The steps as a POSIX shell script that does the same (and is as safe to run twice). */
export function renderShell(steps: Step[]): string {
  const out = steps.map((s) => {
    switch (s.kind) {
      case 'run':
        return line(s.argv);
      case 'unless':
        return `${test(s.probe)} || ${line(s.argv)}`;
      case 'while':
        return `while ${test(s.probe)}; do ${line(s.argv)} || break; done`;
      case 'if':
        return `if ${test(s.probe)}; then ${s.argvs.map(line).join('; ')}; fi`;
    }
  });
  return `${out.join('\n')}\n`;
}
