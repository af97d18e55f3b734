// What the converter could not carry over, each tied to its path in the Envoy file. A warning is
// something dropped without changing where traffic goes or who may send it (stat prefixes, access
// logs); an error is something whose loss would (RBAC, TLS, other filters, other cluster types).
// --envoy-lenient turns errors into warnings, for a user who has read them.

export interface EnvoyFinding {
  /** Nothing runnable is left (not a bootstrap, no listener): --envoy-lenient cannot help. */
  fatal?: boolean;
  /** Path in the Envoy file: "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix". */
  path: string;
  message: string;
  severity: 'warning' | 'error';
}

export type Segment = string | number;

/** Keys printed bare in a path; any other key (a newline, a quote, a space) is printed quoted. */
const PLAIN_KEY = /^[A-Za-z0-9_@.-]+$/;

// Findings are printed one per line on stderr and as comment lines in `convert`'s YAML header: a
// key or value from the file must not be able to start a line of its own there (a key holding
// "\nadmin:\n  address: 0.0.0.0:9901 #" would otherwise add that setting to the printed config).
export function formatEnvoyPath(segments: readonly Segment[]): string {
  let out = '';
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (!PLAIN_KEY.test(s)) out += `[${oneLine(JSON.stringify(s))}]`;
    else out += out === '' ? s : `.${s}`;
  }
  return out === '' ? '(root)' : out;
}

/** A message as one line: control characters and the Unicode line separators become \u escapes. */
export function oneLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f\u0085\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export class Findings {
  readonly items: Array<EnvoyFinding & { segments: Segment[] }> = [];

  constructor(private readonly lenient: boolean) {}

  /** Dropped, harmless: listed so nothing disappears silently. */
  warn(segments: readonly Segment[], message: string): void {
    this.items.push({ segments: [...segments], path: formatEnvoyPath(segments), message: oneLine(message), severity: 'warning' });
  }

  /** Dropped, and it would change routing or security: refused unless lenient. */
  error(segments: readonly Segment[], message: string): void {
    const severity = this.lenient ? 'warning' : 'error';
    const text = oneLine(this.lenient ? `${message} (skipped: --envoy-lenient)` : message);
    this.items.push({ segments: [...segments], path: formatEnvoyPath(segments), message: text, severity });
  }

  /** Always an error, lenient or not: there is nothing left to run. */
  fatal(segments: readonly Segment[], message: string): void {
    this.items.push({ segments: [...segments], path: formatEnvoyPath(segments), message: oneLine(message), severity: 'error', fatal: true });
  }

  get errors(): EnvoyFinding[] {
    return this.items.filter((f) => f.severity === 'error');
  }

  get warnings(): EnvoyFinding[] {
    return this.items.filter((f) => f.severity === 'warning');
  }
}
