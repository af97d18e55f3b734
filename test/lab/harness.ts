// Glue for integration tests: attach lab + splicegate diagnostics to any failure, tear a describe
// block's proxy and lab down, and count a fixture server's connections.

import { Lab } from './lab';
import { LabProcess } from './process';
import { Splicegate, StatName, Stats } from './splicegate';

/** Run `fn`; on failure append splicegate stats/output and fixture output to the error message. */
export async function withDiagnostics<T>(lab: Lab, sg: Splicegate | null | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    let diag = '';
    try {
      diag = sg ? await sg.fullDiagnostics() : '(splicegate not started)';
    } catch (d) {
      diag = `(diagnostics failed: ${String(d)})`;
    }
    const fixtures = lab.diagnostics(1500);
    const text = `\n===== diagnostics =====\n${diag}\n----- fixtures -----\n${fixtures}`;
    if (e instanceof Error) {
      e.message += text;
      throw e;
    }
    throw new Error(`${String(e)}${text}`);
  }
}

/** The proxy a describe block started; throws when its before() failed before starting it. */
export function started(sg: Splicegate | undefined): Splicegate {
  if (!sg) throw new Error('no splicegate');
  return sg;
}

/** A describe block's after(): the proxy first, then its lab; either is missing when before() failed early. */
export async function disposeLab(sg: Splicegate | undefined, lab: Lab | undefined): Promise<void> {
  await sg?.dispose();
  await lab?.destroy();
}

/** Differences of counters between two stats snapshots. */
export function delta(after: Stats, before: Stats, name: StatName): number {
  return after[name] - before[name];
}

/** Connection events ("event":"conn") a fixture server reported. */
export function connEvents(proc: LabProcess): Array<{ local: string; remote: string; id: string }> {
  return proc
    .eventsNamed('conn')
    .map((e) => ({ local: String(e['local']), remote: String(e['remote']), id: String(e['id']) }));
}

/** "10.10.2.1:40000" -> "10.10.2.1", "[fd00:2::1]:40000" -> "[fd00:2::1]" */
export function ipOf(addr: string): string {
  return addr.replace(/:\d+$/, '');
}
