// YAML text -> Document for config files (splicegate's and Envoy's), with the nesting bounded.
//
// yaml's composer, toJS and the schema walk recurse once per nesting level. A small file of
// brackets ("[[[[...", 20,000 of them is 40 KB) overflows the stack inside yaml's composer, and
// after such an overflow V8 aborted the whole process on the next parse ("FATAL ERROR:
// RegExpCompiler Allocation failed"): a second bad reload killed a running proxy. So the text goes
// through yaml's lexer and CST parser (iterative, they keep the nesting in an array) one token at a
// time, and a document nested deeper than MAX_YAML_DEPTH is refused before anything recurses.

import { Composer, isCollection, isSeq, Lexer, Parser, visit, YAMLParseError, type CST, type Document, type LineCounter } from 'yaml';
import { ConfigError, ROOT_PATH, type ConfigProblem } from './problems';

/**
 * Deepest CST nesting accepted (document, collections and their items each count one). The
 * examples need at most 6 (Envoy bootstraps 17); the composer's stack overflowed at a few thousand.
 */
export const MAX_YAML_DEPTH = 100;

/**
 * parseDocument(text, { lineCounter, uniqueKeys: true }); a document nested too deeply, or with a
 * list or mapping as a mapping key, throws a ConfigError naming `source` and the line.
 */
export function parseYamlDocument(text: string, lineCounter: LineCounter, source: string): Document {
  const parser = new Parser(lineCounter.addNewLine);
  let tooDeepAt: number | undefined;
  function* tokens(): Generator<CST.Token, void> {
    lineCounter.addNewLine(0);
    for (const lexeme of new Lexer().lex(text)) {
      yield* parser.next(lexeme);
      if (parser.stack.length > MAX_YAML_DEPTH) {
        tooDeepAt = parser.offset;
        return;
      }
    }
    yield* parser.end();
  }
  const composer = new Composer({ uniqueKeys: true });
  // As parseDocument: the first document, and an error if the stream holds more.
  let doc: Document | undefined;
  for (const next of composer.compose(tokens(), true, text.length)) {
    if (doc === undefined) {
      doc = next;
    } else {
      doc.errors.push(new YAMLParseError([next.range[0], next.range[1]], 'MULTIPLE_DOCS', 'the file holds more than one YAML document (a "---" line starts the next); a config is one document'));
      break;
    }
  }
  if (tooDeepAt !== undefined) {
    const pos = lineCounter.linePos(tooDeepAt);
    const message = `YAML nested more than ${MAX_YAML_DEPTH} levels deep; a config needs far fewer`;
    throw new ConfigError(source, [{ path: ROOT_PATH, message, line: pos.line, column: pos.col }]);
  }
  // compose(..., forceDoc = true) always ends with a document, even for empty text.
  if (doc === undefined) throw new Error('yaml composer produced no document');
  // The loaders report syntax errors themselves (all of them, with positions).
  if (doc.errors.length === 0) {
    refuseCollectionKeys(doc, lineCounter, source);
    refuseSelfReferences(doc, lineCounter, source);
  }
  return doc;
}

/**
 * An alias inside the very node its anchor names (`c: &c [1, *c]`) makes a value that contains
 * itself: toJS builds a cyclic object, and every walk of it (the type check, the schema) would run
 * until memory ran out, killing a running proxy on reload. (An alias can only name an anchor
 * defined before it, so containing itself is the only way to a cycle.) Refused here, with the
 * alias's position, before anything converts the document.
 */
function refuseSelfReferences(doc: Document, lineCounter: LineCounter, source: string): void {
  const problems: ConfigProblem[] = [];
  visit(doc, {
    Alias(_, alias) {
      const targetRange = alias.resolve(doc)?.range;
      const at = alias.range?.[0];
      if (!targetRange || at === undefined) return undefined;
      const [start, , end] = targetRange;
      if (at < start || at >= end) return undefined;
      const pos = lineCounter.linePos(at);
      problems.push({
        path: ROOT_PATH,
        message: `the alias *${alias.source} stands inside the value its anchor &${alias.source} names, so that value would contain itself; a config cannot`,
        line: pos.line,
        column: pos.col,
      });
      return undefined;
    },
  });
  if (problems.length > 0) throw new ConfigError(source, problems);
}

/**
 * A mapping key that is itself a list or a mapping (`? [a, b]`, `{[1]: x}`) has no meaning in a
 * config, and toJS would turn it into its text with a Node warning on stderr; refused here, with
 * its position, before anything converts the document.
 */
function refuseCollectionKeys(doc: Document, lineCounter: LineCounter, source: string): void {
  const problems: ConfigProblem[] = [];
  visit(doc, {
    Pair(_, pair) {
      if (!isCollection(pair.key)) return undefined;
      const pos = lineCounter.linePos(pair.key.range?.[0] ?? 0);
      const kind = isSeq(pair.key) ? 'a list' : 'a mapping';
      problems.push({ path: ROOT_PATH, message: `a mapping key must be a plain value, not ${kind}`, line: pos.line, column: pos.col });
      return visit.SKIP;
    },
  });
  if (problems.length > 0) throw new ConfigError(source, problems);
}
