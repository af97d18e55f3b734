#!/usr/bin/env node
// The `splicegate` command. Commands live in one table (COMMANDS): adding one is adding an entry,
// and the top-level help, option parsing and per-command help are all generated from it.
//
// Exit status: 0 success, 1 runtime failure, 2 usage or config error (so scripts and systemd can
// tell "you asked wrong" from "it broke").

// First, before the rest of the program loads: `run` holds SIGHUP and SIGUSR1 from here on.
import './proxy/startup-signals';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DEFAULT_CONFIG_SOURCE, DEFAULT_CONFIG_YAML, defaultConfig } from './config/default';
import { parseDuration } from './config/duration';
import { ConfigError, formatProblems, loadConfigFile } from './config/load';
import { DEFAULTS } from './config/schema';
import { closestMatch } from './config/suggest';
import { formatSystemError, isSystemError } from './config/syserr';
import type { SplicegateConfig } from './config/types';
import { configWarnings } from './config/warnings';
import { loadEnvoyFile } from './envoy/load';
import { packageVersion } from './util/version';

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

interface OptionDef {
  name: string;
  short?: string;
  /** Placeholder for a value ("FILE"); options without one are boolean flags. */
  value?: string;
  description: string;
}

type OptionValues = Record<string, string | boolean | Array<string | boolean> | undefined>;

interface Invocation {
  values: OptionValues;
  positionals: string[];
}

interface Command {
  summary: string;
  /** Synopsis after "splicegate <name>". */
  usage: string;
  description: string;
  options: OptionDef[];
  /** Positional arguments accepted (most commands take none: a stray word is a mistake). */
  maxPositionals?: number;
  /** Extra help sections (defaults, notes), already formatted. */
  notes?: () => string;
  examples: string[];
  run(invocation: Invocation): Promise<number>;
}

/** Something the user typed wrong: printed with a pointer to the help, exit status 2. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly helpFor?: string,
  ) {
    super(message);
  }
}

// Every command accepts these.
const COMMON_OPTIONS: OptionDef[] = [
  { name: 'verbose', short: 'v', description: 'print stack traces for unexpected errors (same as SPLICEGATE_DEBUG=1)' },
  { name: 'help', short: 'h', description: 'show this help' },
];

const CONFIG_OPTION: OptionDef = { name: 'config', short: 'c', value: 'FILE', description: 'YAML config file (reference: docs/CONFIG.md)' };
const ENVOY_OPTIONS: OptionDef[] = [
  { name: 'envoy', value: 'FILE', description: 'an Envoy v3 bootstrap to convert instead of --config (docs/ENVOY.md)' },
  { name: 'envoy-lenient', description: 'with --envoy: skip what would change routing or security (as warnings) instead of refusing the file' },
];

const COMMANDS: Record<string, Command> = {
  run: {
    summary: 'start the proxy',
    usage: '[--config FILE | --envoy FILE [--envoy-lenient]] [--latency-log FILE [--latency-log-interval DURATION]]',
    description:
      'Load the config (or the built-in default) and run the proxy until it is stopped (SIGINT/SIGTERM: drain, then exit). ' +
      'SIGHUP (or POST /reload on the admin endpoint) re-reads --config (or converts --envoy again) and applies it without dropping a connection (docs/OPERATIONS.md).',
    options: [
      { ...CONFIG_OPTION, description: 'YAML config file (default: the built-in config below)' },
      ...ENVOY_OPTIONS,
      { name: 'latency-log', value: 'FILE', description: 'write an HdrHistogram interval log of connection latencies to FILE (docs/LATENCY.md)' },
      { name: 'latency-log-interval', value: 'DURATION', description: 'one --latency-log interval every DURATION (default 5s; e.g. 1s, 1m)' },
    ],
    notes: () =>
      [
        'Built-in config (used without --config):',
        indent(DEFAULT_CONFIG_YAML.trimEnd()),
        `  # workers: ${DEFAULTS.workers}, admin: ${DEFAULTS.adminAddress}, connect_timeout: ${DEFAULTS.connectTimeout},`,
        `  # idle_timeout: ${DEFAULTS.idleTimeout}, drain_timeout: ${DEFAULTS.drainTimeout}`,
        '',
        'Exit status: 0 clean shutdown, 1 runtime failure (e.g. cannot bind), 2 usage or config error.',
      ].join('\n'),
    examples: [
      'splicegate run',
      'splicegate run --config /etc/splicegate/splicegate.yaml',
      'SPLICEGATE_DEBUG=1 splicegate run -c splicegate.yaml --latency-log /var/log/splicegate/latency.log',
      'splicegate run --latency-log latency.hlog --latency-log-interval 10s',
      'splicegate run --envoy envoy.yaml',
    ],
    async run({ values }) {
      const source = configSource(values, 'run');
      const configPath = source?.path;
      const latencyLogPath = stringOption(values, 'latency-log');
      const latencyLogIntervalMs = latencyLogInterval(values);
      const config = source === undefined ? defaultConfig() : loadSource(source);
      await slowStartTestHook();
      // Loaded lazily: the proxy pulls in the native splice(2) addon, and `validate`/`--help` must
      // work on machines (CI, a laptop) where that addon is not built.
      const { runProxy } = await import('./proxy/run.js');
      return runProxy(config, {
        configSource: configPath ?? DEFAULT_CONFIG_SOURCE,
        ...(configPath === undefined ? {} : { configPath }),
        // A reload converts the Envoy file again, with the same leniency.
        ...(source?.kind === 'envoy' ? { loadConfig: () => loadSource(source) } : {}),
        ...(latencyLogPath === undefined ? {} : { latencyLogPath }),
        ...(latencyLogIntervalMs === undefined ? {} : { latencyLogIntervalMs }),
      });
    },
  },

  validate: {
    summary: 'check a config file and exit',
    usage: '--config FILE | --envoy FILE [--envoy-lenient]',
    description: 'Parse and validate a config file (or convert an Envoy bootstrap) without starting anything. Every problem is listed, one per line.',
    options: [CONFIG_OPTION, ...ENVOY_OPTIONS],
    notes: () => 'Exit status: 0 valid (warnings, if any, on stderr), 2 invalid (problems on stderr) or usage error.',
    examples: [
      'splicegate validate --config /etc/splicegate/splicegate.yaml',
      'splicegate validate -c new.yaml && systemctl reload splicegate',
      'splicegate validate --envoy envoy.yaml',
    ],
    async run({ values }) {
      const source = configSource(values, 'validate');
      if (source === undefined) throw new UsageError('validate needs --config FILE or --envoy FILE', 'validate');
      const configPath = source.path;
      const config = loadSource(source);
      const listeners = config.listeners.length;
      // An Envoy file's own paths are static_resources...; these are the converted config's.
      const label = source.kind === 'envoy' ? `${configPath} (converted)` : configPath;
      for (const w of configWarnings(config)) process.stderr.write(`${label}: warning: ${w.path}: ${w.message}\n`);
      process.stdout.write(`${configPath}: OK (${plural(listeners, 'listener')}, ${plural(config.workers, 'worker')})\n`);
      return EXIT_OK;
    },
  },

  convert: {
    summary: 'print the splicegate config an Envoy bootstrap maps to',
    usage: '--envoy FILE [--envoy-lenient]',
    description:
      'Convert an Envoy v3 bootstrap (static_resources: original_dst listeners, tcp_proxy and http_connection_manager ' +
      'routes to an ORIGINAL_DST cluster) and print the equivalent splicegate YAML on stdout. What is dropped is listed ' +
      'with its path in the Envoy file: harmless settings as warnings, anything that changes routing or security as errors.',
    options: ENVOY_OPTIONS,
    notes: () => 'Mapping reference: docs/ENVOY.md.\nExit status: 0 converted (warnings on stderr), 2 not convertible (problems on stderr) or usage error.',
    examples: ['splicegate convert --envoy envoy.yaml > splicegate.yaml', 'splicegate convert --envoy envoy.yaml --envoy-lenient'],
    async run({ values }) {
      const source = configSource(values, 'convert');
      if (source === undefined || source.kind !== 'envoy') throw new UsageError('convert needs --envoy FILE', 'convert');
      const converted = loadEnvoyFile(source.path, source.lenient);
      for (const w of converted.warnings) process.stderr.write(`${source.path}: warning: ${w.path}: ${w.message}\n`);
      process.stdout.write(converted.yaml);
      return EXIT_OK;
    },
  },

  report: {
    summary: 'latency percentiles from a running proxy or a latency log',
    usage: '[--admin URL | --log FILE] [--html FILE]',
    description:
      "Print HdrHistogram's percentile distribution of each latency metric (upstream connect, proxy overhead, " +
      'time to first byte, connection duration) and the busiest hosts, read from a running proxy\'s admin endpoint ' +
      'or from a --latency-log file. With --html, also write a self-contained HTML page of percentile plots.',
    options: [
      { name: 'admin', value: 'URL', description: 'admin endpoint of a running proxy (default http://127.0.0.1:9901)' },
      { name: 'log', value: 'FILE', description: 'a latency interval log written by splicegate run --latency-log' },
      { name: 'html', value: 'FILE', description: 'also write an HTML report with percentile plots to FILE' },
    ],
    notes: () => 'Values are in milliseconds. Metric definitions and formats: docs/LATENCY.md.\nExit status: 0 report printed, 1 source unreadable, 2 usage error.',
    examples: ['splicegate report', 'splicegate report --admin http://127.0.0.1:9901 --html latency.html', 'splicegate report --log latency.hlog'],
    async run({ values }) {
      const admin = stringOption(values, 'admin');
      const log = stringOption(values, 'log');
      const html = stringOption(values, 'html');
      if (admin !== undefined && log !== undefined) throw new UsageError('give --admin URL or --log FILE, not both', 'report');
      if (admin !== undefined && !/^https?:\/\//.test(admin)) throw new UsageError(`--admin expects an http:// URL, got '${admin}'`, 'report');
      // Loaded lazily, like the proxy: `validate` and `--help` should not pay for the histogram code.
      const { runReport } = await import('./latency/report-command.js');
      return runReport({
        ...(admin === undefined ? {} : { admin }),
        ...(log === undefined ? {} : { log }),
        ...(html === undefined ? {} : { html }),
      });
    },
  },

  iptables: {
    summary: 'install, remove or print the interception rules',
    usage: 'install|uninstall|print [--mode redirect|tproxy] [--topology gateway|sidecar] [--port PORT | --config FILE] [options]',
    description:
      "Write the iptables rules that send connections to splicegate into splicegate's own chains " +
      '(SPLICEGATE-PREROUTING / SPLICEGATE-OUTPUT, jumped to from the built-in chains), with the loop exclusion; ' +
      'for tproxy also the ip rule and local route for marked packets. install is idempotent, uninstall removes ' +
      'exactly what install added, print shows the commands (a shell script) without running them. Needs CAP_NET_ADMIN.',
    options: [
      { name: 'mode', value: 'MODE', description: 'redirect (nat REDIRECT, default) or tproxy (mangle TPROXY, gateway only)' },
      { name: 'protocol', value: 'PROTO', description: 'tcp (default) or udp (tproxy only: a protocol: udp listener; chain SPLICEGATE-UDP)' },
      { name: 'topology', value: 'TOPOLOGY', description: 'gateway (traffic from other hosts, PREROUTING; default) or sidecar (this host\'s own, OUTPUT)' },
      { name: 'port', value: 'PORT', description: "splicegate's listener port (default: from --config)" },
      { ...CONFIG_OPTION, description: 'take the port and the excluded mark (cluster.upstream_mark) from this config' },
      { name: 'ipv6', description: 'also write the IPv6 rules (ip6tables, ip -6)' },
      { name: 'exclude-mark', value: 'MARK', description: 'leave connections with this mark alone (default: cluster.upstream_mark of --config)' },
      { name: 'exclude-uid', value: 'USER', description: 'sidecar: leave connections of this user (the one splicegate runs as) alone' },
      { name: 'only-uid', value: 'USER', description: "sidecar: catch only this user's connections" },
      { name: 'dports', value: 'LIST', description: 'only these destination ports, e.g. 80,443,8000-8100 (default: every port of --protocol)' },
      { name: 'interface', value: 'NAME', description: 'gateway: only traffic arriving on NAME; sidecar: only traffic leaving by NAME' },
      { name: 'tproxy-mark', value: 'MARK', description: 'tproxy: mark for intercepted packets (default 0x1)' },
      { name: 'route-table', value: 'N', description: 'tproxy: routing table of the local route (default 100)' },
      { name: 'uninstall', description: 'print: show the uninstall commands' },
    ],
    maxPositionals: 1,
    notes: () =>
      [
        'A sidecar install refuses to run without --exclude-mark (or a config with cluster.upstream_mark) or',
        "--exclude-uid: splicegate's own upstream connects would be redirected back to it.",
        'uninstall takes the same --ipv6 (and for tproxy --mode, --tproxy-mark, --route-table) as install.',
        'Operations guide: docs/OPERATIONS.md.',
        'Exit status: 0 done, 1 a command failed (it is named, with its stderr), 2 usage or config error.',
      ].join('\n'),
    examples: [
      'splicegate iptables install --topology sidecar --port 9000 --dports 80 --only-uid sleeper --exclude-mark 0x100',
      'splicegate iptables install --config /etc/splicegate/splicegate.yaml --interface eth1 --ipv6',
      'splicegate iptables install --mode tproxy --port 15002 --ipv6',
      'splicegate iptables install --mode tproxy --protocol udp --port 15002 --dports 53,443 --interface eth1',
      'splicegate iptables print --topology sidecar --exclude-uid splicegate --port 15001',
      'splicegate iptables uninstall --ipv6',
    ],
    async run({ values, positionals }) {
      // Loaded lazily like the proxy: other commands should not pay for it.
      const { runIptables, IptablesUsageError } = await import('./iptables/command.js');
      try {
        return await runIptables({
          action: positionals[0],
          configPath: stringOption(values, 'config'),
          printUninstall: values['uninstall'] === true,
          flags: {
            mode: stringOption(values, 'mode'),
            protocol: stringOption(values, 'protocol'),
            topology: stringOption(values, 'topology'),
            port: stringOption(values, 'port'),
            ipv6: values['ipv6'] === true,
            excludeMark: stringOption(values, 'exclude-mark'),
            excludeUid: stringOption(values, 'exclude-uid'),
            onlyUid: stringOption(values, 'only-uid'),
            dports: stringOption(values, 'dports'),
            iface: stringOption(values, 'interface'),
            tproxyMark: stringOption(values, 'tproxy-mark'),
            routeTable: stringOption(values, 'route-table'),
          },
        });
      } catch (err) {
        if (err instanceof IptablesUsageError) throw new UsageError(err.message, 'iptables');
        throw err;
      }
    },
  },

  help: {
    summary: 'show help for a command',
    usage: '[COMMAND]',
    description: 'Show the help for COMMAND, or the overview without one.',
    options: [],
    maxPositionals: 1,
    examples: ['splicegate help run'],
    async run({ positionals }) {
      const name = positionals[0];
      if (name === undefined) {
        process.stdout.write(mainHelp());
        return EXIT_OK;
      }
      process.stdout.write(commandHelp(name, lookupCommand(name)));
      return EXIT_OK;
    },
  },
};

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError('missing command');
  if (first === '--help' || first === '-h') {
    process.stdout.write(mainHelp());
    return EXIT_OK;
  }
  if (first === '--version' || first === '-V') {
    process.stdout.write(`splicegate ${packageVersion()}\n`);
    return EXIT_OK;
  }
  if (first.startsWith('-')) throw new UsageError(`unknown option '${first}' (options go after the command)`);

  const command = lookupCommand(first);
  const invocation = parseInvocation(first, command, rest);
  if (invocation.values['help'] === true) {
    process.stdout.write(commandHelp(first, command));
    return EXIT_OK;
  }
  return command.run(invocation);
}

/**
 * Test hook (SPLICEGATE_TEST_HOOKS=1 with SPLICEGATE_TEST_SLOW_START_MS): stands in for a slow
 * host's time between the program's first module and runProxy, so that the start-up signal test
 * can aim a signal at that window.
 */
async function slowStartTestHook(): Promise<void> {
  if (process.env['SPLICEGATE_TEST_HOOKS'] !== '1') return;
  const ms = Number(process.env['SPLICEGATE_TEST_SLOW_START_MS'] ?? 0);
  if (!(ms > 0)) return;
  process.stderr.write(`test hook: start held for ${ms} ms before the proxy loads\n`);
  await new Promise((resolve) => setTimeout(resolve, ms));
}

function lookupCommand(name: string): Command {
  // hasOwn: "constructor" or "__proto__" must be unknown commands, not Object.prototype members.
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (command !== undefined) return command;
  const guess = closestMatch(name, Object.keys(COMMANDS));
  throw new UsageError(`unknown command '${name}'${guess === undefined ? '' : ` (did you mean '${guess}'?)`}`);
}

function parseInvocation(name: string, command: Command, args: string[]): Invocation {
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const def of [...command.options, ...COMMON_OPTIONS]) {
    options[def.name] = { type: def.value === undefined ? 'boolean' : 'string', ...(def.short === undefined ? {} : { short: def.short }) };
  }
  let parsed: { values: OptionValues; positionals: string[] };
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: (command.maxPositionals ?? 0) > 0 });
  } catch (err) {
    // "splicegate validate my.yaml" is the likeliest slip: say how to pass the file instead.
    const takesConfig = command.options.some((def) => def.name === 'config');
    const hint = takesConfig && isPositionalError(err) ? ' (pass the config file as --config FILE)' : '';
    throw new UsageError(`${parseArgsMessage(err)}${hint}`, name);
  }
  const max = command.maxPositionals ?? 0;
  if (parsed.positionals.length > max) {
    throw new UsageError(`unexpected argument '${parsed.positionals[max] ?? ''}'`, name);
  }
  for (const def of command.options) {
    if (def.value !== undefined && parsed.values[def.name] === '') {
      throw new UsageError(`--${def.name} needs a value (${def.value})`, name);
    }
  }
  return parsed;
}

// parseArgs' messages end with advice about "--" and positionals that does not apply to us.
function parseArgsMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\.? To specify a positional argument[\s\S]*$/, '');
}

function isPositionalError(err: unknown): boolean {
  return err instanceof Error && 'code' in err && err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL';
}

/** --latency-log-interval as milliseconds (a duration with a unit, like the config's). */
function latencyLogInterval(values: OptionValues): number | undefined {
  const text = stringOption(values, 'latency-log-interval');
  if (text === undefined) return undefined;
  if (stringOption(values, 'latency-log') === undefined) throw new UsageError('--latency-log-interval needs --latency-log FILE', 'run');
  const parsed = parseDuration(text);
  if (!parsed.ok) throw new UsageError(`--latency-log-interval: ${parsed.message}`, 'run');
  return parsed.value;
}

type ConfigSource = { kind: 'config'; path: string } | { kind: 'envoy'; path: string; lenient: boolean };

/** --config FILE or --envoy FILE (not both); undefined when neither is given. */
function configSource(values: OptionValues, command: string): ConfigSource | undefined {
  const config = stringOption(values, 'config');
  const envoy = stringOption(values, 'envoy');
  const lenient = values['envoy-lenient'] === true;
  if (config !== undefined && envoy !== undefined) throw new UsageError('give --config FILE or --envoy FILE, not both', command);
  if (lenient && envoy === undefined) throw new UsageError('--envoy-lenient needs --envoy FILE', command);
  if (envoy !== undefined) return { kind: 'envoy', path: envoy, lenient };
  return config === undefined ? undefined : { kind: 'config', path: config };
}

/** Load either kind; an Envoy file's warnings (what it dropped) go to stderr, one per line. */
function loadSource(source: ConfigSource): SplicegateConfig {
  if (source.kind === 'config') return loadConfigFile(source.path);
  const converted = loadEnvoyFile(source.path, source.lenient);
  for (const w of converted.warnings) process.stderr.write(`${source.path}: warning: ${w.path}: ${w.message}\n`);
  return converted.config;
}

function stringOption(values: OptionValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

function mainHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 2;
  const commands = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`);
  return [
    'splicegate: transparent original-destination egress proxy for Linux',
    '',
    'Usage: splicegate <command> [options]',
    '',
    'Commands:',
    ...commands,
    '',
    'Options:',
    '  -h, --help     show this help',
    '  -V, --version  print the version',
    '',
    "Run 'splicegate <command> --help' for a command's options.",
    'Config file reference: docs/CONFIG.md',
    '',
  ].join('\n');
}

function commandHelp(name: string, command: Command): string {
  const rows = [...command.options, ...COMMON_OPTIONS].map((def) => {
    const flag = `${def.short === undefined ? '    ' : `-${def.short}, `}--${def.name}${def.value === undefined ? '' : ` ${def.value}`}`;
    return [flag, def.description] as const;
  });
  const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
  const sections = [
    `Usage: splicegate ${name} ${command.usage}`.trimEnd(),
    '',
    command.description,
    '',
    'Options:',
    ...rows.map(([flag, description]) => `  ${flag.padEnd(width)}${description}`),
  ];
  if (command.notes !== undefined) sections.push('', command.notes());
  sections.push('', 'Examples:', ...command.examples.map((e) => `  ${e}`), '');
  return sections.join('\n');
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');
}

/** Print a failure the way its kind deserves and return the exit status. */
function reportFailure(err: unknown, debug: boolean): number {
  if (err instanceof UsageError) {
    const help = err.helpFor === undefined ? 'splicegate --help' : `splicegate ${err.helpFor} --help`;
    process.stderr.write(`splicegate: ${err.message}\nRun '${help}' for usage.\n`);
    return EXIT_USAGE;
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`${formatProblems(err)}\n`);
    return EXIT_USAGE;
  }
  const line = isSystemError(err) ? formatSystemError(err) : err instanceof Error ? err.message : String(err);
  process.stderr.write(`splicegate: ${line}\n`);
  if (debug) {
    process.stderr.write(`${err instanceof Error && err.stack !== undefined ? err.stack : String(err)}\n`);
  } else if (!isSystemError(err)) {
    process.stderr.write('(run with --verbose or SPLICEGATE_DEBUG=1 for the stack trace)\n');
  }
  return EXIT_FAILURE;
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  // Read from the raw argv, not parsed options: the failure being reported may be the parse itself.
  const debug = process.env['SPLICEGATE_DEBUG'] === '1' || argv.includes('--verbose') || argv.includes('-v');
  main(argv)
    .catch((err: unknown) => reportFailure(err, debug))
    .then((code) => {
      // exitCode, not exit(): let pending stdout/stderr writes to a pipe finish.
      process.exitCode = code;
    });
}
