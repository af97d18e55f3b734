// Config errors carry every problem found, not just the first: fixing a proxy config one
// error per restart is slow and annoying, so parsing always collects all of them.

export interface ConfigProblem {
  /** Where in the file: "listeners[0].address", "cluster.connect_timeout", or "(root)". */
  path: string;
  message: string;
  /** 1-based position in the source text, when the problem can be tied to one. */
  line?: number;
  column?: number;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** File path (or another label such as "(built-in default)") the problems refer to. */
  readonly source: string;
  readonly problems: ConfigProblem[];
  /** The errno code when the file could not be read (ENOENT, EACCES, EMFILE, ...). */
  readonly readErrno: string | undefined;

  constructor(source: string, problems: ConfigProblem[], readErrno?: string) {
    // The message is the full report so that even an uncaught ConfigError is readable.
    super(problems.map((p) => formatProblem(source, p)).join('\n'));
    this.source = source;
    this.problems = problems;
    this.readErrno = readErrno;
  }
}

export const ROOT_PATH = '(root)';

/** ["listeners", 0, "address"] -> "listeners[0].address"; [] -> "(root)". */
export function formatPath(segments: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out === '' ? ROOT_PATH : out;
}

/** One line per problem: "<source>: <path>: <message>", plus "(line L, column C)" when known. */
export function formatProblems(err: ConfigError): string {
  return err.problems.map((p) => formatProblem(err.source, p)).join('\n');
}

function formatProblem(source: string, problem: ConfigProblem): string {
  const where = problem.line === undefined ? '' : ` (line ${problem.line}, column ${problem.column ?? 1})`;
  return `${source}: ${problem.path}: ${problem.message}${where}`;
}
