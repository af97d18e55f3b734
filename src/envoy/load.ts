// `--envoy FILE`: read an Envoy bootstrap, convert it (convert.ts), and validate the result with
// splicegate's own schema, so `run --envoy` starts exactly what `convert --envoy` prints.

import { isNode, LineCounter, stringify, type Document } from 'yaml';
import { ConfigError, readConfigFileText, type ConfigProblem } from '../config/load';
import { formatPath } from '../config/problems';
import { validateConfigValue } from '../config/schema';
import type { SplicegateConfig } from '../config/types';
import { parseYamlDocument } from '../config/yaml-document';
import { findYamlTypedValues, yamlTypedMessage } from '../config/yaml-types';
import { convertEnvoyBootstrap } from './convert';
import { oneLine, type EnvoyFinding, type Segment } from './findings';

export interface EnvoyLoad {
  config: SplicegateConfig;
  /** The converted config as splicegate YAML, with what was not carried over in its header. */
  yaml: string;
  /** What was dropped (warnings, and with --envoy-lenient the skipped errors), Envoy paths. */
  warnings: EnvoyFinding[];
}

/** Convert Envoy YAML text; a ConfigError (never a stack trace) lists every problem with its Envoy path. */
export function convertEnvoyText(text: string, source: string, lenient: boolean): EnvoyLoad {
  const lineCounter = new LineCounter();
  const doc = parseYamlDocument(text, lineCounter, source);
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return { path: '(root)', message: `YAML syntax error: ${e.message.split('\n')[0] ?? e.message}`, line: pos.line, column: pos.col };
      }),
    );
  }
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    throw new ConfigError(source, [{ path: '(root)', message: `YAML error: ${err instanceof Error ? err.message : String(err)}` }]);
  }
  // Refused before converting: the converter, like the schema, would read a !!omap as a mapping
  // with nothing in it (config/yaml-types.ts).
  const typed = findYamlTypedValues(value);
  if (typed.length > 0) {
    throw new ConfigError(
      source,
      typed.map((t) => ({ path: formatPath(t.segments), message: yamlTypedMessage(t.shown), ...locate(doc, lineCounter, t.segments) })),
    );
  }
  const { config, findings } = convertEnvoyBootstrap(value, lenient);
  const located = (f: EnvoyFinding & { segments: Segment[] }): ConfigProblem => ({ path: f.path, message: f.message, ...locate(doc, lineCounter, f.segments) });
  const errors = findings.items.filter((f) => f.severity === 'error');
  if (errors.length > 0 || config === undefined) {
    const hint = lenient ? [] : [{ path: '(root)', message: 'not converted: the problems above change routing or security; --envoy-lenient skips them (as warnings)' }];
    throw new ConfigError(source, [...errors.map(located), ...(errors.some((e) => e.fatal !== true) ? hint : [])]);
  }
  const warnings = findings.items.filter((f) => f.severity === 'warning');
  const result = validateConfigValue(config);
  if (!result.ok) {
    // The mapping produced something splicegate refuses (two listeners on one port, a port
    // override equal to a listener's port): name the converted config's paths.
    throw new ConfigError(`${source} (converted)`, result.problems.map((p) => ({ path: formatPath(p.segments), message: p.message })));
  }
  const header = [
    `# Converted from the Envoy bootstrap ${oneLine(source)} by splicegate convert --envoy.`,
    ...(warnings.length === 0 ? [] : ['# Converter notes (dropped, or mapped with a difference):', ...warnings.map((w) => `#   ${w.path}: ${w.message}`)]),
  ].join('\n');
  return { config: result.config, yaml: `${header}\n${stringify(config, { lineWidth: 0 })}`, warnings: warnings.map(({ path, message, severity }) => ({ path, message, severity })) };
}

export function loadEnvoyFile(path: string, lenient: boolean): EnvoyLoad {
  return convertEnvoyText(readConfigFileText(path), path, lenient);
}

function locate(doc: Document, lineCounter: LineCounter, segments: readonly Segment[]): { line?: number; column?: number } {
  if (segments.length === 0) return {};
  // The deepest node that exists: a missing key is reported where its parent is.
  for (let n = segments.length; n > 0; n -= 1) {
    const node: unknown = doc.getIn(segments.slice(0, n), true);
    if (isNode(node) && node.range != null) {
      const pos = lineCounter.linePos(node.range[0]);
      return { line: pos.line, column: pos.col };
    }
  }
  return {};
}
