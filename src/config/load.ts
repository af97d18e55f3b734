// Reading a config: file -> YAML document -> schema validation -> SplicegateConfig. Every failure
// is a ConfigError listing all problems, each tied to a path and, where possible, a line.

import { closeSync, constants as fsConstants, fstatSync, openSync, readSync } from 'node:fs';
import { isMap, isNode, isScalar, LineCounter, type Document } from 'yaml';
import { ConfigError, formatPath, ROOT_PATH, type ConfigProblem } from './problems';
import { validateConfigValue } from './schema';
import { describeErrno } from './syserr';
import type { SplicegateConfig } from './types';
import { parseYamlDocument } from './yaml-document';

export { ConfigError, formatProblems, type ConfigProblem } from './problems';

/** Parse and validate config text; `source` names it in messages (usually the file path). */
export function parseConfigText(text: string, source: string): SplicegateConfig {
  const lineCounter = new LineCounter();
  // A key given twice is an error, not "last one wins" (uniqueKeys); positions are formatted
  // here, one line per problem. A document nested too deeply is refused before it is composed.
  const doc = parseYamlDocument(text, lineCounter, source);

  const yamlProblems: ConfigProblem[] = [...doc.errors, ...doc.warnings].map((e) => {
    const pos = lineCounter.linePos(e.pos[0]);
    return { path: ROOT_PATH, message: `YAML ${e.name === 'YAMLWarning' ? 'warning' : 'syntax error'}: ${firstLine(e.message)}`, line: pos.line, column: pos.col };
  });
  // After a syntax error the document is unreliable; schema complaints about it would be noise.
  if (doc.errors.length > 0) throw new ConfigError(source, yamlProblems);

  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    // e.g. the alias-expansion limit that guards against "billion laughs" documents.
    throw new ConfigError(source, [...yamlProblems, { path: ROOT_PATH, message: `YAML error: ${err instanceof Error ? err.message : String(err)}` }]);
  }
  if (value === null || value === undefined) {
    throw new ConfigError(source, [...yamlProblems, { path: ROOT_PATH, message: 'the config is empty: at least "listeners" is required' }]);
  }
  const result = validateConfigValue(value);
  if (result.ok && yamlProblems.length === 0) return result.config;
  const schemaProblems: ConfigProblem[] = result.ok
    ? []
    : result.problems.map((p) => ({ path: formatPath(p.segments), message: p.message, ...locate(doc, lineCounter, p.segments, p.atKey === true) }));
  throw new ConfigError(source, [...yamlProblems, ...schemaProblems, ...envoyHint(value)]);
}

/** An Envoy bootstrap given where a splicegate config was expected: say which flag reads it. */
function envoyHint(value: unknown): ConfigProblem[] {
  const isEnvoy = typeof value === 'object' && value !== null && !Array.isArray(value) && 'static_resources' in value;
  return isEnvoy ? [{ path: ROOT_PATH, message: 'this looks like an Envoy bootstrap (static_resources): pass it with --envoy FILE instead of --config' }] : [];
}

/**
 * Config files are a few KiB; parsing costs about 40x the file size in memory, so anything over
 * this is refused before it is read whole (a 10 MB file took 400 MB).
 */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/** Read and parse a config file. Synchronous: it runs once, at startup, before anything else. */
export function loadConfigFile(path: string): SplicegateConfig {
  return parseConfigText(readConfigFileText(path), path);
}

/** A config file's text, within MAX_CONFIG_BYTES; any failure is a ConfigError naming the file. */
export function readConfigFileText(path: string): string {
  try {
    return readBounded(path, MAX_CONFIG_BYTES);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = errnoCode(err);
    const reason = code === undefined ? String(err) : describeErrno(code);
    throw new ConfigError(path, [{ path: ROOT_PATH, message: `cannot read config file: ${reason}` }], code);
  }
}

const tooLarge = (path: string, size: string): ConfigError =>
  new ConfigError(path, [{ path: ROOT_PATH, message: `config file is ${size}; the limit is ${MAX_CONFIG_BYTES} bytes (1 MiB)` }]);

/**
 * The file's text, refusing it by its size before reading; reads at most max + 1 bytes, so a file
 * whose stat size says nothing (a pipe, /proc) or that grows meanwhile is refused the same way.
 */
function readBounded(path: string, max: number): string {
  // O_NONBLOCK: opening a FIFO for reading waits for a writer, and reading it for data; on a reload
  // that froze the main thread (admin, signals, drain) until someone wrote to it. Such files are
  // refused instead; for regular files and devices the flag changes nothing.
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (st.isFIFO() || st.isSocket()) {
      throw new ConfigError(path, [{ path: ROOT_PATH, message: `cannot read config file: it is a ${st.isFIFO() ? 'FIFO' : 'socket'}; expected a regular file` }]);
    }
    const size = st.size;
    if (size > max) throw tooLarge(path, `${size} bytes`);
    const buffer = Buffer.alloc(max + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > max) throw tooLarge(path, `over ${max} bytes`);
    }
    return buffer.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

/**
 * Line/column of the YAML node at `segments`, if the file has one there (a missing key has none).
 * Points at the value, or with `atKey` at the key itself (for "unknown key" the key is the culprit).
 */
function locate(doc: Document, lineCounter: LineCounter, segments: readonly PropertyKey[], atKey: boolean): { line?: number; column?: number } {
  if (segments.length === 0) return {};
  let node: unknown = doc.getIn(segments, true);
  if (atKey) {
    const parent: unknown = doc.getIn(segments.slice(0, -1), true);
    const last = segments[segments.length - 1];
    node = isMap(parent) ? parent.items.find((pair) => isScalar(pair.key) && pair.key.value === last)?.key : undefined;
  }
  if (!isNode(node) || node.range == null) return {};
  const pos = lineCounter.linePos(node.range[0]);
  return { line: pos.line, column: pos.col };
}

function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

function firstLine(message: string): string {
  return message.split('\n')[0] ?? message;
}
