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

export function formatEnvoyPath(segments: readonly Segment[]): string {
  let out = '';
  for (const s of segments) out += typeof s === 'number' ? `[${s}]` : out === '' ? s : `.${s}`;
  return out === '' ? '(root)' : out;
}

export class Findings {
  readonly items: Array<EnvoyFinding & { segments: Segment[] }> = [];

  constructor(private readonly lenient: boolean) {}

  /** Dropped, harmless: listed so nothing disappears silently. */
  warn(segments: readonly Segment[], message: string): void {
    this.items.push({ segments: [...segments], path: formatEnvoyPath(segments), message, severity: 'warning' });
  }

  /** Dropped, and it would change routing or security: refused unless lenient. */
  error(segments: readonly Segment[], message: string): void {
    const severity = this.lenient ? 'warning' : 'error';
    const text = this.lenient ? `${message} (skipped: --envoy-lenient)` : message;
    this.items.push({ segments: [...segments], path: formatEnvoyPath(segments), message: text, severity });
  }

  /** Always an error, lenient or not: there is nothing left to run. */
  fatal(segments: readonly Segment[], message: string): void {
    this.items.push({ segments: [...segments], path: formatEnvoyPath(segments), message, severity: 'error', fatal: true });
  }

  get errors(): EnvoyFinding[] {
    return this.items.filter((f) => f.severity === 'error');
  }

  get warnings(): EnvoyFinding[] {
    return this.items.filter((f) => f.severity === 'warning');
  }
}
